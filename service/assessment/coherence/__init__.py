"""Coherence of sub-clusters: feature visualisation, data-set examples and their image sheets (methods.md §6)."""

from neuronmap.service.assessment.coherence.examples import (
    assess_examples,
    layer_activations,
    mean_pairwise_cosine,
    top_examples,
)
from neuronmap.service.assessment.coherence.features import Renderer, assess_features, render_sets
from neuronmap.service.assessment.coherence.results import (
    CoherenceConfig,
    CoherenceResult,
    ExamplesConfig,
    FeatureConfig,
    SubClusterCoherence,
    qualifying,
)

__all__ = [
    "CoherenceConfig",
    "CoherenceResult",
    "ExamplesConfig",
    "FeatureConfig",
    "Renderer",
    "SubClusterCoherence",
    "assess_examples",
    "assess_features",
    "layer_activations",
    "mean_pairwise_cosine",
    "qualifying",
    "render_sets",
    "top_examples",
]
