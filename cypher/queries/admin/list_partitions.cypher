// Every partition stored for one model, newest first, with the graph it was cut from (edges: 'weight' or an
// activation graph's name), its n-cut and null statistics. p_value is the one-sided permutation p-value of the
// n-cut against its shuffles; partitions stored before it had that name keep it as `percentile`, read here too.
//
// mode: read
// param model: str   the model's name
// returns: id: str, k: int, edges: str, layers: str, seed: int, ncut: float, n_null: int, null_mean: float, z: float, p_value: float, created_at: str
MATCH (:Model {name: $model})-[:HAS_PARTITION]->(p:Partition)
RETURN p.id AS id, p.k AS k, coalesce(p.edges, 'weight') AS edges, p.layers AS layers, p.seed AS seed,
       p.ncut AS ncut, p.n_null AS n_null, p.null_mean AS null_mean, p.z AS z,
       coalesce(p.p_value, p.percentile) AS p_value, toString(p.created_at) AS created_at
ORDER BY p.created_at DESC, id
