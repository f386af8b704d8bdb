// Remove one model: its neurons with their edges, its layers, then the model node, in batches of neurons so
// that no single transaction holds a whole model's edges.
//
// mode: autocommit
// param model: str   the model's name
// returns: deleted: int
MATCH (n:Neuron {model: $model})
CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 200 ROWS
WITH count(*) AS neurons
OPTIONAL MATCH (m:Model {name: $model})
OPTIONAL MATCH (m)-[:HAS_LAYER]->(l:Layer)
DETACH DELETE l, m
RETURN neurons AS deleted
