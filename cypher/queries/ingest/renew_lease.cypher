// Extend a lease that this run still holds (the heartbeat of a long ingest or drop); no row when it was lost.
//
// mode: write
// param model: str   the model's name
// param graph: str   the activation graph's name, or '' for the model itself
// param token: str   the holder's token
// param ttl: int (1..86400)   seconds from now
// returns: token: str
MATCH (l:Lease {model: $model, graph: $graph, token: $token})
SET l.until = datetime() + duration({seconds: $ttl})
RETURN l.token AS token
