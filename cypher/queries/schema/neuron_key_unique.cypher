// One neuron per (model, layer, unit index); its backing index serves every per-layer neuron lookup.
//
// mode: write
// returns: nothing
CREATE CONSTRAINT neuron_key_unique IF NOT EXISTS FOR (n:Neuron) REQUIRE (n.model, n.layer, n.index) IS UNIQUE
