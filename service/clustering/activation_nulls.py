"""The null model of activation graphs (methods.md §2, §4.1): permute the strict upper triangle, then symmetrise.

A correlation graph joins units within and across layers, so the per-block shuffles of weight graphs do not apply.
``all`` permutes every upper-triangle entry, zeros included (the reference); ``nonzero`` only the non-zero ones, so
a sparsified graph keeps its zero pattern. Entries are enumerated row-major (``torch.triu_indices(n, n, 1)``)
whatever the storage, so a dense matrix and a BlockGraph give the same null for the same generator; sample ``i``
draws from child ``i`` of the seed, as the weight nulls do (methods.md §4.3). A null BlockGraph has one block per
pair of layers ``a <= b`` (within-layer blocks strictly upper triangular).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from neuronmap.device import RandomState, numpy_generator, sample_seeds
from neuronmap.options import UpperTriangleMethod, choices
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.errors import ClusteringInputError

UPPER_TRIANGLE_METHODS = choices(UpperTriangleMethod)
Stack = tuple[int, int, torch.Tensor]


def _check(method: str) -> None:
    if method not in UPPER_TRIANGLE_METHODS:
        raise ClusteringInputError(
            f"Unknown activation null method {method!r}; choose 'all' (permute every "
            "upper-triangle entry, the reference) or 'nonzero' (keep the zero pattern)."
        )


def _upper_index(n: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Position of (row, col), row < col, in the row-major strict upper triangle of an n×n matrix."""
    return rows * n - rows * (rows + 1) // 2 + (cols - rows - 1)


def _block_positions(sizes: Sequence[int]) -> list[tuple[int, int, torch.Tensor]]:
    """For every pair of layers a <= b: the upper-triangle position of each block entry (−1 on and below the
    diagonal of a within-layer block)."""
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(offsets[-1])
    out = []
    for a in range(len(sizes)):
        for b in range(a, len(sizes)):
            rows = torch.arange(offsets[a], offsets[a + 1])[:, None].expand(sizes[a], sizes[b])
            cols = torch.arange(offsets[b], offsets[b + 1])[None, :].expand(sizes[a], sizes[b])
            pos = torch.where(rows < cols, _upper_index(n, rows, cols), torch.full_like(rows, -1))
            out.append((a, b, pos))
    return out


def upper_triangle_values(graph: BlockGraph) -> torch.Tensor:
    """(n(n−1)/2,) float64 on the CPU: the strict upper triangle of the graph's adjacency, row-major.

    Raises
    ------
    ClusteringInputError
        A within-layer block with a non-zero diagonal (a self-loop, which no upper triangle holds).
    """
    n = graph.n_nodes
    values = torch.zeros(n * (n - 1) // 2, dtype=torch.float64)
    offsets = graph.offsets
    for src, dst, w in graph.blocks:
        w = w.detach().to("cpu", torch.float64)
        if src > dst:  # stored the other way round: the adjacency is symmetric, so read it transposed
            src, dst, w = dst, src, w.T
        rows = torch.arange(offsets[src], offsets[src + 1])[:, None].expand_as(w)
        cols = torch.arange(offsets[dst], offsets[dst + 1])[None, :].expand_as(w)
        if src == dst:
            if w.numel() and bool(torch.diagonal(w).ne(0).any()):
                raise ClusteringInputError(
                    f"Layer {src} has self-loops (a non-zero diagonal in its within-layer "
                    "block); an upper-triangle null has no place for them. Zero the diagonal."
                )
            # W + Wᵀ above the diagonal: an entry below it belongs to the mirrored position.
            rows, cols = torch.minimum(rows, cols), torch.maximum(rows, cols)
        off = rows != cols
        values.index_add_(0, _upper_index(n, rows[off], cols[off]), w[off])
    return values


def _permuted(values: torch.Tensor, method: str, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
    """(S, m): one permutation of ``values`` per generator (of its non-zeros only, for ``nonzero``)."""
    if method == "all":
        perms = (
            np.stack([rng.permutation(values.numel()) for rng in rngs])
            if values.numel()
            else np.zeros((len(rngs), 0), np.int64)
        )
        return values[torch.from_numpy(perms)]
    nz = torch.nonzero(values).flatten()
    out = values.expand(len(rngs), -1).clone()
    if nz.numel():
        nz_perms = torch.from_numpy(np.stack([rng.permutation(nz.numel()) for rng in rngs]))
        out[:, nz] = values[nz][nz_perms]
    return out


def upper_triangle_null_stacks(
    graph: BlockGraph, rngs: Sequence[np.random.Generator], *, method: UpperTriangleMethod = "all"
) -> list[Stack]:
    """One upper-triangle null per generator, stacked per block: ``[(a, b, (S, n_a, n_b)) for a <= b]``.

    The stacks have the graph's dtype and device; memory is about S·n²/2 values.
    """
    _check(method)
    values = upper_triangle_values(graph)
    shuffled = _permuted(values, method, rngs)  # (S, m)
    stacks = []
    for a, b, pos in _block_positions(graph.sizes):
        block = torch.zeros(len(rngs), *pos.shape, dtype=torch.float64)
        valid = pos >= 0
        block[:, valid] = shuffled[:, pos[valid]]
        stacks.append((a, b, block.to(device=graph.device, dtype=graph.dtype)))
    return stacks


def shuffle_activation_graph(
    graph: BlockGraph, rng: np.random.Generator, *, method: UpperTriangleMethod = "all"
) -> BlockGraph:
    """One upper-triangle null of a layered graph, as a BlockGraph with a block per pair of layers a <= b."""
    stacks = upper_triangle_null_stacks(graph, [rng], method=method)
    return BlockGraph(graph.sizes, [(a, b, w[0]) for a, b, w in stacks], validate=False)


def shuffle_upper_triangle(
    adjacency: torch.Tensor, rng: np.random.Generator, *, method: UpperTriangleMethod = "all"
) -> torch.Tensor:
    """One upper-triangle null of a dense symmetric (n, n) adjacency: permute, place above the diagonal, mirror.

    The diagonal of the result is 0 (the reference zeroes it before shuffling). Same dtype and device.
    """
    _check(method)
    if adjacency.dim() != 2 or adjacency.shape[0] != adjacency.shape[1]:
        raise ClusteringInputError(f"An adjacency must be square, got shape {tuple(adjacency.shape)}.")
    n = adjacency.shape[0]
    iu = torch.triu_indices(n, n, 1)
    values = adjacency.detach().to("cpu", torch.float64)[iu[0], iu[1]]
    shuffled = _permuted(values, method, [rng])[0]
    out = torch.zeros(n, n, dtype=torch.float64)
    out[iu[0], iu[1]] = shuffled
    out = out + out.T
    return out.to(device=adjacency.device, dtype=adjacency.dtype)


def upper_triangle_nulls(
    graph: BlockGraph | torch.Tensor,
    n_samples: int,
    *,
    method: UpperTriangleMethod = "all",
    random_state: RandomState = None,
) -> list[BlockGraph] | list[torch.Tensor]:
    """``n_samples`` upper-triangle nulls, sample ``i`` drawn from child ``i`` of ``SeedSequence(random_state)``.

    Parameters
    ----------
    graph : BlockGraph or torch.Tensor of shape (n, n)
        The activation graph (isolated neurons dropped), or its dense symmetric adjacency.
    n_samples : int
    method : {"all", "nonzero"}, default="all"
    random_state : int, SeedSequence or None
        None draws fresh entropy.

    Returns
    -------
    list of BlockGraph, or of dense tensors when ``graph`` is a tensor
        For the same seed, the dense and BlockGraph forms give the same adjacencies.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ClusteringInputError(f"n_samples must be a positive int, got {n_samples!r}.")
    rngs = [numpy_generator(seed) for seed in sample_seeds(random_state, int(n_samples))]
    if isinstance(graph, torch.Tensor):
        return [shuffle_upper_triangle(graph, rng, method=method) for rng in rngs]
    if not isinstance(graph, BlockGraph):
        raise ClusteringInputError(
            f"upper_triangle_nulls takes a BlockGraph or a dense tensor, got {type(graph).__name__}."
        )
    return [shuffle_activation_graph(graph, rng, method=method) for rng in rngs]
