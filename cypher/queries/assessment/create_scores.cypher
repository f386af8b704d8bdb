// Attach an assessment's statistics of each sub-cluster: (:Assessment)-[:SCORED {p_value, …}]->(:SubCluster).
//
// mode: write
// param assessment: str   the assessment's id
// param partition: str    the partition's id
// param rows: list        maps: cluster, layer (layer index), stats (a flat map of the sub-cluster's statistics)
// returns: scores: int
MATCH (a:Assessment {id: $assessment})
UNWIND $rows AS row
MATCH (s:SubCluster {partition: $partition, cluster: row.cluster, layer: row.layer})
CREATE (a)-[r:SCORED]->(s)
SET r += row.stats
RETURN count(r) AS scores
