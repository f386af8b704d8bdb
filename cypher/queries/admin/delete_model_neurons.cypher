// One batch of a drop, after its relationships are gone: delete up to $limit of the model's neurons. Run until
// it deletes fewer than $limit.
//
// mode: write
// param model: str   the model's name
// param limit: int (1..1000000)   neurons per transaction
// returns: deleted: int
MATCH (n:Neuron {model: $model})
WHERE n.ordinal >= 0  // the (model, ordinal) index, not a scan of every model's neurons
WITH n LIMIT $limit
DETACH DELETE n
RETURN count(n) AS deleted
