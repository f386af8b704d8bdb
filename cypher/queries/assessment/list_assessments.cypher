// The assessments of one partition, newest first: method, data set, null size, seed and every stored setting and
// network-level statistic (summary).
//
// mode: read
// param partition: str   the partition's id
// returns: id: str, method: str, dataset: str, n_null: int, seed: int, created_at: str, summary: map
MATCH (:Partition {id: $partition})-[:HAS_ASSESSMENT]->(a:Assessment)
RETURN a.id AS id, a.method AS method, a.dataset AS dataset, a.n_null AS n_null, a.seed AS seed,
       toString(a.created_at) AS created_at, properties(a) AS summary
ORDER BY a.created_at DESC, id
