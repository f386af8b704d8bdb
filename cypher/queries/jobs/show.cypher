// Jobs by id, with everything the record holds (`jobs show`, and the futures that wait on them).
//
// mode: read
// param ids: list[str]   the jobs' ids
// returns: id: str, kind: str, model: str, config: str, sweep: str, status: str, result: str, outcome: str, partition: str, error: str, worker: str, attempts: int, task: str, task_runs: int, cancel_requested: bool, lease_until: str, created_at: str, started_at: str, finished_at: str
UNWIND $ids AS job_id
MATCH (j:Job {id: job_id})
RETURN j.id AS id, coalesce(j.kind, 'cluster') AS kind, j.model AS model, j.config AS config,
       coalesce(j.sweep, '') AS sweep, j.status AS status, j.result AS result, j.outcome AS outcome, j.partition AS partition,
       j.error AS error, j.worker AS worker, coalesce(j.attempts, 0) AS attempts, j.task AS task, coalesce(j.task_runs, 0) AS task_runs,
       coalesce(j.cancel_requested, false) AS cancel_requested, toString(j.lease_until) AS lease_until,
       toString(j.created_at) AS created_at, toString(j.started_at) AS started_at,
       toString(j.finished_at) AS finished_at
