// The core of each cluster: its `limit` neurons with the most within-cluster weight (the summed |w| of their
// edges, in or out, to neurons of the same cluster), strongest first. degree is the neuron's summed |w| over all
// its edges in the model, so within / degree (within_share) says how much of it stays inside its module.
//
// mode: read
// param partition: str      the partition's id
// param limit: int = 5 (>= 1)   neurons per cluster
// returns: cluster: int, rank: int, layer: str, unit: int, ordinal: int, within: float, n_within: int, degree: float, within_share: float
MATCH (p:Partition {id: $partition})-[:HAS_CLUSTER]->(ca:Cluster)<-[:IN_CLUSTER]-(a)-[e:WEIGHT]->(b)
// the join of module_flow: each edge costs one hash probe for its target's cluster
MATCH (:Partition {id: $partition})-[:HAS_CLUSTER]->(cb:Cluster)<-[:IN_CLUSTER]-(b)
USING JOIN ON b
WITH p, ca, cb, a, b, e
WHERE ca = cb
// a within-cluster edge counts for both of its ends
UNWIND [a, b] AS n
WITH p, ca AS c, n, sum(abs(e.w)) AS within, count(*) AS n_within
WITH p, c, n, within, n_within ORDER BY within DESC, n.ordinal
WITH p, c, collect({n: n, within: within, n_within: n_within})[0..$limit] AS top
UNWIND range(0, size(top) - 1) AS i
WITH p, c, i, top[i].n AS n, top[i].within AS within, top[i].n_within AS n_within
MATCH (l:Layer {model: p.model, index: n.layer})
// the full degree only for the few neurons shown
WITH c, i, l, n, within, n_within, COLLECT { MATCH (n)-[f:WEIGHT]-() RETURN abs(f.w) } AS weights
WITH c, i, l, n, within, n_within, reduce(s = 0.0, w IN weights | s + w) AS degree
RETURN c.index AS cluster, i + 1 AS rank, l.name AS layer, n.index AS unit, n.ordinal AS ordinal,
       within, n_within, degree, CASE WHEN degree > 0 THEN within / degree ELSE 0.0 END AS within_share
ORDER BY cluster, rank
