"""Clustering numerics: the layered block graph, spectral clustering, n-cut, shuffled-network nulls and the
clusterability statistics. Pure PyTorch/NumPy; no database involved."""
