// The important modules of a partition: the sub-clusters (a cluster's neurons within one hidden layer) whose lesion
// cut accuracy more than lesions of random same-size sets of the same layer, in the partition's newest importance
// assessment (`neuronmap importance`): their Benjamini–Hochberg adjusted percentile p-value is below alpha. Most
// harmful first. delta_accuracy is the change of test accuracy with the sub-cluster silenced, null_delta_mean the
// mean change over the random sets; p_range tests class-specificity (the range statistic); category is the
// reference's taxonomy (complete, small, important, prunable, …; methods.md §5). No rows: no sub-cluster passed, or
// the partition has no importance assessment yet.
//
// mode: read
// param partition: str         the partition's id
// param alpha: float = 0.05    the false discovery rate the adjusted p-values are held to
// returns: cluster: int, layer: str, size: int, accuracy: float, delta_accuracy: float, null_delta_mean: float, p_value: float, p_adjusted: float, p_range: float, category: str, network_fisher_p: float, n_null: int, dataset: str, assessment: str
MATCH (:Partition {id: $partition})-[:HAS_ASSESSMENT]->(a:Assessment {method: 'importance'})
WITH a ORDER BY a.created_at DESC, a.id DESC LIMIT 1
MATCH (a)-[r:SCORED]->(s:SubCluster)
WHERE r.p_adjusted < $alpha
RETURN s.cluster AS cluster, s.layer_name AS layer, s.size AS size, r.accuracy AS accuracy,
       r.delta_accuracy AS delta_accuracy, r.null_delta_mean AS null_delta_mean, r.p_value AS p_value,
       r.p_adjusted AS p_adjusted, r.p_range AS p_range, r.category AS category, a.fisher_p AS network_fisher_p,
       a.n_null AS n_null, a.dataset AS dataset, a.id AS assessment
ORDER BY delta_accuracy, s.layer, cluster
