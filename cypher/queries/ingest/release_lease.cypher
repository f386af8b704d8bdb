// Give a lease up: the holder when it is done, or a later run taking over from a holder that died. Only the
// lease with that token goes, so a run never removes a lease someone has taken since.
//
// mode: write
// param model: str   the model's name
// param graph: str   the activation graph's name, or '' for the model itself
// param token: str   the token of the lease to remove
// returns: released: int
OPTIONAL MATCH (l:Lease {model: $model, graph: $graph, token: $token})
DELETE l
RETURN count(l) AS released
