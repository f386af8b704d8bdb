// Create the sub-clusters of a partition that an assessment scores (a cluster's neurons within one layer), once:
// (:Cluster)-[:HAS_SUBCLUSTER]->(:SubCluster)-[:IN_LAYER]->(:Layer). Re-running is harmless (MERGE on the key).
//
// mode: write
// param model: str       the model's name
// param partition: str   the partition's id
// param rows: list       maps: cluster (index), layer (layer index), layer_name, size (neurons)
// returns: subclusters: int
UNWIND $rows AS row
MATCH (c:Cluster {partition: $partition, index: row.cluster})
MATCH (l:Layer {model: $model, index: row.layer})
MERGE (s:SubCluster {partition: $partition, cluster: row.cluster, layer: row.layer})
ON CREATE SET s.model = $model, s.layer_name = row.layer_name, s.size = row.size,
              s.uid = $partition + '/' + toString(row.cluster) + '/' + toString(row.layer)
MERGE (c)-[:HAS_SUBCLUSTER]->(s)
MERGE (s)-[:IN_LAYER]->(l)
RETURN count(s) AS subclusters
