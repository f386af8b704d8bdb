// How many neurons each cluster of a partition has in every layer: which layers a module spans, and where it is
// thickest. One row per cluster; per_layer lists its neuron counts in layer order over every layer of the
// model, zeros included (per_layer[i] belongs to the i-th layer of admin.model_layers).
//
// mode: read
// param partition: str   the partition's id
// returns: cluster: int, size: int, first_layer: str, last_layer: str, n_layers: int, thickest_layer: str, thickest: int, per_layer: list[int]
MATCH (p:Partition {id: $partition})
MATCH (:Model {name: p.model})-[:HAS_LAYER]->(l:Layer)
WITH p, l ORDER BY l.index
WITH p, collect(l) AS model_layers
MATCH (p)-[:HAS_CLUSTER]->(c:Cluster)<-[:IN_CLUSTER]-(n)
WITH model_layers, c, n.layer AS layer, count(*) AS members
ORDER BY c.index, layer
WITH model_layers, c, collect(layer) AS layers, collect(members) AS counts
// ties go to the earlier layer
WITH model_layers, c, layers, counts,
     reduce(best = 0, i IN range(0, size(counts) - 1) | CASE WHEN counts[i] > counts[best] THEN i ELSE best END) AS top
RETURN c.index AS cluster, c.size AS size,
       [l IN model_layers WHERE l.index = head(layers) | l.name][0] AS first_layer,
       [l IN model_layers WHERE l.index = last(layers) | l.name][0] AS last_layer,
       size(layers) AS n_layers,
       [l IN model_layers WHERE l.index = layers[top] | l.name][0] AS thickest_layer,
       counts[top] AS thickest,
       [l IN model_layers | coalesce(counts[[j IN range(0, size(layers) - 1) WHERE layers[j] = l.index][0]], 0)]
         AS per_layer
ORDER BY cluster
