// One sub-cluster per (partition, cluster, layer); also the index behind every score write.
//
// mode: write
// returns: nothing
CREATE CONSTRAINT subcluster_key_unique IF NOT EXISTS
FOR (s:SubCluster) REQUIRE (s.partition, s.cluster, s.layer) IS UNIQUE
