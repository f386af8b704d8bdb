// The packed edge chunks (EDGE_BLOCK, see ingest.create_edge_block) between the layers of one model in an index
// range: one row per chunk, its arrays as bytes, so that a pull moves a few large values instead of one field
// per edge.
//
// mode: read
// param model: str   the model's name
// param first: int   first layer index (inclusive)
// param last: int    last layer index (inclusive)
// returns: src_layer: int, dst_layer: int, chunk: int, n: int, format: int, src: bytes, dst: bytes, w: bytes
MATCH (a:Layer {model: $model})-[e:EDGE_BLOCK]->(b:Layer)
WHERE a.index >= $first AND a.index <= $last AND b.index >= $first AND b.index <= $last
RETURN a.index AS src_layer, b.index AS dst_layer, e.chunk AS chunk, e.n AS n, e.format AS format,
       e.src AS src, e.dst AS dst, e.w AS w
ORDER BY src_layer, dst_layer, chunk
