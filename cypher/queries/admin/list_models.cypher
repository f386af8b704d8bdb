// Every model in the store: status, size and where it came from.
//
// mode: read
// returns: name: str, status: str, n_layers: int, n_neurons: int, n_edges: int, arch: str, source: str, created_at: str
MATCH (m:Model)
RETURN m.name AS name, m.status AS status, COUNT { (m)-[:HAS_LAYER]->() } AS n_layers,
       m.n_neurons AS n_neurons, m.n_edges AS n_edges, m.arch AS arch, m.source AS source,
       toString(m.created_at) AS created_at
ORDER BY name
