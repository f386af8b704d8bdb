"""Shuffled-network nulls: what each method keeps (methods.md §8 test_shuffle_methods), and reproducibility."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from neuronmap.device import numpy_generator, sample_seeds, torch_generator
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.clustering.shuffles import shuffle_graph, shuffle_matrix, shuffled_block_stacks, shuffled_graphs
from neuronmap.service.errors import ClusteringInputError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def reference_matrix() -> torch.Tensor:
    """The reference test's 4×5 matrix: 1..10 interleaved with zeros."""
    return torch.as_tensor(np.dstack([np.arange(10) + 1, np.zeros(10)]).reshape(4, 5))


@pytest.mark.parametrize("device", DEVICES)
def test_layer_keeps_the_multiset_and_moves_the_zeros(device):
    weights = reference_matrix().to(device)
    moved = False
    for seed in range(5):
        shuffled = shuffle_matrix(weights, "layer", numpy_generator(seed))
        assert shuffled.shape == weights.shape and shuffled.device == weights.device
        assert Counter(shuffled.flatten().tolist()) == Counter(weights.flatten().tolist())
        moved |= not torch.equal(shuffled != 0, weights != 0)
    assert moved  # the sparsity pattern is re-randomised


@pytest.mark.parametrize("device", DEVICES)
def test_layer_nonzero_keeps_the_mask_and_the_multiset(device):
    weights = reference_matrix().to(device)
    changed = False
    for seed in range(5):
        shuffled = shuffle_matrix(weights, "layer_nonzero", numpy_generator(seed))
        assert torch.equal(shuffled != 0, weights != 0)
        assert Counter(shuffled.flatten().tolist()) == Counter(weights.flatten().tolist())
        changed |= not torch.equal(shuffled, weights)
    assert changed


def test_layer_shuffle_is_uniform_over_positions():
    weights = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    counts = np.zeros((6, 6))
    for seed in sample_seeds(7, 1200):
        shuffled = shuffle_matrix(weights, "layer", numpy_generator(seed)).flatten().long().numpy()
        counts[shuffled, np.arange(6)] += 1
    # each value lands in each position 200 times on average; a 5-sd band is generous and never flaky
    assert np.abs(counts - 200).max() < 5 * np.sqrt(200 * (5 / 6))


def test_one_seed_reproduces_every_sample():
    graph = BlockGraph(
        [4, 5, 3], [(0, 1, torch.rand(4, 5, dtype=torch.float64)), (1, 2, torch.rand(5, 3, dtype=torch.float64))]
    )
    first = shuffled_graphs(graph, 4, "layer", random_state=11)
    again = shuffled_graphs(graph, 4, "layer", random_state=11)
    other = shuffled_graphs(graph, 4, "layer", random_state=12)
    for a, b, c in zip(first, again, other):
        assert torch.equal(a.to_dense(), b.to_dense())
        assert not torch.equal(a.to_dense(), c.to_dense())
    assert not torch.equal(first[0].to_dense(), first[1].to_dense())


@pytest.mark.parametrize("method", ["layer", "layer_nonzero"])
def test_batched_stacks_equal_one_sample_at_a_time(method):
    rng = np.random.default_rng(3)
    w1 = rng.random((6, 5)) * (rng.random((6, 5)) < 0.5)
    graph = BlockGraph([6, 5, 4], [(0, 1, torch.as_tensor(w1)), (1, 2, torch.as_tensor(rng.random((5, 4))))])
    seeds = sample_seeds(5, 6)
    stacks = shuffled_block_stacks(graph, method, [numpy_generator(s) for s in seeds])
    for i, seed in enumerate(seeds):
        single = shuffle_graph(graph, method, numpy_generator(seed))
        for (_, _, stack), (_, _, w) in zip(stacks, single.blocks):
            assert torch.equal(stack[i], w)


def test_seeds_are_independent_of_earlier_spawns():
    root = np.random.SeedSequence(9)
    root.spawn(3)  # a caller that spawned before must not shift the samples
    assert [s.generate_state(1)[0] for s in sample_seeds(root, 3)] == [
        s.generate_state(1)[0] for s in sample_seeds(9, 3)
    ]
    assert torch.equal(
        torch.rand(3, generator=torch_generator(sample_seeds(9, 1)[0])),
        torch.rand(3, generator=torch_generator(sample_seeds(9, 1)[0])),
    )


def test_unknown_method_is_refused():
    with pytest.raises(ClusteringInputError, match="layer_nonzero_distribution"):
        shuffle_matrix(reference_matrix(), "layer_nonzero_distribution", numpy_generator(0))
