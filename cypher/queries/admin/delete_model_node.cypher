// The last step of a drop, once the neurons are gone: the model's activation-graph nodes, any partition written
// while the drop ran, its layers, the leases of its activation graphs, and the model node itself.
//
// mode: write
// param model: str   the model's name
// returns: deleted: int
CALL () {
  MATCH (g:ActivationGraph {model: $model})
  DETACH DELETE g
}
CALL () {
  MATCH (p:Partition {model: $model})
  OPTIONAL MATCH (p)-[:HAS_CLUSTER]->(c:Cluster)
  OPTIONAL MATCH (c)-[:HAS_SUBCLUSTER]->(s:SubCluster)
  OPTIONAL MATCH (p)-[:HAS_ASSESSMENT]->(a:Assessment)
  DETACH DELETE s, a, c, p
}
CALL () {
  MATCH (l:Layer {model: $model})
  WHERE l.index >= 0
  DETACH DELETE l
}
CALL () {
  MATCH (x:Lease {model: $model})
  WHERE x.graph <> ''
  DELETE x
}
OPTIONAL MATCH (m:Model {name: $model})
DETACH DELETE m
RETURN count(m) AS deleted
