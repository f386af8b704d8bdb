// Partitions by model, for listing a model's partitions and finding the latest.
//
// mode: write
// returns: nothing
CREATE INDEX partition_model IF NOT EXISTS FOR (p:Partition) ON (p.model)
