// Create the WEIGHT edges from one layer to another, each with its named parts beside w: a gated MLP's v_gate
// and v_up (methods.md §10). As ingest.create_edges, plus one list per part name in each row, aligned with w;
// the part names come from the loader, never from a user, and become property keys.
//
// mode: write
// param model: str       the model's name
// param src_layer: int   the source layer's index
// param dst_layer: int   the target layer's index
// param parts: list      the part names, e.g. ["v_gate", "v_up"]
// param rows: list       maps: src (unit index), dst (list of unit indices), w (list of weights), parts (lists)
// returns: created: int   (source rows)
MATCH (s:Neuron {model: $model, layer: $src_layer})
WITH s ORDER BY s.index
WITH collect(s) AS sources
MATCH (t:Neuron {model: $model, layer: $dst_layer})
WITH sources, t ORDER BY t.index
WITH sources, collect(t) AS targets
UNWIND $rows AS row
WITH sources[row.src] AS s, [d IN row.dst | targets[d]] AS ts, row.w AS ws, row.parts AS ps
FOREACH (i IN range(0, size(ts) - 1) | FOREACH (t IN [ts[i]] |
  CREATE (s)-[e:WEIGHT {w: ws[i]}]->(t)
  FOREACH (p IN range(0, size($parts) - 1) | SET e[$parts[p]] = ps[p][i])))
RETURN count(*) AS created
