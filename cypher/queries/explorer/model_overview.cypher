// Every model with what the explorer's store page adds to admin.list_models: the distinct kinds of its layers
// (input, linear, conv, residual: the family follows from them) and how many partitions it holds.
//
// mode: read
// returns: name: str, kinds: list[str], n_partitions: int
MATCH (m:Model)
RETURN m.name AS name,
       COLLECT { MATCH (m)-[:HAS_LAYER]->(l:Layer) RETURN DISTINCT l.kind } AS kinds,
       COUNT { (m)-[:HAS_PARTITION]->(:Partition) } AS n_partitions
ORDER BY name
