// The status of one model ('loading', 'ready' or 'failed'), or no row if the store has no such model.
//
// mode: read
// param model: str   the model's name
// returns: status: str
MATCH (m:Model {name: $model})
RETURN m.status AS status
