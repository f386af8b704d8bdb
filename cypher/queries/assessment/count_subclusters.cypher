// How many sub-clusters and assessments the store holds for a partition id (also after the partition is deleted:
// none should be left).
//
// mode: read
// param partition: str   the partition's id
// returns: subclusters: int, assessments: int
OPTIONAL MATCH (s:SubCluster {partition: $partition})
WITH count(s) AS subclusters
OPTIONAL MATCH (a:Assessment {partition: $partition})
RETURN subclusters, count(a) AS assessments
