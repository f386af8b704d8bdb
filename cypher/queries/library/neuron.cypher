// One neuron, named by layer (its name, or its index as layer_index) and unit, or by ordinal: its cluster in every
// partition of its model, then its strongest incoming and outgoing weight edges (by |w|), each marked within (same
// cluster) or across modules in the marking partition. One row per item, told apart by kind: 'neuron' (w is its bias),
// 'member' (a partition, newest first, with the neuron's cluster there and that cluster's size n), 'in' and
// 'out' (the other end's layer, unit and ordinal, its cluster in the marking partition, the signed w, and within:
// whether both ends share a cluster there). No rows: there is no such neuron.
//
// mode: read
// param model: str              the model's name
// param layer: str = null       the layer's name (with unit)
// param layer_index: int = null (>= 0)   the layer's index, instead of its name (with unit)
// param unit: int = null (>= 0)   unit index within the layer
// param ordinal: int = null (>= 0)   the neuron's ordinal (instead of layer and unit)
// param partition: str = null   the partition whose clusters mark edges as within or across; null: no marking
// param limit: int = 5 (>= 0)   edges shown per direction
// returns: kind: str, rank: int, layer: str, unit: int, ordinal: int, partition: str, cluster: int, n: int, w: float, within: bool
MATCH (:Model {name: $model})-[:HAS_LAYER]->(l:Layer)
WITH l ORDER BY l.index
WITH collect(l) AS model_layers
// the ordinal of (layer, unit): the sizes of the layers before it, plus the unit
WITH model_layers, [i IN range(0, size(model_layers) - 1)
                    WHERE model_layers[i].name = $layer OR model_layers[i].index = $layer_index] AS hit
WITH model_layers,
     CASE WHEN $ordinal IS NOT NULL THEN $ordinal
          WHEN size(hit) > 0 AND $unit IS NOT NULL AND 0 <= $unit < model_layers[hit[0]].size
          THEN reduce(s = 0, x IN model_layers[0..hit[0]] | s + x.size) + $unit END AS target
MATCH (n:Neuron {model: $model, ordinal: target})
OPTIONAL MATCH (n)-[:IN_CLUSTER]->(mark:Cluster {partition: $partition})
CALL (n, mark, model_layers) {
  RETURN 'neuron' AS kind, 0 AS rank, n AS other, null AS partition, null AS cluster, null AS size, n.bias AS w,
         null AS within
  UNION ALL
  MATCH (n)-[:IN_CLUSTER]->(c:Cluster)<-[:HAS_CLUSTER]-(p:Partition)
  WITH n, c, p ORDER BY p.created_at DESC, p.id
  WITH n, collect([c, p]) AS memberships
  UNWIND range(0, size(memberships) - 1) AS i
  RETURN 'member' AS kind, i + 1 AS rank, n AS other, memberships[i][1].id AS partition,
         memberships[i][0].index AS cluster, memberships[i][0].size AS size, null AS w, null AS within
  UNION ALL
  MATCH (s:Neuron)-[e:WEIGHT]->(n)
  WITH s, e ORDER BY abs(e.w) DESC, s.ordinal LIMIT $limit
  WITH collect([s, e.w]) AS edges
  UNWIND range(0, size(edges) - 1) AS i
  WITH i, edges[i][0] AS s, edges[i][1] AS w
  OPTIONAL MATCH (s)-[:IN_CLUSTER]->(sc:Cluster {partition: $partition})
  RETURN 'in' AS kind, i + 1 AS rank, s AS other, $partition AS partition, sc.index AS cluster, null AS size, w,
         CASE WHEN mark IS NULL OR sc IS NULL THEN null ELSE sc = mark END AS within
  UNION ALL
  MATCH (n)-[e:WEIGHT]->(t:Neuron)
  WITH t, e ORDER BY abs(e.w) DESC, t.ordinal LIMIT $limit
  WITH collect([t, e.w]) AS edges
  UNWIND range(0, size(edges) - 1) AS i
  WITH i, edges[i][0] AS t, edges[i][1] AS w
  OPTIONAL MATCH (t)-[:IN_CLUSTER]->(tc:Cluster {partition: $partition})
  RETURN 'out' AS kind, i + 1 AS rank, t AS other, $partition AS partition, tc.index AS cluster, null AS size, w,
         CASE WHEN mark IS NULL OR tc IS NULL THEN null ELSE tc = mark END AS within
}
RETURN kind, rank, [l IN model_layers WHERE l.index = other.layer | l.name][0] AS layer, other.index AS unit,
       other.ordinal AS ordinal, partition, cluster, size AS n, w, within
ORDER BY CASE kind WHEN 'neuron' THEN 0 WHEN 'member' THEN 1 WHEN 'in' THEN 2 ELSE 3 END, rank
