// Queue a clustering job for `neuronmap serve`; the config is the ClusterConfig as JSON.
//
// mode: write
// param id: str       the job's id
// param model: str    the model to cluster
// param config: str   ClusterConfig as JSON
// returns: id: str
CREATE (j:Job {id: $id, model: $model, config: $config, status: 'queued', created_at: datetime()})
RETURN j.id AS id
