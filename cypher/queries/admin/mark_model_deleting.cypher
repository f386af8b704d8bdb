// The first step of a drop or a replace, in its own transaction: the model and its activation graphs say
// 'deleting' from here on, so analysis refuses them while their parts go, and a rerun of drop or ingest finishes.
//
// mode: write
// param model: str   the model's name
// returns: status: str, n_edges: int
MATCH (m:Model {name: $model})
SET m.status = 'deleting', m.deleting_since = datetime()
WITH m
CALL (m) {
  MATCH (g:ActivationGraph {model: m.name})
  SET g.status = 'deleting'
}
RETURN m.status AS status, m.n_edges AS n_edges
