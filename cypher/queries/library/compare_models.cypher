// Models side by side: size, and the clusterability of their newest partition of one graph (edges: 'weight', or
// an activation graph's name), or of every partition; one row per model and partition, in the order the models
// are given. A model without such a partition gets one row with empty partition columns. n_neurons and n_edges
// are what the model's ingest recorded; p_value is the n-cut's one-sided permutation p-value against its null.
//
// mode: read
// param models: list                  the models' names
// param edges: str = weight           the graph whose newest partition is shown: weight, or an activation graph's name
// param all_partitions: bool = false  every partition of each model (of any graph), newest first, instead
// returns: model: str, status: str, n_neurons: int, n_edges: int, partition: str, k: int, graph: str, layers: str, ncut: float, null_mean: float, null_sd: float, z: float, p_value: float, n_null: int, created_at: str
UNWIND range(0, size($models) - 1) AS position
MATCH (m:Model {name: $models[position]})
OPTIONAL MATCH (m)-[:HAS_PARTITION]->(p:Partition)
WHERE $all_partitions OR coalesce(p.edges, 'weight') = $edges
WITH position, m, p ORDER BY p.created_at DESC, p.id
WITH position, m, collect(p) AS partitions
UNWIND CASE WHEN size(partitions) = 0 THEN [null]
            WHEN $all_partitions THEN partitions
            ELSE partitions[0..1] END AS p
RETURN m.name AS model, m.status AS status, m.n_neurons AS n_neurons, m.n_edges AS n_edges, p.id AS partition,
       p.k AS k, CASE WHEN p IS NOT NULL THEN coalesce(p.edges, 'weight') END AS graph, p.layers AS layers,
       p.ncut AS ncut, p.null_mean AS null_mean, p.null_sd AS null_sd, p.z AS z,
       coalesce(p.p_value, p.percentile) AS p_value, p.n_null AS n_null, toString(p.created_at) AS created_at
ORDER BY position, p.created_at DESC, partition
