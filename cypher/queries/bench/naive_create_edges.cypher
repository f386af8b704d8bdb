// The naive baseline of bench/ingest.py: one row per edge, two index lookups per row.
//
// mode: write
// param model: str   the model's name
// param rows: list   maps: src_layer, src, dst_layer, dst, w
// returns: created: int
UNWIND $rows AS row
MATCH (a:Neuron {model: $model, layer: row.src_layer, index: row.src})
MATCH (b:Neuron {model: $model, layer: row.dst_layer, index: row.dst})
CREATE (a)-[:WEIGHT {w: row.w}]->(b)
RETURN count(*) AS created
