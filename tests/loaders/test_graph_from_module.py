"""graph_from_module on hand-made networks whose edges, biases and roles are known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from neuronmap.examples import nets
from neuronmap.loaders import ArchitectureError, NonFiniteWeightsError, UnsupportedLayerError, graph_from_module

# methods.md §8, test_compute_ncut: a 2-2-2 net in Keras' (in, out) layout.
W1 = np.array([[12.0, -1.3], [0.0, 7.4]])
W2 = np.array([[-8.9, 0.15], [0.23, -5.7]])


def tiny_mlp() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(W1.T))  # PyTorch stores (out, in)
        net[0].bias.copy_(torch.tensor([0.5, -1.0]))
        net[2].weight.copy_(torch.tensor(W2.T))
        net[2].bias.copy_(torch.tensor([2.0, 3.0]))
    return net


def set_params(module: nn.Module, **tensors: list) -> None:
    with torch.no_grad():
        for name, value in tensors.items():
            target = module.get_parameter(name) if "running" not in name else module.get_buffer(name)
            target.copy_(torch.tensor(value, dtype=target.dtype))


# -- MLPs ----------------------------------------------------------------------------------------------------------


def test_mlp_edges_are_the_transposed_weights():
    graph = graph_from_module(tiny_mlp())
    assert [(b.src_layer, b.dst_layer) for b in graph.blocks] == [(0, 1), (1, 2)]
    np.testing.assert_allclose(graph.blocks[0].weight, W1, rtol=1e-6)  # float32 weights, read as float64
    np.testing.assert_allclose(graph.blocks[1].weight, W2, rtol=1e-6)
    assert graph.biases[0] is None
    np.testing.assert_allclose(graph.biases[1], [0.5, -1.0])
    np.testing.assert_allclose(graph.biases[2], [2.0, 3.0])


def test_mlp_layers_roles_and_ordinals():
    graph = graph_from_module(tiny_mlp())
    assert [(l.index, l.name, l.kind, l.role, l.size, l.shape) for l in graph.layers] == [
        (0, "input", "input", "input", 2, [2]),
        (1, "0", "linear", "hidden", 2, [2]),
        (2, "2", "linear", "output", 2, [2]),
    ]
    np.testing.assert_array_equal(graph.offsets, [0, 2, 4, 6])
    assert graph.meta.arch == "nn.Module:Sequential" and graph.meta.sha256 == ""
    assert graph.meta.kernel_norm == "entry_l1" and graph.meta.fold_batchnorm


def test_adjacency_is_the_block_tridiagonal_abs_matrix():
    graph = graph_from_module(tiny_mlp())
    a1, a2 = np.abs(W1), np.abs(W2)
    expected = sp.bmat([[None, a1, None], [a1.T, None, a2], [None, a2.T, None]]).toarray()  # methods.md §1.1
    np.testing.assert_allclose(graph.adjacency().toarray(), expected, rtol=1e-6)
    # ...and the reference's known n-cut of labels [0, 1, 0, 1, 0, 1] on it: 0.098897.
    adjacency = graph.adjacency().toarray()
    labels = np.array([0, 1, 0, 1, 0, 1])
    h = np.eye(2)[labels]
    degree = adjacency.sum(axis=1)
    vol, assoc = h.T @ degree, np.diag(h.T @ adjacency @ h)
    assert ((vol - assoc) / (vol + 1e-8)).sum() == pytest.approx(0.098897, abs=1e-6)


def test_mnist_mlp_has_784_input_pixels_and_1818_neurons():
    graph = graph_from_module(nets.mlp_4x256())  # Flatten first: the input layer is the pixels (methods.md §1.1)
    assert [l.size for l in graph.layers] == [784, 256, 256, 256, 256, 10]
    assert graph.layers[0].shape == [1, 28, 28]
    assert graph.n_neurons == 1818
    # block sizes, not n_edges: a Glorot draw can be exactly 0.0 (p = 2^-24 per weight), which is no edge
    assert sum(b.weight.size for b in graph.blocks) == 784 * 256 + 3 * 256 * 256 + 256 * 10
    assert [l.role for l in graph.layers] == ["input"] + ["hidden"] * 4 + ["output"]


def test_input_shape_defaults_to_the_first_linear():
    graph = graph_from_module(nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 1)))
    assert graph.layers[0].size == 5


def test_a_module_called_twice_gives_two_layers():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.fc(x)))

    graph = graph_from_module(Twice())
    assert [l.name for l in graph.layers] == ["input", "fc", "fc@1"]
    np.testing.assert_array_equal(graph.blocks[0].weight, graph.blocks[1].weight)


# -- conv nets with BatchNorm ----------------------------------------------------------------------------------------

K = np.array(
    [  # (out=3, in=2, 2, 2)
        [[[1, -2], [3, 4]], [[0, 1], [1, 0]]],
        [[[2, 0], [0, -2]], [[-1, -1], [-1, -1]]],
        [[[0, 0], [0, 5]], [[3, -4], [0, 0]]],
    ],
    dtype=float,
)
GAMMA, BETA = np.array([3.0, -1.0, 0.5]), np.array([0.25, 0.5, -1.0])
MEAN, VAR = np.array([1.0, -2.0, 0.0]), np.array([4.0, 1.0, 0.25])
SCALE = GAMMA / np.sqrt(VAR)  # eps=0: (1.5, -1, 1)
CONV_BIAS = np.array([1.0, 2.0, 3.0])


def conv_bn_net() -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(2, 3, 2), nn.BatchNorm2d(3, eps=0.0), nn.ReLU(), nn.Conv2d(3, 1, 1))
    set_params(
        net,
        **{
            "0.weight": K,
            "0.bias": CONV_BIAS,
            "1.weight": GAMMA,
            "1.bias": BETA,
            "1.running_mean": MEAN,
            "1.running_var": VAR,
            "3.weight": [[[[2.0]], [[-3.0]], [[4.0]]]],
            "3.bias": [-0.5],
        },
    )
    net.input_shape = (2, 4, 4)
    return net


@pytest.mark.parametrize(
    ("norm", "slice_norm"),
    [
        ("entry_l1", lambda k: np.abs(k).sum()),
        ("induced1", lambda k: np.linalg.norm(np.abs(k), 1)),
        ("spectral2", lambda k: np.linalg.norm(np.abs(k), 2)),
        ("fro", lambda k: np.linalg.norm(k, "fro")),
    ],
)
def test_folded_conv_edges_for_each_kernel_norm(norm, slice_norm):
    graph = graph_from_module(conv_bn_net(), kernel_norm=norm)
    expected = np.array([[abs(SCALE[o]) * slice_norm(K[o, i]) for o in range(3)] for i in range(2)])
    np.testing.assert_allclose(graph.blocks[0].weight, expected, rtol=1e-6)
    np.testing.assert_allclose(graph.blocks[1].weight, [[2.0], [3.0], [4.0]], rtol=1e-6)  # 1×1 kernels
    assert graph.meta.kernel_norm == norm


def test_entry_l1_edges_by_hand():
    graph = graph_from_module(conv_bn_net())
    # in 0: |K| sums 10, 4, 5; in 1: 2, 4, 7; times |s| = 1.5, 1, 1
    np.testing.assert_allclose(graph.blocks[0].weight, [[15.0, 4.0, 5.0], [3.0, 4.0, 7.0]], rtol=1e-6)


def test_folded_bias_is_b_minus_mean_times_scale_plus_beta():
    graph = graph_from_module(conv_bn_net())
    np.testing.assert_allclose(graph.biases[1], (CONV_BIAS - MEAN) * SCALE + BETA, rtol=1e-6)  # 0.25, -3.5, 2
    np.testing.assert_allclose(graph.biases[1], [0.25, -3.5, 2.0], rtol=1e-6)
    np.testing.assert_array_equal(graph.biases[2], [-0.5])


def test_conv_layers_are_channels():
    graph = graph_from_module(conv_bn_net())
    assert [(l.name, l.kind, l.role, l.size, l.shape) for l in graph.layers] == [
        ("input", "input", "input", 2, [2, 4, 4]),
        ("0", "conv", "hidden", 3, [3, 3, 3]),
        ("3", "conv", "output", 1, [1, 3, 3]),
    ]


def test_negative_gamma_gives_signed_linear_edges():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2, eps=0.0))
    set_params(net, **{"0.weight": [[1.0, 2.0], [3.0, 4.0]], "1.weight": [-2.0, 1.0], "1.running_var": [1.0, 4.0]})
    graph = graph_from_module(net)
    np.testing.assert_allclose(graph.blocks[0].weight, [[-2.0, 1.5], [-4.0, 2.0]])


def test_without_folding_batchnorm_passes_through():
    graph = graph_from_module(conv_bn_net(), fold_batchnorm=False)
    expected = np.array([[np.abs(K[o, i]).sum() for o in range(3)] for i in range(2)])
    np.testing.assert_allclose(graph.blocks[0].weight, expected)
    np.testing.assert_allclose(graph.biases[1], CONV_BIAS)
    assert graph.meta.fold_batchnorm is False


def test_batchnorm_after_relu_cannot_be_folded():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1))
    with pytest.raises(UnsupportedLayerError, match=r"'2' \(BatchNorm2d\) does not directly follow.*fold_batchnorm"):
        graph_from_module(net, input_shape=(1, 5, 5))
    assert len(graph_from_module(net, input_shape=(1, 5, 5), fold_batchnorm=False).layers) == 3


def test_training_mode_and_running_stats_are_left_alone():
    net = conv_bn_net().train()
    before = net[1].running_mean.clone()
    graph_from_module(net)
    assert net.training and net[1].training
    torch.testing.assert_close(net[1].running_mean, before)


# -- flatten, residual adds, grouped convs -------------------------------------------------------------------------


def test_conv_flatten_linear_edges():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    weight = torch.arange(24.0).reshape(3, 8) - 10
    set_params(net, **{"0.weight": [[[[1.0]]], [[[2.0]]]], "3.weight": weight.tolist()})
    for norm, f in [("entry_l1", lambda m: np.abs(m).sum()), ("fro", lambda m: np.linalg.norm(m))]:
        graph = graph_from_module(net, input_shape=(1, 2, 2), kernel_norm=norm)
        w = weight.numpy()
        # Flatten is channel-major: unit u's weights on channel c are w[u, 4c:4c+4], the 2×2 map of channel c.
        expected = np.array([[f(w[u, 4 * c : 4 * c + 4].reshape(2, 2)) for u in range(3)] for c in range(2)])
        assert (graph.blocks[1].src_layer, graph.blocks[1].dst_layer) == (1, 2)
        np.testing.assert_allclose(graph.blocks[1].weight, expected, rtol=1e-6)


def test_global_pooling_to_one_by_one_gives_signed_edges():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 1))
    set_params(net, **{"3.weight": [[-1.5, 2.0]]})
    graph = graph_from_module(net, input_shape=(1, 4, 4))
    np.testing.assert_allclose(graph.blocks[1].weight, [[-1.5], [2.0]])


def test_residual_add_connects_both_producers():
    net = nets.residual_mlp()
    graph = graph_from_module(net)
    names = [l.name for l in graph.layers]
    assert names == ["input", "stem", "block.fc1", "block.fc2", "head"]
    pairs = {(b.src_layer, b.dst_layer): b.weight for b in graph.blocks}
    assert set(pairs) == {(0, 1), (1, 2), (2, 3), (1, 4), (3, 4)}
    head = net.head.weight.detach().double().numpy().T
    np.testing.assert_array_equal(pairs[(1, 4)], head)  # stem → head through the skip
    np.testing.assert_array_equal(pairs[(3, 4)], head)  # fc2 → head
    assert [l.role for l in graph.layers] == ["input", "hidden", "hidden", "hidden", "output"]


def test_contributions_on_the_same_pair_are_summed():
    class Doubled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            h = torch.relu(self.fc1(x))
            return self.fc2(h + h)

    net = Doubled()
    graph = graph_from_module(net)
    np.testing.assert_allclose(graph.blocks[-1].weight, 2 * net.fc2.weight.detach().double().numpy().T)


def test_residual_conv_block_with_depthwise_conv():
    net = nets.residual_cnn()
    graph = graph_from_module(net)
    pairs = {(b.src_layer, b.dst_layer): b.weight for b in graph.blocks}
    assert set(pairs) == {(0, 1), (1, 2), (2, 3), (1, 4), (3, 4), (4, 5)}
    assert np.count_nonzero(pairs[(1, 4)] - np.diag(np.diag(pairs[(1, 4)]))) == 0  # depthwise: diagonal
    np.testing.assert_array_equal(pairs[(1, 4)], pairs[(3, 4)])
    # mean over (H, W) keeps one neuron per channel, so the head reads the depthwise channels with signed weights
    np.testing.assert_array_equal(pairs[(4, 5)], net.head.weight.detach().double().numpy().T)


def test_example_nets_trace():
    for factory, sizes in [
        (nets.digits_mlp, [64, 64, 64, 10]),
        (nets.digits_cnn, [1, 16, 16, 32, 10]),
        (nets.small_cnn, [1, 64, 64, 64, 128, 10]),
    ]:
        assert [l.size for l in graph_from_module(factory()).layers] == sizes


def test_example_nets_use_glorot_weights_and_zero_biases():
    net = nets.mlp_4x256()
    bound = np.sqrt(6 / (784 + 256))
    largest = float(net[1].weight.detach().abs().max())
    assert 0.9 * bound < largest <= bound
    assert not net[1].bias.any()


# -- errors --------------------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.embed(x))


class WithNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))

    def forward(self, x):
        return self.body(x)


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(8, 2)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], dim=1))


@pytest.mark.parametrize(
    ("net", "pattern"),
    [
        (WithNorm(), r"Module 'body\.1' \(LayerNorm\) is not supported"),
        (Encoder(), r"Module 'embed' \(Embedding\) is not supported"),
        (Concat(), r"Concat calls torch\.cat"),
        (nn.Sequential(nn.Conv1d(2, 2, 3), nn.Flatten(), nn.Linear(4, 2)), r"Module '0' \(Conv1d\)"),
    ],
)
def test_unsupported_modules_name_their_path_and_type(net, pattern):
    with pytest.raises(UnsupportedLayerError, match=pattern) as info:
        graph_from_module(net, input_shape=(4,))
    assert isinstance(info.value, TypeError)


def test_nan_weights_name_the_layer_and_counts():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        net[2].weight[0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    with pytest.raises(NonFiniteWeightsError, match=r"Layer '2' has 3 non-finite weights \(NaN or inf\) out of 24\."):
        graph_from_module(net)


def test_nan_in_batchnorm_statistics_names_the_folded_layer():
    net = conv_bn_net()
    with torch.no_grad():
        net[1].running_var[1] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match=r"Layer '0' has 8 non-finite weights.*after folding BatchNorm '1'"):
        graph_from_module(net)


def test_conv_net_without_input_shape_asks_for_one():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 1))
    with pytest.raises(ArchitectureError, match="input_shape=\\(C, H, W\\)"):
        graph_from_module(net)


def test_wrong_input_shape_is_an_architecture_error():
    with pytest.raises(ArchitectureError, match=r"input of shape \(2, 3\) failed"):
        graph_from_module(tiny_mlp(), input_shape=(3,))
