// Fail the running jobs whose lease lapsed after max_attempts claims: their worker stopped sending heartbeats each
// time (it died, or the job kills it), so no worker reclaims them again.
//
// mode: write
// param max_attempts: int = 3 (>= 1)   claims a job may have before a lapsed lease fails it
// returns: id: str, attempts: int
MATCH (j:Job {status: 'running'})
WHERE coalesce(j.lease_until, j.started_at + duration({hours: 1})) < datetime()
  AND coalesce(j.attempts, 1) >= $max_attempts
SET j.status = 'failed', j.finished_at = datetime(),
    j.error = 'abandoned: its worker stopped without finishing it on each of its ' + toString(coalesce(j.attempts, 1))
      + ' attempts'
RETURN j.id AS id, coalesce(j.attempts, 1) AS attempts
