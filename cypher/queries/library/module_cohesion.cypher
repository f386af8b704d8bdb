// How much of each cluster's edge weight stays inside it, on the graph the partition was cut from: |w| of the
// weight edges (those of at least the partition's min_weight), or r² of the correlation edges of its activation
// graph. Per cluster: the summed weight of the edges with both ends in it (within), of the edges leaving it (cut),
// its volume vol = 2·within + cut (the sum of its neurons' degrees), and its term of the n-cut,
// ncut_term = cut / (vol + 1e-8), as methods.md §3 defines it: the terms of all clusters add up to the partition's
// n-cut. Only edges with both ends in the partition count.
//
// mode: read
// param partition: str   the partition's id
// returns: cluster: int, size: int, within: float, cut: float, vol: float, ncut_term: float, n_within: int, n_cut: int
MATCH (p:Partition {id: $partition})
// The partition's own edges: one branch per kind of graph, each joined on the target neuron (the clusters' members
// are hashed once, and each edge then costs one probe for its target's cluster, not a walk to its clusters).
CALL (p) {
  WITH p WHERE coalesce(p.edges, 'weight') = 'weight'
  MATCH (p)-[:HAS_CLUSTER]->(ca:Cluster)<-[:IN_CLUSTER]-(a)-[e:WEIGHT]->(b)
  MATCH (p)-[:HAS_CLUSTER]->(cb:Cluster)<-[:IN_CLUSTER]-(b)
  USING JOIN ON b
  WITH p, ca, cb, abs(e.w) AS w
  WHERE w >= coalesce(p.min_weight, 0.0)
  RETURN ca, cb, sum(w) AS weight, count(*) AS n_edges
  UNION ALL
  WITH p WHERE coalesce(p.edges, 'weight') <> 'weight'
  MATCH (p)-[:HAS_CLUSTER]->(ca:Cluster)<-[:IN_CLUSTER]-(a)-[e:CORRELATION {graph: p.edges}]->(b)
  MATCH (p)-[:HAS_CLUSTER]->(cb:Cluster)<-[:IN_CLUSTER]-(b)
  USING JOIN ON b
  RETURN ca, cb, sum(e.r2) AS weight, count(*) AS n_edges
}
// an edge between two different clusters is cut for both of them
UNWIND CASE WHEN ca = cb THEN [[ca, 'within']] ELSE [[ca, 'cut'], [cb, 'cut']] END AS side
WITH side[0] AS c, side[1] AS kind, weight, n_edges
WITH c, sum(CASE kind WHEN 'within' THEN weight ELSE 0.0 END) AS within,
     sum(CASE kind WHEN 'cut' THEN weight ELSE 0.0 END) AS cut,
     sum(CASE kind WHEN 'within' THEN n_edges ELSE 0 END) AS n_within,
     sum(CASE kind WHEN 'cut' THEN n_edges ELSE 0 END) AS n_cut
WITH collect({c: c, within: within, cut: cut, n_within: n_within, n_cut: n_cut}) AS stats
// clusters without any edge still get their row, with zeros
MATCH (:Partition {id: $partition})-[:HAS_CLUSTER]->(c:Cluster)
WITH c, coalesce([s IN stats WHERE s.c = c][0], {within: 0.0, cut: 0.0, n_within: 0, n_cut: 0}) AS s
RETURN c.index AS cluster, c.size AS size, s.within AS within, s.cut AS cut, 2 * s.within + s.cut AS vol,
       s.cut / (2 * s.within + s.cut + 1e-8) AS ncut_term, s.n_within AS n_within, s.n_cut AS n_cut
ORDER BY cluster
