// Create the CORRELATION edges of one activation graph from one layer to another (or within one layer): one row
// per source neuron with parallel lists of target unit indices, r and r². Both layers' neurons are looked up
// once per batch through the key index and held as lists indexed by unit, so no per-edge lookup is needed.
// Edges run from the lower ordinal to the higher, once per pair.
//
// mode: write
// param model: str       the model's name
// param graph: str       the activation graph's name, stored on every edge
// param src_layer: int   the source layer's index
// param dst_layer: int   the target layer's index (>= src_layer)
// param rows: list       maps: src (unit index), dst (list of unit indices), r (list of floats), r2 (list of floats)
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
WITH s, targets[row.dst[i]] AS t, row.r[i] AS r, row.r2[i] AS r2
CREATE (s)-[:CORRELATION {graph: $graph, r: r, r2: r2}]->(t)
RETURN count(*) AS created
