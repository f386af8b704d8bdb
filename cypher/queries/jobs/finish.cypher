// Record a job's outcome: 'done' with the partition it wrote, or 'failed' with the error. Only the worker that holds
// the job may finish it; no row comes back when another worker has reclaimed it since (this one's lease lapsed).
//
// mode: write
// param id: str          the job's id
// param worker: str      the worker that claimed it
// param status: str      'done' or 'failed'
// param partition: str   the partition written ('' when failed)
// param error: str       the error message ('' when done)
// returns: id: str
MATCH (j:Job {id: $id})
WHERE j.status = 'running' AND j.worker = $worker
SET j.status = $status, j.partition = $partition, j.error = $error, j.finished_at = datetime()
REMOVE j.lease_until
RETURN j.id AS id
