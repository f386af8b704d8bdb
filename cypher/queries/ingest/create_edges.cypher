// Create the WEIGHT edges from one layer to another: one row per source neuron with parallel lists of target
// unit indices and weights. The batch's source neurons and the target layer's neurons are looked up once per batch
// through the ordinal index (ordinals are dense within a model, so a range is exactly those neurons, in order),
// and held as lists indexed by unit: no per-edge lookup, and the cost of a batch does not grow with the other
// models in the store (a label scan did). FOREACH creates a row's edges without turning each edge into a row of
// its own (measured ~15% faster than UNWIND here); the inner one-element FOREACH only binds t.
//
// mode: write
// param model: str       the model's name
// param src_lo: int      the ordinal of the batch's first source neuron
// param src_hi: int      the ordinal of its last source neuron (inclusive)
// param src_first: int   the unit index (within its layer) of the first source neuron: rows' src minus this
//                        index the sources
// param dst_lo: int      the ordinal of the target layer's unit 0
// param dst_hi: int      the ordinal of the target layer's last unit (inclusive)
// param rows: list       maps: src (unit index), dst (list of unit indices), w (list of weights)
// returns: created: int   (source rows)
MATCH (s:Neuron) USING INDEX s:Neuron(model, ordinal)
WHERE s.model = $model AND s.ordinal >= $src_lo AND s.ordinal <= $src_hi
WITH s ORDER BY s.ordinal
WITH collect(s) AS sources
MATCH (t:Neuron) USING INDEX t:Neuron(model, ordinal)
WHERE t.model = $model AND t.ordinal >= $dst_lo AND t.ordinal <= $dst_hi
WITH sources, t ORDER BY t.ordinal
WITH sources, collect(t) AS targets
UNWIND $rows AS row
WITH sources[row.src - $src_first] AS s, [d IN row.dst | targets[d]] AS ts, row.w AS ws
FOREACH (i IN range(0, size(ts) - 1) | FOREACH (t IN [ts[i]] | CREATE (s)-[:WEIGHT {w: ws[i]}]->(t)))
RETURN count(*) AS created
