"""Activation graphs out of the store and into clustering: the pull equals the in-memory graph, and the
upper-triangle null behaves as the reference's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuronmap.device import torch_generator
from neuronmap.examples import nets
from neuronmap.loaders import graph_from_module
from neuronmap.loaders.activations import compute_correlations, sparsify
from neuronmap.loaders.datasets import load_dataset
from neuronmap.loaders.ingest.activations import ingest_activation_graph
from neuronmap.loaders.ingest.weights import ingest
from neuronmap.service.clustering.activation_graph import activation_block_graph, block_graph_from_edges
from neuronmap.service.clustering.activation_nulls import (
    shuffle_activation_graph,
    shuffle_upper_triangle,
    upper_triangle_null_stacks,
    upper_triangle_nulls,
    upper_triangle_values,
)
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.clustering.ncut import ncut, ncut_batched_blocks
from neuronmap.service.clustering.spectral import cluster_batch, spectral_clustering
from neuronmap.service.errors import (
    ActivationGraphNotFoundError,
    ActivationGraphNotReadyError,
    ClusteringInputError,
    ModelNotFoundError,
)
from neuronmap.service.runs import ClusterConfig, run_clustering
from neuronmap.service.store.activation_pull import pull_activation_graph


@pytest.fixture(scope="module")
def digits_edges():
    torch.manual_seed(0)
    net = nets.digits_mlp()
    corr = compute_correlations(net, load_dataset("digits").x_test, device="cpu", data="digits:test")
    return net, corr


def dense_from_edges(edges, ordinals, weight):
    index = {int(o): i for i, o in enumerate(ordinals)}
    a = np.zeros((len(ordinals), len(ordinals)))
    for s, d, w in zip(edges.src, edges.dst, weight):
        a[index[int(s)], index[int(d)]] = a[index[int(d)], index[int(s)]] = w
    return a


@pytest.mark.parametrize("top_k", [None, 3])
def test_pull_equals_the_in_memory_graph(store, model_id, digits_edges, top_k):
    net, corr = digits_edges
    ingest(store, model_id, graph_from_module(net))
    edges = sparsify(corr, top_k=top_k)
    ingest_activation_graph(store, model_id, "acts", edges)
    sub = pull_activation_graph(store, model_id, "acts")
    local, ordinals = block_graph_from_edges(edges)
    np.testing.assert_array_equal(sub.ordinals, ordinals)
    np.testing.assert_array_equal(sub.ordinals, corr.ordinals)  # every kept unit is a node, with or without edges
    assert sub.n_edges == edges.n_edges and sub.graph.sizes == local.sizes
    assert [layer["name"] for layer in sub.layers] == ["0", "2"]
    assert [layer["n_nodes"] for layer in sub.layers] == local.sizes
    assert torch.equal(sub.graph.to_dense(), local.to_dense())
    np.testing.assert_array_equal(sub.graph.to_dense().numpy(), dense_from_edges(edges, ordinals, edges.r2))
    by_abs = pull_activation_graph(store, model_id, "acts", weight="abs_r")
    np.testing.assert_array_equal(by_abs.graph.to_dense().numpy(), dense_from_edges(edges, ordinals, np.abs(edges.r)))


def test_activation_graphs_cluster_and_write_back_like_weight_graphs(store, model_id, digits_edges):
    net, corr = digits_edges
    ingest(store, model_id, graph_from_module(net))
    ingest_activation_graph(store, model_id, "acts", sparsify(corr, min_r2=0.01))
    result = run_clustering(store, model_id, ClusterConfig(n_clusters=4, edges="acts", random_state=0))
    assert result.edges == "acts" and sum(result.cluster_sizes) + result.n_isolated == corr.n_units
    labels = store.run("admin.partition_labels", partition=result.id)
    assert {row["ordinal"] for row in labels} <= set(corr.ordinals.tolist())


def test_unknown_and_unfinished_graphs_are_refused(store, model_id, digits_edges):
    net, corr = digits_edges
    with pytest.raises(ModelNotFoundError):
        pull_activation_graph(store, model_id, "acts")
    ingest(store, model_id, graph_from_module(net))
    with pytest.raises(ActivationGraphNotFoundError, match="no activation graph 'acts'"):
        pull_activation_graph(store, model_id, "acts")
    store.run("activations.begin_graph", model=model_id, name="acts", props={"layers": [1, 2], "excluded": []})
    with pytest.raises(ActivationGraphNotReadyError, match="'loading'"):
        pull_activation_graph(store, model_id, "acts")


# -- the upper-triangle null ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layered():
    """A small activation-style graph: 3 layers, within- and cross-layer blocks, some zero entries."""
    rng = np.random.default_rng(0)
    sizes = [4, 5, 3]
    n = sum(sizes)
    src, dst = np.triu_indices(n, 1)
    w = rng.random(src.size) ** 2
    w[rng.random(src.size) < 0.3] = 0.0
    keep = w > 0
    return activation_block_graph(sizes, src[keep], dst[keep], w[keep])


def test_null_permutes_the_upper_triangle_and_mirrors_it(layered):
    a = layered.to_dense()
    iu = torch.triu_indices(a.shape[0], a.shape[0], 1)
    null = shuffle_activation_graph(layered, np.random.default_rng(1))
    b = null.to_dense()
    assert torch.equal(b, b.T) and not bool(b.diagonal().any())
    assert torch.equal(torch.sort(b[iu[0], iu[1]]).values, torch.sort(a[iu[0], iu[1]]).values)
    assert not torch.equal(a, b)
    assert null.sizes == layered.sizes and [(s, d) for s, d, _ in null.blocks] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 1),
        (1, 2),
        (2, 2),
    ]
    assert torch.equal(upper_triangle_values(layered), a[iu[0], iu[1]])
    # The same generator gives the same null from the dense matrix.
    assert torch.equal(shuffle_upper_triangle(a, np.random.default_rng(1)), b)
    kept = shuffle_activation_graph(layered, np.random.default_rng(2), method="nonzero").to_dense()
    assert torch.equal(kept != 0, a != 0)
    assert torch.equal(torch.sort(kept.flatten()).values, torch.sort(a.flatten()).values)


def test_nulls_are_reproducible_from_a_seed_in_either_form(layered):
    first = upper_triangle_nulls(layered, 4, random_state=11)
    again = upper_triangle_nulls(layered, 4, random_state=11)
    dense = upper_triangle_nulls(layered.to_dense(), 4, random_state=11)
    for x, y, z in zip(first, again, dense):
        assert torch.equal(x.to_dense(), y.to_dense()) and torch.equal(x.to_dense(), z)
    assert not torch.equal(first[0].to_dense(), first[1].to_dense())
    assert not torch.equal(first[0].to_dense(), upper_triangle_nulls(layered, 1, random_state=12)[0].to_dense())


def test_a_weight_style_graph_is_read_through_its_adjacency(layered):
    # Blocks stored the other way round, or within a layer in both triangles, mean the same adjacency.
    a = layered.to_dense()
    sl = [slice(0, 4), slice(4, 9), slice(9, 12)]
    flipped = BlockGraph(
        layered.sizes,
        [
            (1, 0, a[sl[1], sl[0]]),
            (2, 1, a[sl[2], sl[1]]),
            (0, 2, a[sl[0], sl[2]]),
            (0, 0, a[sl[0], sl[0]] / 2),
            (1, 1, torch.triu(a[sl[1], sl[1]])),
            (2, 2, torch.tril(a[sl[2], sl[2]])),
        ],
    )
    assert torch.equal(flipped.to_dense(), a)
    assert torch.equal(upper_triangle_values(flipped), upper_triangle_values(layered))
    loop = BlockGraph([2], [(0, 0, torch.eye(2))])
    with pytest.raises(ClusteringInputError, match="self-loops"):
        upper_triangle_values(loop)


def test_nulls_go_through_the_clustering_pipeline(layered):
    stacks = upper_triangle_null_stacks(layered, [np.random.default_rng(i) for i in range(3)])
    outcome = cluster_batch(layered.sizes, stacks, 2, generators=[torch_generator(i) for i in range(3)])
    batched = ncut_batched_blocks(layered.sizes, stacks, outcome.labels, 2)
    for s in range(3):
        single = BlockGraph(layered.sizes, [(a, b, w[s]) for a, b, w in stacks])
        assert batched[s].item() == pytest.approx(ncut(single, outcome.labels[s]), rel=1e-9)
    real = spectral_clustering(layered, 2, random_state=0)
    assert real.labels.shape == (layered.n_nodes,)
