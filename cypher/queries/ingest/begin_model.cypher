// Create a model in status 'loading' with its layers. Analysis ignores it until ingest.mark_ready.
//
// mode: write
// param model: str      the model's name
// param meta: map       arch, source, sha256, kernel_norm, fold_batchnorm
// param layers: list    one map per layer: index, name, kind, role, size, shape
// returns: name: str
CREATE (m:Model {name: $model, status: 'loading', created_at: datetime()})
SET m += $meta
WITH m
UNWIND $layers AS layer
CREATE (m)-[:HAS_LAYER]->(:Layer {model: $model, index: layer.index, name: layer.name, kind: layer.kind,
                                  role: layer.role, size: layer.size, shape: layer.shape})
RETURN DISTINCT m.name AS name
