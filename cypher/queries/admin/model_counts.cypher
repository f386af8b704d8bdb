// What the store really holds for one model, counted from the graph (not the Model node's bookkeeping): its
// WEIGHT relationships, and the edges in its packed EDGE_BLOCK chunks.
//
// mode: read
// param model: str   the model's name
// returns: n_layers: int, n_neurons: int, n_edges: int, n_block_edges: int
OPTIONAL MATCH (l:Layer {model: $model})
WHERE l.index >= 0  // the key index, not a scan of every model's layers
OPTIONAL MATCH (l)-[e:EDGE_BLOCK]->()
WITH count(DISTINCT l) AS n_layers, coalesce(sum(e.n), 0) AS n_block_edges
OPTIONAL MATCH (n:Neuron {model: $model})
WHERE n.ordinal >= 0  // the (model, ordinal) index
WITH n_layers, n_block_edges, count(n) AS n_neurons, sum(COUNT { (n)-[:WEIGHT]->() }) AS n_edges
RETURN n_layers, n_neurons, n_edges, n_block_edges
