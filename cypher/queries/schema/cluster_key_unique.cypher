// One cluster per (partition, index); also the index behind membership writes.
//
// mode: write
// returns: nothing
CREATE CONSTRAINT cluster_key_unique IF NOT EXISTS FOR (c:Cluster) REQUIRE (c.partition, c.index) IS UNIQUE
