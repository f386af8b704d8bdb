// Take the lease on a model (graph '') or on one of its activation graphs, for one ingest or drop. The
// (model, graph) key is unique, so while another run holds the lease this fails with a constraint error.
//
// mode: write
// param model: str    the model's name
// param graph: str    the activation graph's name, or '' for the model itself
// param token: str    this run's token (host, pid, process start, random)
// param op: str       what the holder does: ingest, drop, activations
// param host: str     the holder's host name
// param pid: int      the holder's process id
// param ttl: int (1..86400)   seconds the lease lasts unless renewed
// returns: token: str
CREATE (l:Lease {model: $model, graph: $graph, token: $token, op: $op, host: $host, pid: $pid,
                 since: datetime(), until: datetime() + duration({seconds: $ttl})})
RETURN l.token AS token
