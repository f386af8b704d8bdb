// Create the WEIGHT edges from one layer to another: one row per source neuron with parallel lists of target
// unit indices and weights. Both layers' neurons are looked up once per batch through the key index and held
// as lists indexed by unit, so no per-edge lookup is needed. FOREACH creates a row's edges without turning each
// edge into a row of its own (measured ~15% faster than UNWIND here); the inner one-element FOREACH only binds t.
//
// mode: write
// param model: str       the model's name
// param src_layer: int   the source layer's index
// param dst_layer: int   the target layer's index
// param rows: list       maps: src (unit index), dst (list of unit indices), w (list of weights)
// returns: created: int   (source rows)
MATCH (s:Neuron {model: $model, layer: $src_layer})
WITH s ORDER BY s.index
WITH collect(s) AS sources
MATCH (t:Neuron {model: $model, layer: $dst_layer})
WITH sources, t ORDER BY t.index
WITH sources, collect(t) AS targets
UNWIND $rows AS row
WITH sources[row.src] AS s, [d IN row.dst | targets[d]] AS ts, row.w AS ws
FOREACH (i IN range(0, size(ts) - 1) | FOREACH (t IN [ts[i]] | CREATE (s)-[:WEIGHT {w: ws[i]}]->(t)))
RETURN count(*) AS created
