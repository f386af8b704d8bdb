// How a model's edges are stored: in packed EDGE_BLOCK chunks always (models ingested by older versions lack
// them, and pulls fall back to the relationships), and as WEIGHT relationships unless ingested with
// --no-relationships. A model written before the flag existed has its relationships: true.
//
// mode: read
// param model: str   the model's name
// returns: weight_relationships: bool
MATCH (m:Model {name: $model})
RETURN coalesce(m.weight_relationships, true) AS weight_relationships
