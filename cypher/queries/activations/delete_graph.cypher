// Remove one activation graph: its CORRELATION edges in batches, so that no single transaction holds a complete
// graph's n²/2 edges, then its (:ActivationGraph) node. The model and its other graphs stay.
//
// mode: autocommit
// param model: str   the model's name
// param name: str    the activation graph's name
// returns: deleted: int
MATCH (:Neuron {model: $model})-[e:CORRELATION {graph: $name}]->()
CALL (e) { DELETE e } IN TRANSACTIONS OF 20000 ROWS
WITH count(*) AS edges
OPTIONAL MATCH (g:ActivationGraph {model: $model, name: $name})
DETACH DELETE g
RETURN DISTINCT edges AS deleted
