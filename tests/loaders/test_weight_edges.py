"""Kernel-slice norms against numpy's matrix norms, as the reference's ``test_conv_tensor_to_adj`` pins them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuronmap.loaders import OptionError, kernel_slice_norm
from neuronmap.loaders.tracing.weight_edges import conv_edges, flatten_linear_edges, linear_edges

SLICE = np.array([[1.0, -2.0], [3.0, 4.0]])  # |.| has column sums 4 and 6


@pytest.mark.parametrize(
    ("norm", "expected"),
    [
        ("entry_l1", 10.0),
        ("induced1", 6.0),
        ("spectral2", np.linalg.svd(np.abs(SLICE), compute_uv=False)[0]),
        ("fro", np.sqrt(30.0)),
    ],
)
def test_one_slice_by_hand(norm, expected):
    kernel = torch.tensor(SLICE).reshape(1, 1, 2, 2)
    assert kernel_slice_norm(kernel, norm) == pytest.approx(np.array([[expected]]), rel=1e-12)


@pytest.mark.parametrize("size", [4, 5])
def test_matches_numpy_matrix_norms_on_random_kernels(size):
    rng = np.random.default_rng(size)
    kernel = rng.normal(size=(3, 2, size, size))  # (out, in, kh, kw)
    reference = {
        "entry_l1": lambda k: np.abs(k).sum(),
        "induced1": lambda k: np.linalg.norm(np.abs(k), 1),
        "spectral2": lambda k: np.linalg.norm(np.abs(k), 2),
        "fro": lambda k: np.linalg.norm(k, "fro"),
    }
    for norm, f in reference.items():
        expected = np.array([[f(kernel[o, i]) for o in range(3)] for i in range(2)])  # (in, out)
        got = kernel_slice_norm(torch.from_numpy(kernel), norm)
        assert got.shape == (2, 3) and got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=norm)


def test_induced1_is_the_max_over_columns_not_rows():
    k = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # row sum 3, column sums 1
    assert kernel_slice_norm(torch.tensor(k).reshape(1, 1, 3, 3), "induced1")[0, 0] == 1.0


def test_grouped_conv_is_block_diagonal():
    kernel = torch.arange(1.0, 1.0 + 4 * 2 * 1 * 1).reshape(4, 2, 1, 1)  # 4 in, 4 out, 2 groups
    edges = conv_edges(kernel, groups=2)
    expected = np.array([[1, 3, 0, 0], [2, 4, 0, 0], [0, 0, 5, 7], [0, 0, 6, 8]], dtype=float)
    np.testing.assert_array_equal(edges, expected)


def test_depthwise_conv_is_diagonal():
    kernel = -torch.arange(1.0, 4.0).reshape(3, 1, 1, 1)
    np.testing.assert_array_equal(conv_edges(kernel, groups=3), np.diag([1.0, 2.0, 3.0]))


def test_flatten_edges_read_channel_major_slices():
    weight = torch.arange(24.0).reshape(3, 8) - 10  # a Linear(8, 3) reading a flattened (2, 2, 2) map
    edges = flatten_linear_edges(weight, (2, 2, 2), "entry_l1")
    w = weight.numpy()
    expected = np.array([[np.abs(w[u, 4 * c : 4 * c + 4]).sum() for u in range(3)] for c in range(2)])
    np.testing.assert_array_equal(edges, expected)


def test_linear_edges_are_signed_transpose():
    weight = torch.tensor([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]])
    np.testing.assert_array_equal(linear_edges(weight), weight.numpy().T)


def test_unknown_norm_lists_the_choices():
    with pytest.raises(OptionError, match="kernel_norm='l1'.*entry_l1.*induced1.*spectral2.*fro"):
        kernel_slice_norm(torch.zeros(1, 1, 2, 2), "l1")
