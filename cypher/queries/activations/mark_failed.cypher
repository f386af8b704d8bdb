// An activation graph's ingest stopped part-way: say so, so nobody mistakes the leftovers for a graph.
//
// mode: write
// param model: str    the model's name
// param name: str     the activation graph's name
// param reason: str   what stopped it
// returns: status: str
MATCH (g:ActivationGraph {model: $model, name: $name})
WHERE g.status <> 'ready'
SET g.status = 'failed', g.failure = $reason
RETURN g.status AS status
