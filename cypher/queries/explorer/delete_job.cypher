// Remove one job from the queue by id (the HTTP tests remove the jobs they queue, so no worker picks them up).
//
// mode: write
// param id: str   the job's id
// returns: deleted: int
OPTIONAL MATCH (j:Job {id: $id})
DETACH DELETE j
RETURN count(j) AS deleted
