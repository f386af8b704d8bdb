// Claim the oldest job that is queued, or running under a lease that has lapsed (its dispatcher died), for one
// dispatcher, and give it a lease. A lapsed job is reclaimed only while it has had fewer than max_attempts claims;
// `jobs.abandon` fails it after that. A job from before leases existed keeps an hour from its start. The write lock
// taken by SET makes the claim exclusive: a second dispatcher racing for the same job re-reads it after the first
// commits (then queued no more, or under a fresh lease) and skips it. A job from before kinds existed is a cluster
// job.
//
// mode: write
// param worker: str               the claiming dispatcher's name
// param lease_seconds: float (>= 0)   how long the claim holds without a heartbeat
// param max_attempts: int = 3 (>= 1)   claims a job may have before a lapsed lease fails it
// returns: id: str, kind: str, model: str, config: str, attempts: int
MATCH (j:Job)
WHERE j.status = 'queued'
   OR (j.status = 'running' AND coalesce(j.lease_until, j.started_at + duration({hours: 1})) < datetime()
       AND coalesce(j.attempts, 1) < $max_attempts)
WITH j ORDER BY j.created_at LIMIT 1
SET j._lock = true
WITH j
WHERE j.status = 'queued'
   OR (j.status = 'running' AND coalesce(j.lease_until, j.started_at + duration({hours: 1})) < datetime())
SET j.status = 'running', j.worker = $worker, j.started_at = datetime(),
    j.lease_until = datetime() + duration({seconds: $lease_seconds}), j.attempts = coalesce(j.attempts, 0) + 1
REMOVE j._lock
RETURN j.id AS id, coalesce(j.kind, 'cluster') AS kind, j.model AS model, j.config AS config, j.attempts AS attempts
