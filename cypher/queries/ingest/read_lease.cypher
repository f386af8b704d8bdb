// Who holds the lease on a model (graph '') or on one of its activation graphs, and whether it has run out; no
// row when nobody does.
//
// mode: read
// param model: str   the model's name
// param graph: str   the activation graph's name, or '' for the model itself
// returns: token: str, op: str, host: str, pid: int, since: str, expired: bool
MATCH (l:Lease {model: $model, graph: $graph})
RETURN l.token AS token, l.op AS op, l.host AS host, l.pid AS pid,
       toString(l.since) AS since, l.until < datetime() AS expired
