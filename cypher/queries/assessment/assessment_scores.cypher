// The per-sub-cluster statistics of one assessment, by layer then cluster.
//
// mode: read
// param assessment: str   the assessment's id
// returns: cluster: int, layer: int, layer_name: str, size: int, stats: map
MATCH (:Assessment {id: $assessment})-[r:SCORED]->(s:SubCluster)
RETURN s.cluster AS cluster, s.layer AS layer, s.layer_name AS layer_name, s.size AS size, properties(r) AS stats
ORDER BY layer, cluster
