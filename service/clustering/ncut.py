"""The normalised cut of one partition or of many, batched (methods.md §3).

    ncut = Σ_c cut(C_c, V∖C_c) / (vol(C_c) + ε),   vol(C) = Σ_{i∈C} d_i

computed as vol = Hᵀd, assoc = diag(HᵀAH), ncut = Σ_c (vol_c − assoc_c)/(vol_c + ε) with one-hot H. Label −1
(a neuron dropped before clustering) belongs to no cluster. Sums run in float64 whatever the graph's dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.errors import ClusteringInputError

EPSILON = 1e-8  # the reference's ε: an empty cluster contributes 0 instead of 0/0

GraphLike = Any  # BlockGraph | ModelGraph | torch.Tensor (dense or sparse) | np.ndarray | scipy.sparse matrix


def _as_operator(graph: GraphLike) -> BlockGraph | torch.Tensor:
    """A BlockGraph, or a float64 torch adjacency (dense or sparse COO) for anything else."""
    if isinstance(graph, BlockGraph):
        return graph
    if hasattr(graph, "blocks") and hasattr(graph, "layers"):  # a loaders ModelGraph
        return BlockGraph.from_model_graph(graph)
    if sp.issparse(graph):
        coo = sp.coo_matrix(graph)
        idx = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64))
        adj = torch.sparse_coo_tensor(
            idx, torch.as_tensor(coo.data, dtype=torch.float64), coo.shape, check_invariants=False
        ).coalesce()
    elif isinstance(graph, torch.Tensor):
        adj = graph.to(torch.float64)
        if adj.layout not in (torch.strided, torch.sparse_coo):
            adj = adj.to_sparse_coo()
        if adj.is_sparse:
            adj = adj.coalesce()
    else:
        adj = torch.as_tensor(np.asarray(graph), dtype=torch.float64)
    if adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
        raise ClusteringInputError(f"An adjacency must be square, got shape {tuple(adj.shape)}.")
    return adj


def _n_nodes(op: BlockGraph | torch.Tensor) -> int:
    return op.n_nodes if isinstance(op, BlockGraph) else int(op.shape[0])


def _check_labels(labels: Any, n_nodes: int, n_clusters: int | None, device: torch.device) -> tuple[torch.Tensor, int]:
    lab = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
        if lab.is_floating_point() and bool((lab == lab.round()).all()):
            lab = lab.to(torch.int64)
        else:
            raise ClusteringInputError(f"Labels must be integers (−1 for no cluster), got {lab.dtype}.")
    lab = lab.to(device=device, dtype=torch.int64)
    if lab.dim() == 1:
        lab = lab.unsqueeze(0)
    if lab.dim() != 2 or lab.shape[1] != n_nodes:
        raise ClusteringInputError(
            f"Labels must have shape (n_nodes,) or (n_labelings, n_nodes) with "
            f"n_nodes = {n_nodes}, got {tuple(lab.shape)}."
        )
    if lab.numel() and int(lab.min()) < -1:
        raise ClusteringInputError(f"Labels must be ≥ −1 (−1 = no cluster), got {int(lab.min())}.")
    top = int(lab.max()) + 1 if lab.numel() else 0
    if n_clusters is None:
        n_clusters = max(top, 1)
    elif top > n_clusters:
        raise ClusteringInputError(f"A label {top - 1} is out of range for n_clusters={n_clusters}.")
    return lab, n_clusters


def _one_hot(labels: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """(n_labelings, n_nodes) int labels → (n_nodes, n_labelings, n_clusters) float64, zero rows for −1."""
    n_lab, n = labels.shape
    onehot = torch.zeros(n, n_lab, n_clusters + 1, dtype=torch.float64, device=labels.device)
    idx = torch.where(labels < 0, n_clusters, labels).T.unsqueeze(-1)  # (n, L, 1); −1 goes to a spare column
    onehot.scatter_(2, idx, 1.0)
    return onehot[:, :, :n_clusters]


def _vol_assoc(op: BlockGraph | torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """vol, assoc of shape (n_labelings, n_clusters) from a (n_nodes, L, K) one-hot."""
    n, n_lab, k = onehot.shape
    if isinstance(op, BlockGraph):
        assoc = torch.zeros(n_lab, k, dtype=torch.float64, device=onehot.device)
        deg = torch.zeros(n, dtype=torch.float64, device=onehot.device)
        for src, dst, w in op.blocks:
            s, d = op.layer_slice(src), op.layer_slice(dst)
            w = w.to(torch.float64)
            deg[s] += w.sum(1)
            deg[d] += w.sum(0)
            wh = (w @ onehot[d].reshape(-1, n_lab * k)).reshape(-1, n_lab, k)  # (n_src, L, K)
            # A holds W and Wᵀ, and diag(Hₛᵀ W H_d) = diag(H_dᵀ Wᵀ Hₛ): each block counts twice.
            assoc += 2.0 * (onehot[s] * wh).sum(0)
    else:
        flat = onehot.reshape(n, n_lab * k)
        ah = torch.sparse.mm(op, flat) if op.is_sparse else op @ flat
        assoc = (onehot * ah.reshape(n, n_lab, k)).sum(0)
        deg = torch.sparse.sum(op, 1).to_dense() if op.is_sparse else op.sum(1)
    vol = torch.einsum("n,nlk->lk", deg, onehot)
    return vol, assoc


def ncut_many(
    graph: GraphLike, labels: Any, *, n_clusters: int | None = None, epsilon: float = EPSILON
) -> torch.Tensor:
    """The normalised cut of many labellings of one graph, in one pass over the weights.

    Parameters
    ----------
    graph : BlockGraph, ModelGraph, torch.Tensor, numpy array or scipy sparse matrix
        The graph; a matrix must be the symmetric (n_nodes, n_nodes) adjacency.
    labels : array-like of int, shape (n_labelings, n_nodes) or (n_nodes,)
        Cluster of every neuron; −1 means "in no cluster" and is ignored.
    n_clusters : int, optional
        Number of clusters K; default ``max(labels) + 1``. Only matters through ``ave_in_out``.
    epsilon : float, default 1e-8
        Added to every volume, as the reference does.

    Returns
    -------
    ncut : torch.Tensor of shape (n_labelings,), float64, on the graph's device
        In [0, K]; lower means more clusterable.
    """
    op = _as_operator(graph)
    device = op.device if isinstance(op, BlockGraph) else op.device
    lab, k = _check_labels(labels, _n_nodes(op), n_clusters, device)
    # Bound the one-hot's memory: about 64 MiB of float64 per chunk of labellings.
    per_chunk = max(1, (8 << 20) // max(1, _n_nodes(op) * k))
    out = []
    for start in range(0, lab.shape[0], per_chunk):
        vol, assoc = _vol_assoc(op, _one_hot(lab[start : start + per_chunk], k))
        out.append(((vol - assoc) / (vol + epsilon)).sum(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=device)


def ncut(graph: GraphLike, labels: Any, *, n_clusters: int | None = None, epsilon: float = EPSILON) -> float:
    """The normalised cut of one labelling (methods.md §3); see :func:`ncut_many`.

    Examples
    --------
    The 2-2-2 net of the reference tests (methods.md §8):

    >>> import numpy as np
    >>> from neuronmap.service.blockgraph import BlockGraph
    >>> w1, w2 = np.array([[12, -1.3], [0, 7.4]]), np.array([[-8.9, 0.15], [0.23, -5.7]])
    >>> g = BlockGraph.from_edges([2, 2, 2], [0, 0, 1, 2, 2, 3, 3], [2, 3, 3, 4, 5, 4, 5],
    ...                           [12, -1.3, 7.4, -8.9, 0.15, 0.23, -5.7])
    >>> round(ncut(g, [0, 1, 0, 1, 0, 1]), 6)
    0.098897
    """
    lab = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    if lab.dim() != 1:
        raise ClusteringInputError(
            f"ncut takes one labelling of shape (n_nodes,); got {tuple(lab.shape)}. Use ncut_many for several."
        )
    return float(ncut_many(graph, lab, n_clusters=n_clusters, epsilon=epsilon)[0])


def ncut_batched_blocks(
    sizes: list[int],
    blocks: list[tuple[int, int, torch.Tensor]],
    labels: torch.Tensor,
    n_clusters: int,
    *,
    epsilon: float = EPSILON,
) -> torch.Tensor:
    """The n-cut of S graphs that share a layout, each with its own labelling.

    Parameters
    ----------
    sizes : list of int
        Neurons per layer.
    blocks : list of (int, int, torch.Tensor of shape (S, n_src, n_dst))
        One weight stack per block; sample ``s`` of every stack forms graph ``s``.
    labels : torch.Tensor of shape (S, n_nodes), int
        −1 is ignored.

    Returns
    -------
    ncut : torch.Tensor of shape (S,), float64
    """
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    n_samples, n = labels.shape
    onehot = _one_hot(labels, n_clusters).transpose(0, 1)  # (S, n, K)
    deg = torch.zeros(n_samples, n, dtype=torch.float64, device=labels.device)
    assoc = torch.zeros(n_samples, n_clusters, dtype=torch.float64, device=labels.device)
    for src, dst, w in blocks:
        s, d = slice(offsets[src], offsets[src + 1]), slice(offsets[dst], offsets[dst + 1])
        w = w.to(torch.float64)
        deg[:, s] += w.sum(2)
        deg[:, d] += w.sum(1)
        assoc += 2.0 * (onehot[:, s] * torch.bmm(w, onehot[:, d])).sum(1)
    vol = torch.einsum("sn,snk->sk", deg, onehot)
    return ((vol - assoc) / (vol + epsilon)).sum(1)


def ave_in_out(ncut_value: float | torch.Tensor, n_clusters: int) -> float | torch.Tensor:
    """The reference's derived metric (1 − ncut/K) / (2·ncut/K): mean in-cluster over out-of-cluster weight."""
    ratio = ncut_value / n_clusters
    return (1 - ratio) / (2 * ratio)
