// Outgoing weights of the neurons of one model in an ordinal range, one row per source neuron.
// Fat rows, not one row per edge: Bolt pays per record. Ordinals are the dense 0..n-1 numbers given at ingest,
// so src/dst index a tensor without a lookup. No filter on the target or the weight here: reading b.layer and
// abs(e.w) per edge halved the pull rate, and the caller filters the arrays in numpy for free.
//
// mode: read
// param model: str   the model's name
// param lo: int      first source ordinal (inclusive)
// param hi: int      last source ordinal (exclusive)
// returns: src: int, dst: list[int], w: list[float]
MATCH (a:Neuron {model: $model})
WHERE a.ordinal >= $lo AND a.ordinal < $hi
MATCH (a)-[e:WEIGHT]->(b:Neuron)
RETURN a.ordinal AS src, collect(b.ordinal) AS dst, collect(e.w) AS w
