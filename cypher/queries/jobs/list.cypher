// Jobs, newest first (or one sweep's).
//
// mode: read
// param limit: int = 50 (>= 1)   at most this many
// param sweep: str = ""          only this sweep's jobs ('' for all)
// returns: id: str, kind: str, model: str, status: str, result: str, partition: str, error: str, worker: str, attempts: int, lease_until: str, created_at: str, finished_at: str
MATCH (j:Job)
WHERE $sweep = '' OR j.sweep = $sweep
RETURN j.id AS id, coalesce(j.kind, 'cluster') AS kind, j.model AS model, j.status AS status,
       coalesce(j.result, j.partition) AS result, j.partition AS partition, j.error AS error, j.worker AS worker,
       coalesce(j.attempts, 0) AS attempts, toString(j.lease_until) AS lease_until,
       toString(j.created_at) AS created_at, toString(j.finished_at) AS finished_at
ORDER BY j.created_at DESC
LIMIT $limit
