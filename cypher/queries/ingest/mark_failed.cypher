// An ingest stopped part-way: say so, so nobody mistakes the leftovers for a model.
//
// mode: write
// param model: str    the model's name
// param reason: str   what stopped it
// returns: status: str
MATCH (m:Model {name: $model})
WHERE m.status <> 'ready'
SET m.status = 'failed', m.failure = $reason
RETURN m.status AS status
