// The CORRELATION edges of one activation graph leaving the neurons of an ordinal range, one row per source
// neuron (fat rows: Bolt pays per record). Ordinals index a tensor directly.
//
// mode: read
// param model: str   the model's name
// param graph: str   the activation graph's name
// param lo: int      first source ordinal (inclusive)
// param hi: int      last source ordinal (exclusive)
// returns: src: int, dst: list[int], r: list[float], r2: list[float]
MATCH (a:Neuron {model: $model})
WHERE a.ordinal >= $lo AND a.ordinal < $hi
MATCH (a)-[e:CORRELATION {graph: $graph}]->(b:Neuron)
RETURN a.ordinal AS src, collect(b.ordinal) AS dst, collect(e.r) AS r, collect(e.r2) AS r2
