// The first step of removing (or replacing) an activation graph, in its own transaction: it says 'deleting' from
// here on, so analysis refuses it while its edges go, and a rerun finishes the job.
//
// mode: write
// param model: str   the model's name
// param name: str    the activation graph's name
// returns: status: str
MATCH (g:ActivationGraph {model: $model, name: $name})
SET g.status = 'deleting', g.deleting_since = datetime()
RETURN g.status AS status
