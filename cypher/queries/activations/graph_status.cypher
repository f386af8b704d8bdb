// The status of one activation graph ('loading', 'ready' or 'failed'), or no row if the model has no such graph.
//
// mode: read
// param model: str   the model's name
// param name: str    the activation graph's name
// returns: status: str
MATCH (g:ActivationGraph {model: $model, name: $name})
RETURN g.status AS status
