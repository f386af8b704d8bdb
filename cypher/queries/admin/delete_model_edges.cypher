// One batch of a drop: delete up to $limit relationships leaving the model's neurons (WEIGHT, CORRELATION,
// IN_CLUSTER), so that a transaction's memory follows the relationships it touches, not the neurons. Run until
// it deletes fewer than $limit.
//
// mode: write
// param model: str   the model's name
// param limit: int (1..1000000)   relationships per transaction
// returns: deleted: int
MATCH (n:Neuron {model: $model})-[r]->()
WHERE n.ordinal >= 0  // the (model, ordinal) index, not a scan of every model's neurons
WITH r LIMIT $limit
DELETE r
RETURN count(r) AS deleted
