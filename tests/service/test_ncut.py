"""n-cut against the known answers of the reference tests (methods.md §8) and against networkx."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.clustering.ncut import ave_in_out, ncut, ncut_batched_blocks, ncut_many
from neuronmap.service.errors import ClusteringInputError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

W_SMALL = [np.array([[12, -1.3], [0, 7.4]]), np.array([[-8.9, 0.15], [0.23, -5.7]])]
W_BIG = [
    np.array([[5.4, 0.03, 0, 0], [0, 0, -0.4, 5.5], [-12, 0, 4.8, -0.07], [0, 6.3, 0.001, 7]]),
    np.array([[-13.3, -0.4, 6, 0.1], [0.7, -8, 0, -5.8], [7.4, 0.3, -15, 0], [0, 0, 0, -12.3]]),
]


def weights_to_graph(weights: list[np.ndarray]) -> BlockGraph:
    sizes = [weights[0].shape[0]] + [w.shape[1] for w in weights]
    return BlockGraph(
        sizes, [(i, i + 1, torch.as_tensor(np.abs(w), dtype=torch.float64)) for i, w in enumerate(weights)]
    )


def brute_force_ncut(adjacency: np.ndarray, labels: np.ndarray, epsilon: float = 1e-8) -> float:
    """The reference's loop form: Σ_c cut(C, V∖C)/(vol C + ε), label −1 in no cluster."""
    total = 0.0
    degrees = adjacency.sum(1)
    for c in set(labels.tolist()) - {-1}:
        inside = labels == c
        total += adjacency[inside][:, ~inside].sum() / (degrees[inside].sum() + epsilon)
    return total


@pytest.mark.parametrize("device", DEVICES)
def test_reference_2_2_2(device):
    g = weights_to_graph(W_SMALL).to(device)
    labels = [0, 1, 0, 1, 0, 1]
    # cut 1.68 for each cluster, volumes 43.48 and 27.88
    expected = 1.68 / (43.48 + 1e-8) + 1.68 / (27.88 + 1e-8)
    assert ncut(g, labels) == pytest.approx(expected, abs=1e-12)
    assert ncut(g, labels) == pytest.approx(0.098897, abs=1e-5)
    for form in (g.to_dense(), g.to_sparse(), g.to_scipy(), g.to_dense().cpu().numpy()):
        assert ncut(form, labels) == pytest.approx(expected, abs=1e-12)


def test_reference_4_4_4():
    g = weights_to_graph(W_BIG)
    labels = [1, 0] * 6
    assert ncut(g, labels) == pytest.approx(0.037213, abs=1e-5)
    assert ncut(g, labels) == pytest.approx(brute_force_ncut(g.to_dense().numpy(), np.array(labels)), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_graph_equals_networkx(seed):
    graph = nx.fast_gnp_random_graph(20, 0.8, seed=seed)
    adjacency = nx.adjacency_matrix(graph)
    nodes = list(graph.nodes)
    expected = nx.normalized_cut_size(graph, nodes[::2], nodes[1::2])
    assert ncut(adjacency, [0, 1] * 10, epsilon=0) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_many_labelings_match_the_loop_form(device):
    rng = np.random.default_rng(3)
    sizes = [9, 7, 8, 4]
    blocks = [(i, i + 1, torch.as_tensor(rng.random((sizes[i], sizes[i + 1])))) for i in range(3)]
    blocks.append((0, 2, torch.as_tensor(rng.random((9, 8)) * (rng.random((9, 8)) < 0.3))))  # a residual block
    g = BlockGraph(sizes, blocks).to(device)
    labels = rng.integers(-1, 5, size=(40, g.n_nodes))
    got = ncut_many(g, labels, n_clusters=5).cpu().numpy()
    dense = g.to_dense().cpu().numpy()
    expected = [brute_force_ncut(dense, row) for row in labels]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ncut_many(g.to_dense(), labels).cpu().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_isolated_neurons_labelled_minus_one_change_nothing():
    w1 = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    w2 = torch.tensor([[1.0], [0.0], [3.0]])
    g = BlockGraph([2, 3, 1], [(0, 1, w1), (1, 2, w2)])
    reduced, keep = g.drop_isolated()
    reduced_labels = torch.tensor([0, 1, 0, 1])
    full = torch.full((6,), -1)
    full[keep] = reduced_labels
    assert ncut(g, full) == pytest.approx(ncut(reduced, reduced_labels), abs=1e-15)


def test_batched_blocks_match_one_graph_at_a_time():
    rng = np.random.default_rng(4)
    sizes = [6, 5, 4]
    stacks = [(0, 1, torch.as_tensor(rng.random((3, 6, 5)))), (1, 2, torch.as_tensor(rng.random((3, 5, 4))))]
    labels = torch.as_tensor(rng.integers(-1, 3, size=(3, 15)))
    got = ncut_batched_blocks(sizes, stacks, labels, 3)
    for s in range(3):
        g = BlockGraph(sizes, [(a, b, w[s]) for a, b, w in stacks])
        assert float(got[s]) == pytest.approx(ncut(g, labels[s], n_clusters=3), abs=1e-12)


def test_ave_in_out():
    assert ave_in_out(1.0, 4) == pytest.approx((1 - 0.25) / 0.5)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 1, 0], "shape"),
        ([0, -2, 0, 1, 0, 1], "≥ −1"),
        ([0.5, 1, 0, 1, 0, 1], "integers"),
    ],
)
def test_bad_labels_are_refused(labels, message):
    with pytest.raises(ClusteringInputError, match=message):
        ncut(weights_to_graph(W_SMALL), labels)


def test_labels_beyond_n_clusters_are_refused():
    with pytest.raises(ClusteringInputError, match="out of range"):
        ncut(weights_to_graph(W_SMALL), [0, 1, 2, 0, 1, 2], n_clusters=2)
