// Extend the leases of the running jobs a dispatcher holds, in one transaction. Returns those it still holds, with
// whether `jobs cancel` asked to stop each; a job missing from the answer was reclaimed or failed meanwhile.
//
// mode: write
// param ids: list[str]              the jobs' ids
// param worker: str            the dispatcher that claimed them
// param lease_seconds: float (>= 0)   the new lease, from now
// returns: id: str, cancel: bool
UNWIND $ids AS job_id
MATCH (j:Job {id: job_id})
WHERE j.status = 'running' AND j.worker = $worker
SET j.lease_until = datetime() + duration({seconds: $lease_seconds})
RETURN j.id AS id, coalesce(j.cancel_requested, false) AS cancel
