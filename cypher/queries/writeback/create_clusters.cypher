// Create the clusters of a partition and their memberships: one row per cluster with the ordinals of its neurons.
//
// mode: write
// param model: str       the model's name
// param partition: str   the partition's id
// param rows: list       maps: index (cluster), size, ordinals (list of neuron ordinals)
// returns: members: int
MATCH (p:Partition {id: $partition})
UNWIND $rows AS row
MERGE (p)-[:HAS_CLUSTER]->(c:Cluster {partition: $partition, index: row.index})
ON CREATE SET c.size = row.size
WITH c, row
UNWIND row.ordinals AS ordinal
MATCH (n:Neuron {model: $model, ordinal: ordinal})
CREATE (n)-[:IN_CLUSTER]->(c)
RETURN count(*) AS members
