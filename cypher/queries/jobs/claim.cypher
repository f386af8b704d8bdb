// Claim the oldest queued job for one worker. The write lock taken by SET makes the claim exclusive: a second
// worker racing for the same job re-reads its status after the first commits and skips it.
//
// mode: write
// param worker: str   the claiming worker's name
// returns: id: str, model: str, config: str
MATCH (j:Job {status: 'queued'})
WITH j ORDER BY j.created_at LIMIT 1
SET j._lock = true
WITH j
WHERE j.status = 'queued'
SET j.status = 'running', j.worker = $worker, j.started_at = datetime()
REMOVE j._lock
RETURN j.id AS id, j.model AS model, j.config AS config
