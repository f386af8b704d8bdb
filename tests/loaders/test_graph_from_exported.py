"""The torch.export front end gives the same ModelGraph as the nn.Module front end for the same network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from neuronmap.examples import nets
from neuronmap.loaders import (
    ModelGraph,
    NonFiniteWeightsError,
    UnsupportedLayerError,
    graph_from_exported,
    graph_from_module,
)
from tests.loaders.test_graph_from_module import Concat, WithNorm, conv_bn_net, tiny_mlp


def export(net: nn.Module, shape: tuple[int, ...] | None = None) -> torch.export.ExportedProgram:
    shape = shape or tuple(net.input_shape)
    return torch.export.export(net.eval(), (torch.zeros(2, *shape),))


def assert_same_graph(a: ModelGraph, b: ModelGraph) -> None:
    assert [layer.model_dump() for layer in a.layers] == [layer.model_dump() for layer in b.layers]
    assert [(x.src_layer, x.dst_layer) for x in a.blocks] == [(x.src_layer, x.dst_layer) for x in b.blocks]
    for x, y in zip(a.blocks, b.blocks):
        np.testing.assert_allclose(x.weight, y.weight, rtol=1e-12, atol=1e-15)
    for x, y in zip(a.biases, b.biases, strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-15)


NETS = {
    "tiny_mlp": lambda: _with_shape(tiny_mlp(), (2,)),
    "conv_bn": conv_bn_net,
    "mlp_4x256": nets.mlp_4x256,
    "digits_cnn": nets.digits_cnn,
    "residual_mlp": nets.residual_mlp,
    "residual_cnn": nets.residual_cnn,
}


def _with_shape(net: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    net.input_shape = shape
    return net


@pytest.mark.parametrize("name", NETS)
def test_saved_program_gives_the_module_graph(name, tmp_path):
    torch.manual_seed(0)
    net = NETS[name]()
    path = tmp_path / f"{name}.pt2"
    torch.export.save(export(net), path)
    graph = graph_from_exported(torch.export.load(path), kernel_norm="induced1")
    assert_same_graph(graph, graph_from_module(net, kernel_norm="induced1"))
    assert graph.meta.arch == "torch.export" and graph.meta.kernel_norm == "induced1"


@pytest.mark.parametrize("name", ["conv_bn", "residual_cnn", "tiny_mlp"])
def test_decomposed_program_gives_the_module_graph(name):
    # run_decompositions: addmm on a transposed weight, aten.convolution, _native_batch_norm_legit_no_training
    net = NETS[name]()
    assert_same_graph(graph_from_exported(export(net).run_decompositions()), graph_from_module(net))


def test_functional_ops_match_the_module_front_end():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.w = nn.Parameter(torch.randn(3, 4 * 2 * 2))

        def forward(self, x):
            h = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
            h = nn.functional.dropout(h.view(h.size(0), -1), 0.1, self.training)
            return torch.softmax(nn.functional.linear(h, self.w), dim=1)

    net = Functional()
    graph = graph_from_module(net, input_shape=(2, 4, 4))
    assert [layer.name for layer in graph.layers] == ["input", "conv", "w"]
    assert_same_graph(graph_from_exported(export(net, (2, 4, 4))), graph)


@pytest.mark.parametrize(
    ("net", "pattern"),
    [
        (WithNorm(), r"Module 'body\.1' \(LayerNorm\) calls aten\.layer_norm"),
        (Concat(), r"Concat calls aten\.cat"),
    ],
)
def test_unsupported_ops_name_the_module(net, pattern):
    with pytest.raises(UnsupportedLayerError, match=pattern):
        graph_from_exported(export(net, (4,)))


def test_nan_weights_in_a_program():
    net = tiny_mlp()
    with torch.no_grad():
        net[2].weight[1, 1] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match="Layer '2' has 1 non-finite weights"):
        graph_from_exported(export(net, (2,)))
