// The layer span a partition was cut from ("first:last" by layer name), and its model's arch, graph and family.
//
// mode: read
// param partition: str   the partition's id
// returns: layers: str, arch: str, graph: str, family: str
MATCH (m:Model)-[:HAS_PARTITION]->(p:Partition {id: $partition})
RETURN p.layers AS layers, m.arch AS arch, m.graph AS graph, m.family AS family
