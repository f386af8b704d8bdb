// Put jobs a dispatcher holds back in the queue: it is stopping (Ctrl-C) and has cancelled their tasks, so another
// dispatcher may take them at once instead of after their leases lapse.
//
// mode: write
// param ids: list[str]   the jobs' ids
// param worker: str      the dispatcher that claimed them
// returns: id: str
UNWIND $ids AS job_id
MATCH (j:Job {id: job_id})
WHERE j.status = 'running' AND j.worker = $worker
SET j.status = 'queued'
REMOVE j.lease_until, j.worker
RETURN j.id AS id
