// A model's arch, and for a transformer its neuron graph ('virtual' or 'mlp-in') and family; no row: no model.
//
// mode: read
// param model: str   the model's name
// returns: arch: str, graph: str, family: str
MATCH (m:Model {name: $model})
RETURN m.arch AS arch, m.graph AS graph, m.family AS family
