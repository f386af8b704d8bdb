// Outgoing weights of the neurons of one model in an ordinal range, one row per source neuron, keeping only
// edges whose target lies in the layer range and whose |w| reaches min_weight.
// Fat rows, not one row per edge: Bolt pays per record. Ordinals are the dense 0..n-1 numbers given at ingest,
// so src/dst index a tensor without a lookup.
//
// mode: read
// param model: str            the model's name
// param lo: int               first source ordinal (inclusive)
// param hi: int               last source ordinal (exclusive)
// param first_layer: int = 0          first layer index kept
// param last_layer: int = 1000000000  last layer index kept
// param min_weight: float = 0.0       drop edges with |w| below this
// returns: src: int, dst: list[int], w: list[float]
MATCH (a:Neuron {model: $model})
WHERE a.ordinal >= $lo AND a.ordinal < $hi
MATCH (a)-[e:WEIGHT]->(b:Neuron)
WHERE b.layer >= $first_layer AND b.layer <= $last_layer AND abs(e.w) >= $min_weight
RETURN a.ordinal AS src, collect(b.ordinal) AS dst, collect(e.w) AS w
