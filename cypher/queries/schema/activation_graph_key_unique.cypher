// One activation graph per (model, name); also the index behind every activation-graph lookup.
//
// mode: write
// returns: nothing
CREATE CONSTRAINT activation_graph_key_unique IF NOT EXISTS
FOR (g:ActivationGraph) REQUIRE (g.model, g.name) IS UNIQUE
