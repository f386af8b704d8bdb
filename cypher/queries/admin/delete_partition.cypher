// Remove one partition with its clusters and memberships, and the sub-clusters and assessments that scored them.
//
// mode: write
// param partition: str   the partition's id
// returns: deleted: int
MATCH (p:Partition {id: $partition})
OPTIONAL MATCH (p)-[:HAS_CLUSTER]->(c:Cluster)
OPTIONAL MATCH (c)-[:HAS_SUBCLUSTER]->(s:SubCluster)
WITH p, collect(DISTINCT c) AS clusters, collect(DISTINCT s) AS subclusters
OPTIONAL MATCH (p)-[:HAS_ASSESSMENT]->(a:Assessment)
WITH p, clusters, subclusters, collect(a) AS assessments
FOREACH (x IN subclusters + assessments | DETACH DELETE x)
FOREACH (c IN clusters | DETACH DELETE c)
DETACH DELETE p
RETURN size(clusters) AS deleted
