// A Ray task says where it runs (host:pid) as it starts a job, and counts its runs: a retry after its worker died
// runs it again.
//
// mode: write
// param id: str     the job's id
// param task: str   host:pid of the Ray worker process
// returns: id: str, runs: int
MATCH (j:Job {id: $id})
SET j.task = $task, j.task_runs = coalesce(j.task_runs, 0) + 1
RETURN j.id AS id, j.task_runs AS runs
