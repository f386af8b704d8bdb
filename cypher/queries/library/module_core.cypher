// The core of each cluster: its `limit` neurons with the most within-cluster weight (the summed weight of their
// edges, in or out, to neurons of the same cluster), strongest first, on the graph the partition was cut from: |w|
// of the weight edges (those of at least the partition's min_weight), or r² of its activation graph's correlation
// edges. degree is the neuron's summed weight over all its edges of that graph, so within / degree (within_share)
// says how much of it stays inside its module.
//
// mode: read
// param partition: str      the partition's id
// param limit: int = 5 (>= 1)   neurons per cluster
// returns: cluster: int, rank: int, layer: str, unit: int, ordinal: int, within: float, n_within: int, degree: float, within_share: float
MATCH (p:Partition {id: $partition})
// The partition's within-cluster edges, one branch per kind of graph, joined on the target neuron (as module_flow).
CALL (p) {
  WITH p WHERE coalesce(p.edges, 'weight') = 'weight'
  MATCH (p)-[:HAS_CLUSTER]->(ca:Cluster)<-[:IN_CLUSTER]-(a)-[e:WEIGHT]->(b)
  MATCH (p)-[:HAS_CLUSTER]->(cb:Cluster)<-[:IN_CLUSTER]-(b)
  USING JOIN ON b
  WITH p, ca, cb, a, b, abs(e.w) AS w
  WHERE ca = cb AND w >= coalesce(p.min_weight, 0.0)
  RETURN ca, a, b, w
  UNION ALL
  WITH p WHERE coalesce(p.edges, 'weight') <> 'weight'
  MATCH (p)-[:HAS_CLUSTER]->(ca:Cluster)<-[:IN_CLUSTER]-(a)-[e:CORRELATION {graph: p.edges}]->(b)
  MATCH (p)-[:HAS_CLUSTER]->(cb:Cluster)<-[:IN_CLUSTER]-(b)
  USING JOIN ON b
  WITH ca, cb, a, b, e.r2 AS w
  WHERE ca = cb
  RETURN ca, a, b, w
}
// a within-cluster edge counts for both of its ends
UNWIND [a, b] AS n
WITH p, ca AS c, n, sum(w) AS within, count(*) AS n_within
WITH p, c, n, within, n_within ORDER BY within DESC, n.ordinal
WITH p, c, collect({n: n, within: within, n_within: n_within})[0..$limit] AS top
UNWIND range(0, size(top) - 1) AS i
WITH p, c, i, top[i].n AS n, top[i].within AS within, top[i].n_within AS n_within
MATCH (l:Layer {model: p.model, index: n.layer})
// the full degree, on the partition's graph, only for the few neurons shown (each branch gives one row: the
// other branch's is 0)
CALL (p, n) {
  WITH p, n WHERE coalesce(p.edges, 'weight') = 'weight'
  MATCH (n)-[f:WEIGHT]-()
  WITH p, abs(f.w) AS w
  WHERE w >= coalesce(p.min_weight, 0.0)
  RETURN sum(w) AS degree
  UNION ALL
  WITH p, n WHERE coalesce(p.edges, 'weight') <> 'weight'
  MATCH (n)-[f:CORRELATION {graph: p.edges}]-()
  RETURN sum(f.r2) AS degree
}
WITH c, i, l, n, within, n_within, sum(degree) AS degree
RETURN c.index AS cluster, i + 1 AS rank, l.name AS layer, n.index AS unit, n.ordinal AS ordinal,
       within, n_within, degree, CASE WHEN degree > 0 THEN within / degree ELSE 0.0 END AS within_share
ORDER BY cluster, rank
