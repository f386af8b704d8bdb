// Create the WEIGHT edges from one layer to another: one row per source neuron with parallel lists of target
// unit indices and weights. Both layers' neurons are looked up once per batch through the key index and held
// as lists indexed by unit, so no per-edge lookup is needed.
//
// mode: write
// param model: str       the model's name
// param src_layer: int   the source layer's index
// param dst_layer: int   the target layer's index
// param rows: list       maps: src (unit index), dst (list of unit indices), w (list of weights)
// returns: created: int
MATCH (s:Neuron {model: $model, layer: $src_layer})
WITH s ORDER BY s.index
WITH collect(s) AS sources
MATCH (t:Neuron {model: $model, layer: $dst_layer})
WITH sources, t ORDER BY t.index
WITH sources, collect(t) AS targets
UNWIND $rows AS row
WITH sources[row.src] AS s, targets, row
UNWIND range(0, size(row.dst) - 1) AS i
WITH s, targets[row.dst[i]] AS t, row.w[i] AS w
CREATE (s)-[:WEIGHT {w: w}]->(t)
RETURN count(*) AS created
