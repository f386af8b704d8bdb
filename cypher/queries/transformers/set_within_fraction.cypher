// Store a transformer partition's within-cluster fraction C (the share of squared weight inside the clusters'
// blocks, Golechha et al. 2025) beside its no-structure level 1/k (methods.md §10.3).
//
// mode: write
// param partition: str        the partition's id
// param fraction: float       C = Σ_c ‖W[rows_c, cols_c]‖²_F / ‖W‖²_F over the partition's edges
// param no_structure: float   1/k, C's level when the clusters and W are unrelated
// returns: id: str
MATCH (p:Partition {id: $partition})
SET p.within_fraction = $fraction, p.within_fraction_no_structure = $no_structure
RETURN p.id AS id
