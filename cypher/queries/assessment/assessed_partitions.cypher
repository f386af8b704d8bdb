// The partitions of one model that have an assessment of any of the given methods, newest partition first, with
// the graph each was cut from (edges: 'weight' or an activation graph's name) and the methods it was assessed by.
//
// mode: read
// param model: str      the model's name
// param methods: list   assessment methods: importance, importance_pairs, coherence_features, coherence_examples
// returns: partition: str, edges: str, created_at: str, methods: list[str], n_assessments: int
MATCH (:Model {name: $model})-[:HAS_PARTITION]->(p:Partition)-[:HAS_ASSESSMENT]->(a:Assessment)
WHERE a.method IN $methods
WITH p, collect(DISTINCT a.method) AS methods, count(a) AS n_assessments
RETURN p.id AS partition, coalesce(p.edges, 'weight') AS edges, toString(p.created_at) AS created_at, methods,
       n_assessments
ORDER BY p.created_at DESC, partition
