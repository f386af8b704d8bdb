// Every activation graph of one model, by name, with how it was computed and its size.
//
// mode: read
// param model: str   the model's name
// returns: name: str, status: str, data: str, method: str, reduction: str, n_inputs: int, min_r2: float, top_k: int, n_units: int, n_edges: int, n_excluded: int, created_at: str
MATCH (:Model {name: $model})-[:HAS_ACTIVATION_GRAPH]->(g:ActivationGraph)
RETURN g.name AS name, g.status AS status, g.data AS data, g.method AS method, g.reduction AS reduction,
       g.n_inputs AS n_inputs, g.min_r2 AS min_r2, g.top_k AS top_k, g.n_units AS n_units, g.n_edges AS n_edges,
       g.n_excluded AS n_excluded, toString(g.created_at) AS created_at
ORDER BY name
