// The Laplacian eigenvalues stored on a partition (ascending), for the eigengap plot that helps choose k; null
// when the partition was stored without them. No row: there is no such partition.
//
// mode: read
// param partition: str   the partition's id
// returns: eigenvalues: list[float]
MATCH (p:Partition {id: $partition})
RETURN p.eigenvalues AS eigenvalues
