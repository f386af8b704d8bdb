// The coherent modules of a partition: the sub-clusters whose neurons respond to one kind of input more than random
// same-size sets of the same layer do, in the partition's newest assessment of each coherence method
// (`neuronmap coherence`). One row per sub-cluster and method whose p-value, BH-adjusted over the sub-clusters, is
// below alpha. A sub-cluster's p-value is the smallest of its statistics' percentile p-values times their number
// (statistic names it): entropy — of the network's output at the input optimised to excite the sub-cluster
// (coherence_features) or of the labels of the data-set inputs that excite it most (coherence_examples), lower
// than random is coherent; activation — the objective reached or the top inputs' mean activation, higher is
// coherent; similarity (examples only) — the top inputs' mean pairwise cosine similarity, higher is coherent.
//
// mode: read
// param partition: str         the partition's id
// param alpha: float = 0.05    the false discovery rate the adjusted p-values are held to
// param method: str = null     coherence_features, coherence_examples, coherence_logits or coherence_inputs (transformers, methods.md §11.3); null: all
// returns: method: str, cluster: int, layer: str, size: int, statistic: str, p_value: float, p_adjusted: float, entropy: float, null_entropy_mean: float, p_entropy_adjusted: float, activation: float, null_activation_mean: float, p_activation_adjusted: float, p_similarity_adjusted: float, network_fisher_p: float, n_null: int, dataset: str, assessment: str
MATCH (:Partition {id: $partition})-[:HAS_ASSESSMENT]->(a:Assessment)
WHERE a.method IN ['coherence_features', 'coherence_examples', 'coherence_logits', 'coherence_inputs'] AND ($method IS NULL OR a.method = $method)
WITH a ORDER BY a.created_at DESC, a.id DESC
WITH a.method AS method, collect(a)[0] AS a
MATCH (a)-[r:SCORED]->(s:SubCluster)
WHERE r.p_adjusted < $alpha
RETURN method, s.cluster AS cluster, s.layer_name AS layer, s.size AS size, r.statistic AS statistic,
       r.p_value AS p_value, r.p_adjusted AS p_adjusted, r.entropy AS entropy,
       r.null_entropy_mean AS null_entropy_mean, r.p_entropy_adjusted AS p_entropy_adjusted,
       r.activation AS activation, r.null_activation_mean AS null_activation_mean,
       r.p_activation_adjusted AS p_activation_adjusted, r.p_similarity_adjusted AS p_similarity_adjusted,
       a.fisher_p AS network_fisher_p, a.n_null AS n_null, a.dataset AS dataset, a.id AS assessment
ORDER BY method, p_adjusted, s.layer, cluster
