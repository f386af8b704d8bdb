// Remove one partition with its clusters and memberships.
//
// mode: write
// param partition: str   the partition's id
// returns: deleted: int
MATCH (p:Partition {id: $partition})
OPTIONAL MATCH (p)-[:HAS_CLUSTER]->(c:Cluster)
WITH p, collect(c) AS clusters
FOREACH (c IN clusters | DETACH DELETE c)
DETACH DELETE p
RETURN size(clusters) AS deleted
