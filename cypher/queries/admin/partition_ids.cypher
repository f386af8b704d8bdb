// The ids of every partition of one model, whatever its state (a drop removes them one transaction each).
//
// mode: read
// param model: str   the model's name
// returns: id: str
MATCH (p:Partition {model: $model})
RETURN p.id AS id
ORDER BY id
