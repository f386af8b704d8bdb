// The last step of removing an activation graph, once its edges are gone: its (:ActivationGraph) node.
//
// mode: write
// param model: str   the model's name
// param name: str    the activation graph's name
// returns: deleted: int
OPTIONAL MATCH (g:ActivationGraph {model: $model, name: $name})
DETACH DELETE g
RETURN count(g) AS deleted
