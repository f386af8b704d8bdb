// The contingency table of two partitions of one model: how many neurons lie in cluster_a of partition_a and in
// cluster_b of partition_b, one row per non-empty cell. A neuron in only one of the two partitions is counted
// against cluster -1 of the other. (service/compare.py adds the adjusted Rand index and NMI.)
//
// mode: read
// param partition_a: str   the first partition's id
// param partition_b: str   the second partition's id
// returns: cluster_a: int, cluster_b: int, n: int
CALL () {
  MATCH (:Partition {id: $partition_a})-[:HAS_CLUSTER]->(ca:Cluster)<-[:IN_CLUSTER]-(x)
  OPTIONAL MATCH (x)-[:IN_CLUSTER]->(cb:Cluster)<-[:HAS_CLUSTER]-(:Partition {id: $partition_b})
  RETURN ca.index AS cluster_a, coalesce(cb.index, -1) AS cluster_b, count(*) AS n
  UNION ALL
  MATCH (:Partition {id: $partition_b})-[:HAS_CLUSTER]->(cb:Cluster)<-[:IN_CLUSTER]-(y)
  WHERE NOT EXISTS { (y)-[:IN_CLUSTER]->(:Cluster)<-[:HAS_CLUSTER]-(:Partition {id: $partition_a}) }
  RETURN -1 AS cluster_a, cb.index AS cluster_b, count(*) AS n
}
WITH cluster_a, cluster_b, n
WHERE n > 0
RETURN cluster_a, cluster_b, n
ORDER BY cluster_a, cluster_b
