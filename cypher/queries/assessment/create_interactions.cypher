// Attach a double-lesion assessment's statistics of each pair of sub-clusters:
// (:SubCluster)-[:INTERACTS {assessment, interaction, p_less, …}]->(:SubCluster), first → second of the pair.
//
// mode: write
// param assessment: str   the assessment's id
// param partition: str    the partition's id
// param rows: list        maps: cluster_a, layer_a, cluster_b, layer_b, stats (a flat map of the pair's statistics)
// returns: pairs: int
UNWIND $rows AS row
MATCH (a:SubCluster {partition: $partition, cluster: row.cluster_a, layer: row.layer_a})
MATCH (b:SubCluster {partition: $partition, cluster: row.cluster_b, layer: row.layer_b})
CREATE (a)-[r:INTERACTS {assessment: $assessment}]->(b)
SET r += row.stats
RETURN count(r) AS pairs
