"""The compiled lesion kernels: built on first use and cached, the same counts as the torch paths, and a clean
fallback to torch where they cannot be built."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from neuronmap.service import native
from neuronmap.service.lesion import (LesionNetwork, draw_random_sets, lesion_correct_counts,
                                      one_at_a_time_correct_counts, padded_indices)

KERNELS = native.lesion_kernels()
needs_kernels = pytest.mark.skipif(KERNELS is None, reason="no C compiler or no AVX-512 here: torch paths only")


def mlp(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 7))


def data(net: LesionNetwork, n: int = 150) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 12, generator=torch.Generator().manual_seed(1))
    y = net.run(x).argmax(1)
    y[::3] = torch.randint(0, 7, (len(y[::3]),), generator=torch.Generator().manual_seed(2))
    return x, y


@needs_kernels
@pytest.mark.parametrize("width", [32, 40])  # 40: the kernels' 16-float vectors need zero padding
def test_kernels_give_the_one_at_a_time_counts_for_the_last_two_hidden_layers(width):
    net = LesionNetwork(mlp(width), (12,))
    x, y = data(net)
    rng = np.random.default_rng(0)
    lesions = [{layer: units} for layer in (2, 3) for size in (1, 3, width // 2, width - 2, width)
               for units in draw_random_sets(np.arange(width), size, 4, rng)]  # delta and complement forms
    assert net.native_tail(net.layer(2)) is not None and net.native_tail(net.layer(3)) is not None
    assert net.native_tail(net.layer(1)) is None  # two Linears after the delta: torch
    single = one_at_a_time_correct_counts(net, x, y, 7, lesions, how="weights")
    kernel = lesion_correct_counts(net, x, y, 7, lesions, batch_size=64)
    torch_only = lesion_correct_counts(net, x, y, 7, lesions, batch_size=64, native=False)
    assert np.abs(kernel - single).sum() <= 2  # float rounding may decide a near tie, no more
    assert np.abs(kernel - torch_only).sum() <= 2
    assert kernel.sum() < single[0].sum() * len(lesions)  # lesions change the predictions: not a constant


@needs_kernels
def test_kernel_counts_match_a_direct_computation_with_ties_at_the_first_maximum():
    torch.manual_seed(3)
    b, c, width, outputs = 40, 24, 32, 5
    h = torch.relu(torch.randn(b, c))
    wt, z = torch.randn(c, width), torch.randn(b, width)
    wout, bout = torch.randn(outputs, width), torch.randn(outputs)
    y = torch.randint(0, outputs, (b,))
    sets = [np.array([0, 5, 7]), np.array([3]), np.arange(c)]
    idx = padded_indices(sets, c)
    wout_padded = torch.cat([wout, torch.zeros(3, width)])
    counts = KERNELS.lesion_counts(h, wt, idx, z, subtract=True, wout=wout_padded, bout=bout, n_out=outputs, y=y,
                                   n_classes=outputs, threads=2)
    for row, units in enumerate(sets):
        delta = h[:, units] @ wt[units]
        logits = torch.relu(z - delta) @ wout.t() + bout
        expected = np.bincount(y[logits.argmax(1) == y].numpy(), minlength=outputs)
        np.testing.assert_array_equal(counts[row], expected)
    # no hidden step: the Linear is the output layer, and equal logits go to the first class, as argmax
    flat = KERNELS.lesion_counts(torch.zeros(2, c), torch.zeros(c, 16), padded_indices([np.array([1])], c),
                                 torch.zeros(2, 16), subtract=True, wout=None, bout=None, n_out=3,
                                 y=torch.tensor([0, 1]), n_classes=3, threads=1)
    assert flat.tolist() == [[1, 0, 0]]


@needs_kernels
def test_the_build_is_cached_and_a_missing_compiler_falls_back_to_torch(tmp_path, monkeypatch):
    built = native.lesion_kernels.__wrapped__(tmp_path)
    assert built is not None
    files = list(tmp_path.glob("lesion_kernels-*.so"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    assert native.lesion_kernels.__wrapped__(tmp_path) is not None
    assert files[0].stat().st_mtime_ns == stamp  # loaded from the cache, not rebuilt
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    assert native.lesion_kernels.__wrapped__(tmp_path / "elsewhere") is None


def test_lesions_run_on_torch_when_the_kernels_are_unavailable(monkeypatch):
    net = LesionNetwork(mlp(32), (12,))
    x, y = data(net, 60)
    rng = np.random.default_rng(4)
    lesions = [{3: units} for units in draw_random_sets(np.arange(32), 5, 6, rng)]
    monkeypatch.setattr(native, "lesion_kernels", lambda: None)
    fallback = LesionNetwork(mlp(32), (12,))
    assert fallback.native_tail(fallback.layer(3)) is None
    np.testing.assert_array_equal(lesion_correct_counts(fallback, x, y, 7, lesions),
                                  lesion_correct_counts(net, x, y, 7, lesions, native=False))


@needs_kernels
def test_operands_that_break_the_layout_contract_are_refused():
    h, wt, z = torch.zeros(4, 8), torch.zeros(8, 16), torch.zeros(4, 16)
    idx = padded_indices([np.array([1])], 8)
    with pytest.raises(ValueError, match="float32"):
        KERNELS.lesion_counts(h.double(), wt, idx, z, subtract=True, wout=None, bout=None, n_out=3,
                              y=torch.zeros(4, dtype=torch.int64), n_classes=3, threads=1)
    with pytest.raises(ValueError, match="multiple of 16"):
        KERNELS.lesion_counts(h, torch.zeros(8, 12), idx, torch.zeros(4, 12), subtract=True, wout=None, bout=None,
                              n_out=3, y=torch.zeros(4, dtype=torch.int64), n_classes=3, threads=1)
