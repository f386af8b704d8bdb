// Create a partition of one model with its settings and statistics (inside the partition's one transaction).
//
// mode: write
// param model: str   the model's name
// param id: str      the partition's id
// param props: map   k, method, edges, layers, seed, ncut, null statistics, timings …
// returns: id: str
MATCH (m:Model {name: $model})
CREATE (m)-[:HAS_PARTITION]->(p:Partition {id: $id, model: $model, created_at: datetime()})
SET p += $props
RETURN p.id AS id
