// The status of one model ('loading', 'ready', 'failed' or 'deleting') and why it failed, if it did; no row if
// the store has no such model.
//
// mode: read
// param model: str   the model's name
// returns: status: str, failure: str
MATCH (m:Model {name: $model})
RETURN m.status AS status, m.failure AS failure
