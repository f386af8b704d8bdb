// The naive baseline of bench/pull.py: one Bolt record per edge.
//
// mode: read
// param model: str   the model's name
// returns: src: int, dst: int, w: float
MATCH (a:Neuron {model: $model})-[e:WEIGHT]->(b:Neuron)
RETURN a.ordinal AS src, b.ordinal AS dst, e.w AS w
