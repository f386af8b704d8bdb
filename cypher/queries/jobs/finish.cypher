// Record a job's outcome: 'done' with the partition it wrote, or 'failed' with the error.
//
// mode: write
// param id: str          the job's id
// param status: str      'done' or 'failed'
// param partition: str   the partition written ('' when failed)
// param error: str       the error message ('' when done)
// returns: id: str
MATCH (j:Job {id: $id})
SET j.status = $status, j.partition = $partition, j.error = $error, j.finished_at = datetime()
RETURN j.id AS id
