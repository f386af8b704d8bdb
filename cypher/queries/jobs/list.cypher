// Clustering jobs, newest first.
//
// mode: read
// param limit: int = 50 (>= 1)   at most this many
// returns: id: str, model: str, status: str, partition: str, error: str, worker: str, attempts: int, lease_until: str, created_at: str, finished_at: str
MATCH (j:Job)
RETURN j.id AS id, j.model AS model, j.status AS status, j.partition AS partition, j.error AS error,
       j.worker AS worker, coalesce(j.attempts, 0) AS attempts, toString(j.lease_until) AS lease_until,
       toString(j.created_at) AS created_at, toString(j.finished_at) AS finished_at
ORDER BY j.created_at DESC
LIMIT $limit
