// Where a model was ingested from, so analysis can re-load the network itself (path, content hash, arch).
//
// mode: read
// param model: str   the model's name
// returns: status: str, source: str, sha256: str, arch: str, kernel_norm: str, fold_batchnorm: bool, input_shape: list[int]
MATCH (m:Model {name: $model})
OPTIONAL MATCH (m)-[:HAS_LAYER]->(input:Layer {index: 0})
RETURN m.status AS status, m.source AS source, m.sha256 AS sha256, m.arch AS arch, m.kernel_norm AS kernel_norm,
       m.fold_batchnorm AS fold_batchnorm, input.shape AS input_shape
