// Record one assessment run of a partition (importance, coherence_features, coherence_examples or
// importance_pairs) with its settings and network-level statistics: (:Partition)-[:HAS_ASSESSMENT]->(:Assessment).
//
// mode: write
// param partition: str   the partition's id
// param id: str          the assessment's id
// param method: str      importance, importance_pairs, coherence_features or coherence_examples
// param props: map       settings (dataset, n_null, seed, …) and network statistics (fisher_p, chi2_p, …)
// returns: id: str
MATCH (p:Partition {id: $partition})
CREATE (p)-[:HAS_ASSESSMENT]->(a:Assessment {id: $id, partition: $partition, model: p.model, method: $method,
                                             created_at: datetime()})
SET a += $props
RETURN a.id AS id
