"""Sparse (CSR) weight blocks give the same operator, clustering, n-cut and nulls as the dense blocks they replace."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuronmap.device import numpy_generator
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.clustering.clusterability import clusterability
from neuronmap.service.clustering.ncut import ncut
from neuronmap.service.clustering.shuffles import shuffled_block_stacks
from neuronmap.service.clustering.sparse_blocks import SparseStack
from neuronmap.service.clustering.spectral import spectral_clustering

SIZES = [120, 90, 150]


def edges(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A layered graph with three blocks (0→1, 0→2, 1→2), repeated edges and a few isolated neurons."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(SIZES)])
    src, dst, w = [], [], []
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        n = 6 * SIZES[a]
        src.append(rng.integers(0, SIZES[a] - 3, n) + offsets[a])  # the last 3 of each layer send nothing
        dst.append(rng.integers(0, SIZES[b] - 3, n) + offsets[b])
        w.append(rng.normal(size=n))
    return np.concatenate(src), np.concatenate(dst), np.concatenate(w)


@pytest.fixture(scope="module")
def pair() -> tuple[BlockGraph, BlockGraph]:
    src, dst, w = edges()
    return BlockGraph.from_edges(SIZES, src, dst, w, sparse=False), BlockGraph.from_edges(
        SIZES, src, dst, w, sparse=True
    )


def test_the_sparse_graph_is_the_dense_one(pair):
    dense, sparse = pair
    assert all(isinstance(w, SparseStack) for _, _, w in sparse.blocks)
    assert sparse.n_edges == dense.n_edges
    close = np.testing.assert_allclose  # not torch.testing: its import costs seconds
    close(sparse.to_dense().numpy(), dense.to_dense().numpy(), rtol=1e-12)
    close(sparse.degrees().numpy(), dense.degrees().numpy(), rtol=1e-12)
    x = torch.randn(dense.n_nodes, 3, dtype=torch.float64)
    close(sparse.matvec(x).numpy(), dense.matvec(x).numpy(), rtol=1e-12)
    assert abs(sparse.to_scipy() - dense.to_scipy()).max() <= 1e-12  # repeated edges summed in another order
    reduced_d, keep_d = dense.drop_isolated()
    reduced_s, keep_s = sparse.drop_isolated()
    assert torch.equal(keep_d, keep_s) and reduced_s.sizes == reduced_d.sizes
    close(reduced_s.to_dense().numpy(), reduced_d.to_dense().numpy(), rtol=1e-12)


@pytest.mark.parametrize("solver", ["dense", "lanczos"])
def test_sparse_blocks_cluster_as_the_dense_ones(pair, solver):
    dense, sparse = pair
    a = spectral_clustering(dense, 4, random_state=0, eigen_solver=solver)
    b = spectral_clustering(sparse, 4, random_state=0, eigen_solver=solver)
    assert torch.equal(a.labels, b.labels)
    assert ncut(sparse, b.labels) == pytest.approx(ncut(dense, a.labels), rel=1e-12)


def test_sparse_nulls(pair):
    dense, sparse = pair
    # layer_nonzero permutes the values over the block's own pattern: the same nulls as the dense blocks
    a = clusterability(dense, 3, 3, method="layer_nonzero", random_state=1)
    b = clusterability(sparse, 3, 3, method="layer_nonzero", random_state=1)
    np.testing.assert_allclose(b.null_ncuts.numpy(), a.null_ncuts.numpy(), rtol=1e-9)
    # layer puts the same values on positions drawn from the whole block, never densifying it
    rngs = [numpy_generator(seed) for seed in range(2)]
    for (_, _, w), (_, _, stack) in zip(sparse.blocks, shuffled_block_stacks(sparse, "layer", rngs)):
        assert isinstance(stack, SparseStack) and stack.shape == (2, *w.shape)
        for s in range(2):
            assert torch.equal(torch.sort(stack[s].values).values, torch.sort(w.values).values)
        assert not torch.equal(stack[0].rows, w.rows) or not torch.equal(stack[0].cols, w.cols)
    assert clusterability(sparse, 3, 2, method="layer", random_state=1).n_shuffles == 2


def test_the_fused_matrix_is_the_sum_of_its_blocks(pair):
    """M x through the one fused CSR matrix (int32 indices on the CPU) equals the block-by-block product."""
    from neuronmap.service.clustering.operators import LayeredProblem

    dense, sparse = pair
    stacks = [(s, d, w.unsqueeze(0).repeat(2, 1, 1)) for s, d, w in dense.blocks]  # S = 2 samples
    sparse_stacks = [(s, d, w.unsqueeze(0)) for s, d, w in sparse.blocks]
    shuffled = [(s, d, w.index_select(0, torch.tensor([0, 0]))) for s, d, w in sparse_stacks]
    by_blocks = LayeredProblem(SIZES, stacks, torch.float64, None, threads=2)
    fused = LayeredProblem(SIZES, shuffled, torch.float64, None, threads=2)
    matrix = fused._fused_adjacency().matrix  # type: ignore[union-attr]
    assert matrix.layout == torch.sparse_csr and matrix.col_indices().dtype == torch.int32
    assert by_blocks._fused_adjacency() is None  # dense blocks keep their GEMMs
    x = torch.randn(2, sum(SIZES), 5, dtype=torch.float64)
    np.testing.assert_allclose(fused.m_apply(x).numpy(), by_blocks.m_apply(x).numpy(), rtol=1e-12, atol=1e-14)
