"""The runs: the one place that pulls from the store, computes, and writes back (clustering and assessments)."""

from neuronmap.service.runs.assessment import (
    CoherenceRun,
    Pulled,
    pull,
    run_coherence,
    run_double_lesion,
    run_example_coherence,
    run_feature_coherence,
    run_importance,
)
from neuronmap.service.runs.clustering import ClusterConfig, PartitionResult, pull_for, run_clustering

__all__ = [
    "ClusterConfig",
    "CoherenceRun",
    "PartitionResult",
    "Pulled",
    "pull",
    "pull_for",
    "run_clustering",
    "run_coherence",
    "run_double_lesion",
    "run_example_coherence",
    "run_feature_coherence",
    "run_importance",
]
