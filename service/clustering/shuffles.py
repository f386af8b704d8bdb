"""Shuffled-network nulls of weight graphs (methods.md §4.1), reproducible from one seed.

``layer`` permutes all entries of each block, zeros included (the reference's default); ``layer_nonzero`` permutes
only the non-zero ones and keeps the zero mask. Sample ``i`` draws its permutations from child ``i`` of
``SeedSequence(random_state)`` (:func:`neuronmap.device.sample_seeds`), on the CPU, so it depends only on the seed
and its index (methods.md §4.3). Shuffle after dropping the isolated neurons (:mod:`.clusterability` does).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeGuard

import numpy as np
import torch

from neuronmap.device import RandomState, numpy_generator, sample_seeds
from neuronmap.options import ShuffleMethod, choices
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.clustering.sparse_blocks import is_sparse_block
from neuronmap.service.errors import ClusteringInputError

SHUFFLE_METHODS = choices(ShuffleMethod)


def is_shuffle_method(method: str) -> TypeGuard[ShuffleMethod]:
    """Whether ``method`` names a weight-graph shuffle (rather than an activation-graph null, say)."""
    return method in SHUFFLE_METHODS


def _check_method(method: str) -> None:
    if not is_shuffle_method(method):
        raise ClusteringInputError(
            f"Unknown shuffle method {method!r}; choose one of {', '.join(SHUFFLE_METHODS)}. "
            "The KDE variants of the reference are not implemented."
        )


def shuffle_matrix(weight: torch.Tensor, method: ShuffleMethod, rng: np.random.Generator) -> torch.Tensor:
    """One shuffled copy of a (n_src, n_dst) weight matrix; same dtype and device."""
    _check_method(method)
    return _shuffle_stack(weight, method, [rng])[0]


def _shuffle_stack(weight: torch.Tensor, method: str, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
    """(S, n_src, n_dst): one shuffled copy of ``weight`` per generator."""
    if is_sparse_block(weight):  # a SparseStack: shuffled without densifying (sparse_blocks.SparseStack.shuffled)
        return weight.shuffled(method, rngs).as_block()
    flat = weight.reshape(-1)
    n_samples = len(rngs)
    if method == "layer":
        perm = torch.from_numpy(_permutations(rngs, flat.numel())).to(weight.device)
        out = flat[perm]
    else:
        nz = torch.nonzero(flat, as_tuple=True)[0]
        values = flat[nz]
        out = torch.zeros(n_samples, flat.numel(), dtype=weight.dtype, device=weight.device)
        out[:, nz] = values[torch.from_numpy(_permutations(rngs, nz.numel())).to(weight.device)]
    return out.reshape(n_samples, *weight.shape)


def _permutations(rngs: Sequence[np.random.Generator], size: int) -> np.ndarray:
    """(S, size) int64: one uniform permutation per generator, drawn in parallel threads (numpy's Fisher–Yates
    shuffle releases the GIL), each generator used by one thread only."""
    out = np.empty((len(rngs), size), dtype=np.int64)

    def draw(i: int) -> None:
        out[i] = np.arange(size)
        rngs[i].shuffle(out[i])

    workers = min(len(rngs), os.cpu_count() or 1, 8)
    if workers > 1 and size >= 4096:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(draw, range(len(rngs))))
    else:
        for i in range(len(rngs)):
            draw(i)
    return out


def shuffled_block_stacks(
    graph: BlockGraph, method: ShuffleMethod, rngs: Sequence[np.random.Generator]
) -> list[tuple[int, int, torch.Tensor]]:
    """Every block of ``graph`` shuffled once per generator, stacked: ``(src, dst, (S, n_src, n_dst))``.

    Blocks are shuffled independently, in the order they are stored, each generator drawing one permutation per
    block in turn.
    """
    _check_method(method)
    return [(src, dst, _shuffle_stack(w, method, rngs)) for src, dst, w in graph.blocks]


def shuffle_graph(graph: BlockGraph, method: ShuffleMethod, rng: np.random.Generator) -> BlockGraph:
    """One shuffled copy of ``graph`` (isolated neurons are not dropped here)."""
    stacks = shuffled_block_stacks(graph, method, [rng])
    return BlockGraph(graph.sizes, [(s, d, w[0]) for s, d, w in stacks], validate=False)


def shuffled_graphs(
    graph: BlockGraph, n_shuffles: int, method: ShuffleMethod = "layer", *, random_state: RandomState = None
) -> list[BlockGraph]:
    """``n_shuffles`` shuffled copies, sample ``i`` drawn from child ``i`` of the seed (as clusterability does)."""
    return [shuffle_graph(graph, method, numpy_generator(seed)) for seed in sample_seeds(random_state, n_shuffles)]
