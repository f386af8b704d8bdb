// Queue a job for `neuronmap serve`: its kind, the model it reads and its settings as JSON.
//
// mode: write
// param id: str               the job's id
// param kind: str = "cluster"   cluster, importance, coherence or activations
// param model: str            the model it reads
// param config: str           the kind's settings as JSON (ClusterConfig for cluster)
// param sweep: str = ""       the sweep it belongs to ('' for none)
// returns: id: str
CREATE (j:Job {id: $id, kind: $kind, model: $model, config: $config, sweep: $sweep, status: 'queued',
               created_at: datetime()})
RETURN j.id AS id
