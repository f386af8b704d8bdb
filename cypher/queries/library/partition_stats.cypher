// One partition's settings and statistics as stored by `neuronmap cluster`, with the number of clusters it
// holds. edges is the graph it was cut from ('weight', or an activation graph's name) and min_weight the |w| below
// which weight edges were left out; p_value is the one-sided permutation p-value of the n-cut against its null
// (stored as `percentile` before it had that name). No row: there is no such partition.
//
// mode: read
// param partition: str   the partition's id
// returns: id: str, model: str, k: int, n_clusters: int, method: str, edges: str, layers: str, min_weight: float, seed: int, ncut: float, null_method: str, n_null: int, null_mean: float, null_sd: float, z: float, p_value: float, null_ncuts: list[float], n_neurons: int, n_isolated: int, solver: str, device: str, eigen_residual: float, pull_seconds: float, cluster_seconds: float, null_seconds: float, created_at: str
MATCH (p:Partition {id: $partition})
RETURN p.id AS id, p.model AS model, p.k AS k, COUNT { (p)-[:HAS_CLUSTER]->() } AS n_clusters, p.method AS method,
       coalesce(p.edges, 'weight') AS edges, p.layers AS layers, coalesce(p.min_weight, 0.0) AS min_weight,
       p.seed AS seed, p.ncut AS ncut, p.null_method AS null_method, p.n_null AS n_null, p.null_mean AS null_mean,
       p.null_sd AS null_sd, p.z AS z, coalesce(p.p_value, p.percentile) AS p_value, p.null_ncuts AS null_ncuts,
       p.n_neurons AS n_neurons, p.n_isolated AS n_isolated, p.solver AS solver, p.device AS device,
       p.eigen_residual AS eigen_residual, p.pull_seconds AS pull_seconds, p.cluster_seconds AS cluster_seconds,
       p.null_seconds AS null_seconds, toString(p.created_at) AS created_at
