// Every partition stored for one model, newest first, with its n-cut and null statistics.
//
// mode: read
// param model: str   the model's name
// returns: id: str, k: int, edges: str, layers: str, seed: int, ncut: float, n_null: int, null_mean: float, z: float, percentile: float, created_at: str
MATCH (:Model {name: $model})-[:HAS_PARTITION]->(p:Partition)
RETURN p.id AS id, p.k AS k, p.edges AS edges, p.layers AS layers, p.seed AS seed, p.ncut AS ncut,
       p.n_null AS n_null, p.null_mean AS null_mean, p.z AS z, p.percentile AS percentile,
       toString(p.created_at) AS created_at
ORDER BY p.created_at DESC
