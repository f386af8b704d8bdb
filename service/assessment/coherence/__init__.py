"""Coherence of sub-clusters: feature visualisation, data-set examples and their image sheets."""
