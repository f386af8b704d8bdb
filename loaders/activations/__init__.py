"""Activation graphs: record the units of a network over a data set, correlate them (Pearson or Spearman), and
keep the strongest pairs as edges. No database involved."""

from neuronmap.loaders.activations.correlate import (
    MEMORY_LIMIT,
    METHODS,
    ActivationCorrelations,
    ActivationEdges,
    ActivationMeta,
    Correlation,
    compute_correlations,
    correlate,
)
from neuronmap.loaders.activations.ranks import centered_ranks
from neuronmap.loaders.activations.record import POINTS, REDUCTIONS, ActivationRecorder, iter_inputs
from neuronmap.loaders.activations.sparsify import count_edges, sparsify

__all__ = [
    "MEMORY_LIMIT",
    "METHODS",
    "POINTS",
    "REDUCTIONS",
    "ActivationCorrelations",
    "ActivationEdges",
    "ActivationMeta",
    "ActivationRecorder",
    "Correlation",
    "centered_ranks",
    "compute_correlations",
    "correlate",
    "count_edges",
    "iter_inputs",
    "sparsify",
]
