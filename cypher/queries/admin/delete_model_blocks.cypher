// One batch of a drop: delete up to $limit packed edge chunks (EDGE_BLOCK) between the model's layers. A chunk
// holds up to a million edges' arrays, so a few go per transaction. Run until it deletes fewer than $limit.
//
// mode: write
// param model: str   the model's name
// param limit: int (1..1000)   chunks per transaction
// returns: deleted: int
MATCH (a:Layer {model: $model})-[e:EDGE_BLOCK]->()
WHERE a.index >= 0  // the key index, not a scan of every model's layers
WITH e LIMIT $limit
DELETE e
RETURN count(e) AS deleted
