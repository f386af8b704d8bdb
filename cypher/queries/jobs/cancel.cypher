// Cancel a job: a queued one is cancelled at once; a running one is asked to stop, and the dispatcher that holds it
// cancels its Ray task at its next heartbeat and records it cancelled. No row comes back for an unknown id; a
// finished job's status comes back unchanged.
//
// mode: write
// param id: str   the job's id
// returns: id: str, status: str
MATCH (j:Job {id: $id})
FOREACH (_ IN CASE WHEN j.status = 'queued' THEN [1] ELSE [] END |
  SET j.status = 'cancelled', j.finished_at = datetime())
FOREACH (_ IN CASE WHEN j.status = 'running' THEN [1] ELSE [] END | SET j.cancel_requested = true)
RETURN j.id AS id, CASE WHEN j.status = 'running' THEN 'cancelling' ELSE j.status END AS status
