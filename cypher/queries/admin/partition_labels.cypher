// The cluster of every clustered neuron of one partition, by ordinal (neurons without a row were dropped as isolated).
//
// mode: read
// param partition: str   the partition's id
// returns: ordinal: int, cluster: int
MATCH (:Partition {id: $partition})-[:HAS_CLUSTER]->(c:Cluster)<-[:IN_CLUSTER]-(n:Neuron)
RETURN n.ordinal AS ordinal, c.index AS cluster
ORDER BY ordinal
