// The transactions running now with the heap each one holds (Neo4j's estimate) and the named query it runs: what
// bench/drop.py samples to size write and delete batches against dbms.memory.transaction.total.max.
//
// mode: read
// returns: query: str, heap: int
SHOW TRANSACTIONS YIELD metaData, estimatedUsedHeapMemory
RETURN coalesce(metaData.query, '') AS query, estimatedUsedHeapMemory AS heap
