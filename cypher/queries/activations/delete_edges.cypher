// One batch of removing an activation graph: delete up to $limit of its CORRELATION edges, walking the model's
// neurons in ordinal order from $from, so that no batch scans the edges of the model's other graphs again. Run
// with $from set to the returned cursor until fewer than $limit are deleted.
//
// mode: write
// param model: str   the model's name
// param name: str    the activation graph's name
// param from: int    the first source ordinal still to visit (0 at the start; then the returned cursor)
// param limit: int (1..1000000)   relationships per transaction
// returns: deleted: int, cursor: int
MATCH (a:Neuron {model: $model})
WHERE a.ordinal >= $from
WITH a ORDER BY a.ordinal
MATCH (a)-[e:CORRELATION {graph: $name}]->()
WITH a, e LIMIT $limit
DELETE e
RETURN count(e) AS deleted, coalesce(max(a.ordinal), $from) AS cursor
