"""BlockGraph: the layered |W| graph, checked against the dense adjacency it stands for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuronmap.loaders.records import EdgeBlock, LayerRecord, ModelGraph
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.errors import ClusteringInputError, ServiceError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def model_graph(sizes: list[int], seed: int = 0, extra: list[tuple[int, int]] = ()) -> ModelGraph:
    rng = np.random.default_rng(seed)
    layers = [
        LayerRecord(
            index=i,
            name="input" if i == 0 else f"fc{i}",
            kind="input" if i == 0 else "linear",
            role="input" if i == 0 else ("output" if i == len(sizes) - 1 else "hidden"),
            size=s,
            shape=[s],
        )
        for i, s in enumerate(sizes)
    ]
    pairs = [(i, i + 1) for i in range(len(sizes) - 1)] + list(extra)
    blocks = []
    for src, dst in pairs:
        w = rng.normal(size=(sizes[src], sizes[dst]))
        w[rng.random(w.shape) < 0.3] = 0.0
        blocks.append(EdgeBlock(src, dst, w))
    return ModelGraph(layers=layers, blocks=blocks, biases=[None] + [np.zeros(s) for s in sizes[1:]])


def test_from_model_graph_is_the_absolute_adjacency():
    mg = model_graph([5, 4, 3], extra=[(0, 2)])
    g = BlockGraph.from_model_graph(mg)
    np.testing.assert_allclose(g.to_dense().numpy(), mg.adjacency().toarray())
    assert g.n_edges == mg.n_edges
    assert g.sizes == [5, 4, 3]


def test_from_edges_matches_from_model_graph():
    mg = model_graph([6, 5, 4, 3], seed=1, extra=[(1, 3)])
    src, dst, w = mg.edges()
    g = BlockGraph.from_edges([6, 5, 4, 3], src, dst, w)
    np.testing.assert_allclose(g.to_dense().numpy(), mg.adjacency().toarray())
    # the pull may return an edge in either direction, and ordinals as torch tensors
    g2 = BlockGraph.from_edges([6, 5, 4, 3], torch.as_tensor(dst), torch.as_tensor(src), torch.as_tensor(w))
    np.testing.assert_allclose(g2.to_dense().numpy(), mg.adjacency().toarray())


def test_within_layer_block_adds_its_transpose():
    # edges 0-1 and 1-2 inside layer 0 (size 3), one edge 0-3 to layer 1 (size 1)
    g = BlockGraph.from_edges([3, 1], [0, 1, 0], [1, 2, 3], [2.0, -5.0, 1.5])
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 0] = 2.0
    expected[1, 2] = expected[2, 1] = 5.0
    expected[0, 3] = expected[3, 0] = 1.5
    np.testing.assert_allclose(g.to_dense().numpy(), expected)
    np.testing.assert_allclose(g.degrees().numpy(), expected.sum(1))
    assert g.layer_sides() is None


def test_repeated_edges_add_up():
    g = BlockGraph.from_edges([1, 1], [0, 0], [1, 1], [1.0, 2.0])
    assert float(g.to_dense()[0, 1]) == 3.0


@pytest.mark.parametrize("device", DEVICES)
def test_degrees_and_matvec_match_dense(device):
    g = BlockGraph.from_model_graph(model_graph([7, 5, 6, 2], seed=2, extra=[(0, 3)])).to(device)
    dense = g.to_dense()
    torch.testing.assert_close(g.degrees(), dense.sum(1))
    x = torch.randn(g.n_nodes, 3, dtype=torch.float64, device=device)
    torch.testing.assert_close(g.matvec(x), dense @ x)
    torch.testing.assert_close(g.matvec(x[:, 0]), dense @ x[:, 0])
    torch.testing.assert_close(g.to_sparse().to_dense(), dense)
    np.testing.assert_allclose(g.to_scipy().toarray(), dense.cpu().numpy())
    assert g.device.type == torch.device(device).type


def test_drop_isolated_removes_degree_zero_neurons():
    w1 = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]])  # input neuron 1 has no edge
    w2 = torch.tensor([[1.0], [0.0], [3.0]])  # hidden neuron 1 has no edge at all
    g = BlockGraph([2, 3, 1], [(0, 1, w1), (1, 2, w2)])
    reduced, keep = g.drop_isolated()
    assert keep.tolist() == [True, False, True, False, True, True]
    assert reduced.sizes == [1, 2, 1]
    dense = g.to_dense()
    torch.testing.assert_close(reduced.to_dense(), dense[keep][:, keep])


def test_drop_isolated_keeps_the_graph_when_nothing_is_isolated():
    g = BlockGraph([2, 2], [(0, 1, torch.ones(2, 2))])
    reduced, keep = g.drop_isolated()
    assert reduced is g and bool(keep.all())


@pytest.mark.parametrize(
    ("pairs", "sides"),
    [
        ([(0, 1), (1, 2), (2, 3)], [0, 1, 0, 1]),
        ([(0, 1), (1, 2), (0, 3)], [0, 1, 0, 1]),  # a skip over three layers keeps the 2-colouring
        ([(0, 1), (1, 2), (0, 2)], None),  # a skip over two layers closes an odd cycle
    ],
)
def test_layer_sides(pairs, sides):
    g = BlockGraph([2, 2, 2, 2], [(s, d, torch.ones(2, 2)) for s, d in pairs])
    assert g.layer_sides() == sides


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ([(0, 1, -torch.ones(2, 3))], "negative"),
        ([(0, 1, torch.ones(3, 2))], "shape"),
        ([(0, 1, torch.tensor([[1.0, float("nan"), 1.0], [1.0, 1.0, 1.0]]))], "non-finite"),
        ([(0, 5, torch.ones(2, 3))], "layer outside"),
    ],
)
def test_invalid_blocks_are_refused(blocks, message):
    with pytest.raises(ClusteringInputError, match=message) as info:
        BlockGraph([2, 3], blocks)
    assert isinstance(info.value, ServiceError) and isinstance(info.value, ValueError)


def test_from_edges_refuses_out_of_range_ordinals():
    with pytest.raises(ClusteringInputError, match="outside"):
        BlockGraph.from_edges([2, 2], [0, 4], [2, 3], [1.0, 1.0])
