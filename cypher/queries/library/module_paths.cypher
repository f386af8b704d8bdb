// The strongest path through each module, found greedily: start at the cluster's neuron in its first layer with
// the most within-cluster outgoing weight, then follow, layer by layer, the heaviest outgoing edge that stays inside
// the cluster, until the cluster's last layer or a neuron with no such edge (complete is then false). The weights
// are those of the graph the partition was cut from: |w| of the weight edges (those of at least the partition's
// min_weight), or r² of its activation graph's correlation edges that lead to a later layer. Greedy, not the max-sum
// or max-product path: each step looks one edge ahead. At most one step per layer the cluster spans, so the walk is
// bounded by the model's depth.
//
// mode: read
// param partition: str   the partition's id
// returns: cluster: int, first_layer: str, last_layer: str, length: int, complete: bool, total: float, weakest: float, path: list[str], ordinals: list[int], weights: list[float]
MATCH (p:Partition {id: $partition})
// each member's within-cluster out-strength and its heaviest within-cluster out-edge (the walk's next step), on the
// partition's own edges: one branch per kind of graph, joined on the target neuron as in module_flow
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
  WHERE ca = cb AND b.layer > a.layer
  RETURN ca, a, b, w
}
WITH ca AS c, a, sum(w) AS strength, collect({n: b, w: w}) AS outs
WITH c, a, strength, reduce(best = null, o IN outs | CASE WHEN best IS NULL OR o.w > best.w THEN o ELSE best END) AS next
WITH c, collect({a: a, strength: strength, next: next}) AS steps
WITH collect({c: c, steps: steps}) AS by_cluster
// every cluster gets a row, also one without within-cluster edges
MATCH (p:Partition {id: $partition})-[:HAS_CLUSTER]->(c:Cluster)
WITH p, c, coalesce([x IN by_cluster WHERE x.c = c | x.steps][0], []) AS steps
CALL (c) {
  MATCH (c)<-[:IN_CLUSTER]-(n)
  WITH n ORDER BY n.layer, n.ordinal
  RETURN head(collect(n)) AS fallback, max(n.layer) AS last
}
WITH p, c, steps, last, fallback.layer AS first,
     reduce(best = null, x IN steps | CASE WHEN x.a.layer = fallback.layer AND (best IS NULL OR x.strength > best.strength)
                                          THEN x ELSE best END).a AS start, fallback
WITH p, c, first, last, steps,
     reduce(walk = [{n: coalesce(start, fallback), w: null}], i IN range(1, last - first) |
       CASE WHEN last(walk).n.layer >= last THEN walk
            ELSE walk + [x IN steps WHERE x.a = last(walk).n | x.next][0..1] END) AS walk
MATCH (:Model {name: p.model})-[:HAS_LAYER]->(l:Layer)
WITH c, first, last, walk, collect(l) AS model_layers
WITH c, first, last, walk, model_layers, [x IN tail(walk) | x.w] AS weights
RETURN c.index AS cluster,
       [l IN model_layers WHERE l.index = first | l.name][0] AS first_layer,
       [l IN model_layers WHERE l.index = last | l.name][0] AS last_layer,
       size(walk) - 1 AS length, last(walk).n.layer = last AS complete,
       reduce(s = 0.0, w IN weights | s + w) AS total,
       reduce(m = null, w IN weights | CASE WHEN m IS NULL OR w < m THEN w ELSE m END) AS weakest,
       [x IN walk | [l IN model_layers WHERE l.index = x.n.layer | l.name][0] + ':' + toString(x.n.index)] AS path,
       [x IN walk | x.n.ordinal] AS ordinals, weights
ORDER BY cluster
