// Everything stored about one activation graph: how it was computed, its recorded layers and excluded neurons.
//
// mode: read
// param model: str   the model's name
// param name: str    the activation graph's name
// returns: name: str, status: str, data: str, method: str, reduction: str, point: str, n_inputs: int, min_r2: float, top_k: int, n_units: int, n_edges: int, n_excluded: int, layers: list[int], excluded: list[int], created_at: str
MATCH (g:ActivationGraph {model: $model, name: $name})
RETURN g.name AS name, g.status AS status, g.data AS data, g.method AS method, g.reduction AS reduction,
       g.point AS point, g.n_inputs AS n_inputs, g.min_r2 AS min_r2, g.top_k AS top_k, g.n_units AS n_units,
       g.n_edges AS n_edges, g.n_excluded AS n_excluded, g.layers AS layers, g.excluded AS excluded,
       toString(g.created_at) AS created_at
