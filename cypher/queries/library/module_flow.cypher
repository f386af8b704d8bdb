// How much weight passes between the clusters of a partition, per pair of layers (source layer → target layer):
// do modules run as vertical channels, or pass information sideways? The weight is that of the graph the partition
// was cut from: the summed |w| of its weight edges (those of at least the partition's min_weight), or the summed r²
// of its activation graph's correlation edges, which also join neurons of one layer and run from the lower ordinal
// to the higher. One row per (layer pair, source cluster, target cluster) with at least one edge.
// share_out = weight / (all the weight that src_cluster's neurons in src_layer send to clustered neurons of
// dst_layer); share_in = weight / (all the weight that dst_cluster's neurons in dst_layer receive from clustered
// neurons of src_layer). Only edges with both ends in the partition count (a layer-range partition ignores the
// rest).
//
// mode: read
// param partition: str   the partition's id
// returns: src_layer: str, dst_layer: str, src_cluster: int, dst_cluster: int, weight: float, n_edges: int, share_out: float, share_in: float
MATCH (p:Partition {id: $partition})
// The partition's own edges, one branch per kind of graph. Both ends are reached from the partition and joined on
// the target neuron: the clusters' members are hashed once, and each edge then costs one probe instead of a walk to
// its target's clusters.
CALL (p) {
  WITH p WHERE coalesce(p.edges, 'weight') = 'weight'
  MATCH (p)-[:HAS_CLUSTER]->(ca:Cluster)<-[:IN_CLUSTER]-(a)-[e:WEIGHT]->(b)
  MATCH (p)-[:HAS_CLUSTER]->(cb:Cluster)<-[:IN_CLUSTER]-(b)
  USING JOIN ON b
  WITH p, a, b, ca, cb, abs(e.w) AS w
  WHERE w >= coalesce(p.min_weight, 0.0)
  RETURN a.layer AS src, b.layer AS dst, ca.index AS src_cluster, cb.index AS dst_cluster, sum(w) AS weight,
         count(*) AS n_edges
  UNION ALL
  WITH p WHERE coalesce(p.edges, 'weight') <> 'weight'
  MATCH (p)-[:HAS_CLUSTER]->(ca:Cluster)<-[:IN_CLUSTER]-(a)-[e:CORRELATION {graph: p.edges}]->(b)
  MATCH (p)-[:HAS_CLUSTER]->(cb:Cluster)<-[:IN_CLUSTER]-(b)
  USING JOIN ON b
  RETURN a.layer AS src, b.layer AS dst, ca.index AS src_cluster, cb.index AS dst_cluster, sum(e.r2) AS weight,
         count(*) AS n_edges
}
WITH p.model AS model, src, dst, collect({src_cluster: src_cluster, dst_cluster: dst_cluster, weight: weight,
                                          n_edges: n_edges}) AS cells
MATCH (sl:Layer {model: model, index: src})
MATCH (dl:Layer {model: model, index: dst})
UNWIND cells AS cell
WITH sl, dl, src, dst, cell,
     reduce(s = 0.0, x IN cells | s + CASE WHEN x.src_cluster = cell.src_cluster THEN x.weight ELSE 0.0 END) AS out_total,
     reduce(s = 0.0, x IN cells | s + CASE WHEN x.dst_cluster = cell.dst_cluster THEN x.weight ELSE 0.0 END) AS in_total
RETURN sl.name AS src_layer, dl.name AS dst_layer, cell.src_cluster AS src_cluster, cell.dst_cluster AS dst_cluster,
       cell.weight AS weight, cell.n_edges AS n_edges,
       CASE WHEN out_total > 0 THEN cell.weight / out_total ELSE 0.0 END AS share_out,
       CASE WHEN in_total > 0 THEN cell.weight / in_total ELSE 0.0 END AS share_in
ORDER BY src, dst, src_cluster, dst_cluster
