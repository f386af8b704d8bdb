// The last batch of an activation graph has committed: make it visible to analysis.
//
// mode: write
// param model: str     the model's name
// param name: str      the activation graph's name
// param n_edges: int   edges written
// returns: status: str
MATCH (g:ActivationGraph {model: $model, name: $name})
SET g.status = 'ready', g.n_edges = $n_edges, g.ready_at = datetime()
RETURN g.status AS status
