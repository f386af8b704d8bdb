// The layers of one model in order, as ingested.
//
// mode: read
// param model: str   the model's name
// returns: index: int, name: str, kind: str, role: str, size: int, shape: list[int]
MATCH (:Model {name: $model})-[:HAS_LAYER]->(l:Layer)
RETURN l.index AS index, l.name AS name, l.kind AS kind, l.role AS role, l.size AS size, l.shape AS shape
ORDER BY index
