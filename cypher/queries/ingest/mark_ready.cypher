// The last batch has committed: make the model visible to analysis.
//
// mode: write
// param model: str       the model's name
// param n_neurons: int   neurons written
// param n_edges: int     edges written
// returns: status: str
MATCH (m:Model {name: $model})
SET m.status = 'ready', m.n_neurons = $n_neurons, m.n_edges = $n_edges, m.n_layers = COUNT { (m)-[:HAS_LAYER]->() },
    m.ready_at = datetime()
RETURN m.status AS status
