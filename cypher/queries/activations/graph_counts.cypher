// What the store really holds for one activation graph, counted from the edges (not the node's bookkeeping).
//
// mode: read
// param model: str   the model's name
// param graph: str   the activation graph's name
// returns: n_edges: int
MATCH (a:Neuron {model: $model})-[e:CORRELATION {graph: $graph}]->()
RETURN count(e) AS n_edges
