// Remove one model in a single statement (for scripts and cypher-shell; `neuronmap drop` runs the same steps one
// named query at a time, so that Ctrl-C is honoured between batches). Like a drop: the model is marked
// 'deleting' in its own first transaction; each partition goes in one transaction; the neurons' relationships go
// in batches of 10,000 relationships (a transaction's memory follows the relationships it touches, not the
// neurons); then the neurons in batches; then activation graphs, layers, leases and the model node.
//
// mode: autocommit
// param model: str   the model's name
// returns: deleted: int
CALL () {
  OPTIONAL MATCH (m:Model {name: $model})
  SET m.status = 'deleting', m.deleting_since = datetime()
  WITH m
  OPTIONAL MATCH (g:ActivationGraph {model: $model})
  SET g.status = 'deleting'
} IN TRANSACTIONS
WITH 1 AS start
MATCH (p:Partition {model: $model})
CALL (p) {
  OPTIONAL MATCH (p)-[:HAS_CLUSTER]->(c:Cluster)
  OPTIONAL MATCH (c)-[:HAS_SUBCLUSTER]->(s:SubCluster)
  OPTIONAL MATCH (p)-[:HAS_ASSESSMENT]->(a:Assessment)
  DETACH DELETE s, a, c, p
} IN TRANSACTIONS OF 1 ROW
WITH count(*) AS partitions
// Batches that look their relationships up themselves: a MATCH outside the subquery would be read in full first
// (an eager read of every relationship, in one transaction's memory), which is what this avoids.
OPTIONAL MATCH (a:Neuron {model: $model})
WHERE a.ordinal >= 0
WITH sum(COUNT { (a)-->() }) AS relationships, count(a) AS neurons
UNWIND range(0, toInteger(ceil(relationships / 10000.0))) AS batch  // one more than needed: never no row
CALL () {
  MATCH (a:Neuron {model: $model})-[r]->()
  WHERE a.ordinal >= 0
  WITH r LIMIT 10000
  DELETE r
} IN TRANSACTIONS OF 1 ROW
WITH DISTINCT neurons
UNWIND range(0, toInteger(ceil(neurons / 10000.0))) AS batch
CALL () {
  MATCH (n:Neuron {model: $model})
  WHERE n.ordinal >= 0
  WITH n LIMIT 10000
  DETACH DELETE n
} IN TRANSACTIONS OF 1 ROW
WITH DISTINCT neurons AS deleted
CALL (deleted) {
  CALL () {
    MATCH (g:ActivationGraph {model: $model})
    DETACH DELETE g
  }
  CALL () {
    MATCH (l:Layer {model: $model})
    WHERE l.index >= 0
    DETACH DELETE l
  }
  CALL () {
    MATCH (x:Lease {model: $model})
    DELETE x
  }
  OPTIONAL MATCH (m:Model {name: $model})
  DETACH DELETE m
} IN TRANSACTIONS
RETURN deleted
