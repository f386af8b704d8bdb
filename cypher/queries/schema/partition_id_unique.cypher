// A partition's id is unique in the store.
//
// mode: write
// returns: nothing
CREATE CONSTRAINT partition_id_unique IF NOT EXISTS FOR (p:Partition) REQUIRE p.id IS UNIQUE
