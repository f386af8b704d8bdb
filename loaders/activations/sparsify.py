"""Edges from a correlation matrix: each pair once, lower ordinal → higher ordinal, within and across layers.

A complete graph has n(n−1)/2 edges; ``min_r2`` keeps edges with r² ≥ min_r2 and ``top_k`` each neuron's k
strongest partners. The edge weight clustering uses is r² (the reference's squared Spearman); the signed r is
kept too. :func:`count_edges` tells how many edges a choice gives without building them.
"""

from __future__ import annotations

import numpy as np
import torch

from neuronmap.loaders.activations.correlate import ActivationCorrelations, ActivationEdges
from neuronmap.loaders.errors import ActivationError


def _check_sparsity(min_r2: float, top_k: int | None) -> None:
    if isinstance(min_r2, bool) or not isinstance(min_r2, (int, float)) or not 0.0 <= float(min_r2) <= 1.0:
        raise ActivationError(f"min_r2={min_r2!r} must be a number in [0, 1]; 0 keeps every pair.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ActivationError(f"top_k={top_k!r} must be a positive int, or None to keep every neuron's partners.")


def _keep_mask(r2: torch.Tensor, min_r2: float, top_k: int | None, row_chunk: int = 1024) -> torch.Tensor:
    """(n, n) bool, symmetric, False on the diagonal: the pairs :func:`sparsify` keeps."""
    n = r2.shape[0]
    keep = r2 >= float(min_r2)
    keep.fill_diagonal_(False)
    if top_k is not None and top_k < n - 1:
        chosen = torch.zeros(n, n, dtype=torch.bool)
        for lo in range(0, n, row_chunk):
            rows = r2[lo : lo + row_chunk].clone()
            rows[torch.arange(rows.shape[0]), torch.arange(lo, lo + rows.shape[0])] = -1.0  # never one's own partner
            # A stable sort makes ties go to the lower ordinal, so the choice is reproducible.
            order = torch.sort(rows, dim=1, descending=True, stable=True).indices[:, :top_k]
            chosen[lo : lo + rows.shape[0]].scatter_(1, order, True)
        keep &= chosen | chosen.T
    return keep


def sparsify(corr: ActivationCorrelations, *, min_r2: float = 0.0, top_k: int | None = None) -> ActivationEdges:
    """The edges of the correlation graph, lower ordinal → higher ordinal, once per pair.

    Parameters
    ----------
    corr : ActivationCorrelations
    min_r2 : float, default=0.0
        Keep pairs with r² ≥ min_r2 (0 keeps all n(n−1)/2 pairs, the reference's complete graph).
    top_k : int, optional
        Keep, for every neuron, its ``top_k`` partners of largest r² (ties to the lower ordinal); a pair stays if
        either end keeps it, so the graph has between n·k/2 and n·k edges before ``min_r2`` applies. None keeps
        all.

    Returns
    -------
    ActivationEdges
        Sorted by (src, dst).
    """
    _check_sparsity(min_r2, top_k)
    r = corr.r.to(torch.float64)
    r2 = r * r
    keep = torch.triu(_keep_mask(r2, min_r2, top_k), diagonal=1)
    i, j = torch.nonzero(keep, as_tuple=True)  # row-major: sorted by (i, j), and ordinals ascend with the index
    ordinals = torch.from_numpy(np.asarray(corr.ordinals, dtype=np.int64))
    return ActivationEdges(
        layers=corr.layers,
        recorded=list(corr.recorded),
        ordinals=corr.ordinals,
        excluded=corr.excluded,
        src=ordinals[i].numpy(),
        dst=ordinals[j].numpy(),
        r=r[i, j].numpy(),
        r2=r2[i, j].numpy(),
        min_r2=float(min_r2),
        top_k=top_k,
        meta=corr.meta,
    )


def count_edges(corr: ActivationCorrelations, *, min_r2: float = 0.0, top_k: int | None = None) -> int:
    """How many edges :func:`sparsify` would keep, without building them (for previews and progress bars)."""
    _check_sparsity(min_r2, top_k)
    r2 = corr.r.to(torch.float64) ** 2
    return int(torch.triu(_keep_mask(r2, min_r2, top_k), diagonal=1).sum())
