// Create an activation graph of a model in status 'loading', linked from the model. Analysis ignores it until
// activations.mark_ready. The (model, name) uniqueness constraint refuses a second writer of the same name.
//
// mode: write
// param model: str   the model's name
// param name: str    the activation graph's name, unique within the model
// param props: map   data, method, reduction, point, n_inputs, min_r2, top_k, n_units, n_excluded, layers, excluded
// returns: name: str
MATCH (m:Model {name: $model})
CREATE (m)-[:HAS_ACTIVATION_GRAPH]->(g:ActivationGraph {model: $model, name: $name, status: 'loading',
                                                        created_at: datetime()})
SET g += $props
RETURN g.name AS name
