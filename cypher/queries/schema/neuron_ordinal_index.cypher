// Neurons by (model, ordinal): pulls read a model in ordinal ranges through this index.
//
// mode: write
// returns: nothing
CREATE INDEX neuron_ordinal IF NOT EXISTS FOR (n:Neuron) ON (n.model, n.ordinal)
