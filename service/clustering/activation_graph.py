"""The layered adjacency of an activation (correlation) graph, from edges in memory or pulled from the store.

One dense block per pair of recorded layers, within-layer pairs included; a within-layer block is strictly upper
triangular, which BlockGraph reads as U + Uᵀ. Every pair of layers gets a block, so the graph and its upper-triangle
nulls share one layout (methods.md §2).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from neuronmap.options import EdgeWeight, choices
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.errors import ClusteringInputError

EDGE_WEIGHTS = choices(EdgeWeight)


def activation_block_graph(
    sizes: list[int],
    src: np.ndarray,
    dst: np.ndarray,
    weight: np.ndarray,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> BlockGraph:
    """The layered adjacency of a correlation graph from local edge indices.

    Parameters
    ----------
    sizes : list of int
        Nodes per layer, in node order.
    src, dst : np.ndarray of shape (n_edges,)
        Local node indices (0..n−1) with ``src < dst``, each pair at most once.
    weight : np.ndarray of shape (n_edges,)
        Non-negative edge weights (r² or |r|).

    Returns
    -------
    BlockGraph
        One block per pair of layers ``a <= b``, in the order (0,0), (0,1) … (1,1), (1,2) …; within-layer blocks
        strictly upper triangular.
    """
    src_t = torch.as_tensor(np.asarray(src, dtype=np.int64))
    dst_t = torch.as_tensor(np.asarray(dst, dtype=np.int64))
    w = torch.as_tensor(np.asarray(weight, dtype=np.float64))
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.int64)
    n = int(offsets[-1])
    if not (src_t.numel() == dst_t.numel() == w.numel()):
        raise ClusteringInputError(
            f"Edge arrays differ in length: {src_t.numel():,} sources, {dst_t.numel():,} "
            f"targets, {w.numel():,} weights."
        )
    if src_t.numel():
        if int(src_t.min()) < 0 or int(dst_t.max()) >= n:
            raise ClusteringInputError(f"An edge endpoint lies outside the graph's nodes 0..{n - 1}.")
        if bool((src_t >= dst_t).any()):
            raise ClusteringInputError(
                "Correlation edges must run from the lower node to the higher (src < dst), once per pair."
            )
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ClusteringInputError("Correlation edge weights must be finite and non-negative (r² or |r|).")
    src_layer = torch.searchsorted(offsets, src_t, right=True) - 1
    dst_layer = torch.searchsorted(offsets, dst_t, right=True) - 1
    n_layers = len(sizes)
    pair = src_layer * n_layers + dst_layer
    blocks = []
    for a in range(n_layers):
        for b in range(a, n_layers):
            block = torch.zeros(sizes[a], sizes[b], dtype=torch.float64)
            sel = pair == a * n_layers + b
            if bool(sel.any()):
                block[src_t[sel] - offsets[a], dst_t[sel] - offsets[b]] = w[sel]
            blocks.append((a, b, block.to(device=device, dtype=dtype)))
    return BlockGraph(sizes, blocks, validate=False)


def check_weight(weight: str) -> None:
    if weight not in EDGE_WEIGHTS:
        raise ClusteringInputError(
            f"weight={weight!r} is not one of 'r2' (the reference's squared correlation) or 'abs_r'."
        )


def edge_weight(r: np.ndarray, r2: np.ndarray, weight: str) -> np.ndarray:
    check_weight(weight)
    return r2 if weight == "r2" else np.abs(r)


def local_layout(offsets: np.ndarray, recorded: list[int], excluded: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Ordinals of the graph's nodes (recorded units minus the excluded ones) and the nodes per layer."""
    units = [np.setdiff1d(np.arange(offsets[i], offsets[i + 1]), excluded, assume_unique=True) for i in recorded]
    return (np.concatenate(units) if units else np.zeros(0, np.int64)).astype(np.int64), [u.size for u in units]


def block_graph_from_edges(edges: Any, *, weight: EdgeWeight = "r2") -> tuple[BlockGraph, np.ndarray]:
    """The in-memory twin of :func:`pull_activation_graph`: (BlockGraph, global ordinals of its nodes).

    ``edges`` is a :class:`neuronmap.loaders.activations.ActivationEdges` (before it is stored).
    """
    ordinals, sizes = local_layout(edges.offsets, list(edges.recorded), np.asarray(edges.excluded))
    src = np.searchsorted(ordinals, edges.src)
    dst = np.searchsorted(ordinals, edges.dst)
    graph = activation_block_graph(sizes, src, dst, edge_weight(edges.r, edges.r2, weight))
    return graph, ordinals
