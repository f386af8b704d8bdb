// Store one chunk of a layer pair's edges as packed arrays on an EDGE_BLOCK relationship between the two Layer
// nodes: the bulk copy that pulls read. A pull then moves bytes (one Bolt value per array) instead of one record
// field per edge, and a write creates one relationship per chunk instead of one per edge. The WEIGHT relationships,
// when written, hold the same edges for Cypher that walks single neurons.
// Encoding (format 1): src and dst are little-endian int32 unit indices within their layers, w little-endian
// float64 weights, all of length n, in source-major order.
//
// mode: write
// param model: str       the model's name
// param src_layer: int   index of the source layer
// param dst_layer: int   index of the target layer
// param chunk: int       the chunk's number within the layer pair (0, 1, ...)
// param n: int           edges in the chunk
// param src: bytes       int32 source unit indices
// param dst: bytes       int32 target unit indices
// param w: bytes         float64 weights
// returns: created: int
MATCH (a:Layer {model: $model, index: $src_layer})
MATCH (b:Layer {model: $model, index: $dst_layer})
CREATE (a)-[:EDGE_BLOCK {chunk: $chunk, n: $n, format: 1, src: $src, dst: $dst, w: $w}]->(b)
RETURN count(*) AS created
