// Create the WEIGHT edges from one layer to another, each with its named parts beside w: a gated MLP's v_gate
// and v_up (methods.md §10). As ingest.create_edges, plus one list per part name in each row, aligned with w;
// the part names come from the loader, never from a user, and become property keys.
//
// mode: write
// param model: str       the model's name
// param src_lo: int      the ordinal of the batch's first source neuron
// param src_hi: int      the ordinal of its last source neuron (inclusive)
// param src_first: int   the unit index (within its layer) of the first source neuron: rows' src minus this
//                        index the sources
// param dst_lo: int      the ordinal of the target layer's unit 0
// param dst_hi: int      the ordinal of the target layer's last unit (inclusive)
// param parts: list      the part names, e.g. ["v_gate", "v_up"]
// param rows: list       maps: src (unit index), dst (list of unit indices), w (list of weights), parts (lists)
// returns: created: int   (source rows)
MATCH (s:Neuron) USING INDEX s:Neuron(model, ordinal)
WHERE s.model = $model AND s.ordinal >= $src_lo AND s.ordinal <= $src_hi
WITH s ORDER BY s.ordinal
WITH collect(s) AS sources
MATCH (t:Neuron) USING INDEX t:Neuron(model, ordinal)
WHERE t.model = $model AND t.ordinal >= $dst_lo AND t.ordinal <= $dst_hi
WITH sources, t ORDER BY t.ordinal
WITH sources, collect(t) AS targets
UNWIND $rows AS row
WITH sources[row.src - $src_first] AS s, [d IN row.dst | targets[d]] AS ts, row.w AS ws, row.parts AS ps
FOREACH (i IN range(0, size(ts) - 1) | FOREACH (t IN [ts[i]] |
  CREATE (s)-[e:WEIGHT {w: ws[i]}]->(t)
  FOREACH (p IN range(0, size($parts) - 1) | SET e[$parts[p]] = ps[p][i])))
RETURN count(*) AS created
