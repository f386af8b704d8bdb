// The per-pair statistics of one double-lesion assessment (importance_pairs), by the pair's layers and clusters.
//
// mode: read
// param assessment: str   the assessment's id
// returns: cluster_a: int, layer_a: int, cluster_b: int, layer_b: int, stats: map
MATCH (a:Assessment {id: $assessment})<-[:HAS_ASSESSMENT]-(:Partition)-[:HAS_CLUSTER]->(:Cluster)
      -[:HAS_SUBCLUSTER]->(x:SubCluster)-[r:INTERACTS]->(y:SubCluster)
WHERE r.assessment = $assessment
RETURN x.cluster AS cluster_a, x.layer AS layer_a, y.cluster AS cluster_b, y.layer AS layer_b, properties(r) AS stats
ORDER BY layer_a, cluster_a, layer_b, cluster_b
