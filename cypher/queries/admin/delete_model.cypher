// Remove one model: its neurons with their edges and memberships, in batches of neurons so that no single
// transaction holds a whole model's edges; then its partitions, clusters, sub-clusters, assessments, activation
// graphs, layers and the model node.
//
// mode: autocommit
// param model: str   the model's name
// returns: deleted: int
MATCH (n:Neuron {model: $model})
CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 200 ROWS
WITH count(*) AS neurons
OPTIONAL MATCH (p:Partition {model: $model})
OPTIONAL MATCH (p)-[:HAS_CLUSTER]->(c:Cluster)
OPTIONAL MATCH (c)-[:HAS_SUBCLUSTER]->(s:SubCluster)
OPTIONAL MATCH (p)-[:HAS_ASSESSMENT]->(a:Assessment)
DETACH DELETE s, a, c, p
WITH DISTINCT neurons
OPTIONAL MATCH (g:ActivationGraph {model: $model})
DETACH DELETE g
WITH DISTINCT neurons
OPTIONAL MATCH (m:Model {name: $model})
OPTIONAL MATCH (m)-[:HAS_LAYER]->(l:Layer)
DETACH DELETE l, m
RETURN DISTINCT neurons AS deleted
