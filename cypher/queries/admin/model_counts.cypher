// What the store really holds for one model, counted from the graph (not the Model node's bookkeeping).
//
// mode: read
// param model: str   the model's name
// returns: n_layers: int, n_neurons: int, n_edges: int
OPTIONAL MATCH (l:Layer {model: $model})
WHERE l.index >= 0  // the key index, not a scan of every model's layers
WITH count(l) AS n_layers
OPTIONAL MATCH (n:Neuron {model: $model})
WHERE n.ordinal >= 0  // the (model, ordinal) index
WITH n_layers, count(n) AS n_neurons, sum(COUNT { (n)-[:WEIGHT]->() }) AS n_edges
RETURN n_layers, n_neurons, n_edges
