// Record a job's outcome: 'done' with what it wrote, 'failed' with the error, or 'cancelled'. Only the dispatcher
// that holds the job may finish it; no row comes back when another one has reclaimed it since (this one's lease
// lapsed).
//
// mode: write
// param id: str          the job's id
// param worker: str      the dispatcher that claimed it
// param status: str      'done', 'failed' or 'cancelled'
// param result: str      what it wrote: a partition, assessment(s) or graph ('' otherwise)
// param partition: str   a cluster job's partition ('' otherwise)
// param error: str       the error message ('' unless failed)
// param outcome: str = ""   the task's JobOutcome as JSON ('' unless done)
// returns: id: str
MATCH (j:Job {id: $id})
WHERE j.status = 'running' AND j.worker = $worker
SET j.status = $status, j.result = $result, j.partition = $partition, j.error = $error, j.outcome = $outcome,
    j.finished_at = datetime()
REMOVE j.lease_until
RETURN j.id AS id
