// Which of a job's keyed results are in the store already (partitions and assessments by id), with their
// properties: a retried job finds what an earlier run of it wrote and does not write it again.
//
// mode: read
// param ids: list[str]   the result ids the job writes
// returns: id: str, props: map
UNWIND $ids AS result_id
OPTIONAL MATCH (p:Partition {id: result_id})
OPTIONAL MATCH (a:Assessment {id: result_id})
WITH result_id, coalesce(p, a) AS found
WHERE found IS NOT NULL
RETURN result_id AS id, properties(found) AS props
