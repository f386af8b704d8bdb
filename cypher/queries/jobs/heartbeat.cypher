// Extend a running job's lease by its worker. No row comes back when the worker no longer holds the job: its lease
// lapsed and another worker reclaimed it, or it was failed as abandoned.
//
// mode: write
// param id: str                the job's id
// param worker: str            the worker that claimed it
// param lease_seconds: float (>= 0)   the new lease, from now
// returns: id: str, lease_until: str
MATCH (j:Job {id: $id})
WHERE j.status = 'running' AND j.worker = $worker
SET j.lease_until = datetime() + duration({seconds: $lease_seconds})
RETURN j.id AS id, toString(j.lease_until) AS lease_until
