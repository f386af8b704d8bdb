"""The compiled lesion kernels: built on first use and cached, the same counts as the torch paths, and a clean
fallback to torch where they cannot be built."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from neuronmap.service.assessment import kernels as native
from neuronmap.service.assessment.lesion import (
    draw_random_sets,
    lesion_correct_counts,
    one_at_a_time_correct_counts,
    padded_indices,
)
from neuronmap.service.assessment.network import LesionNetwork
from neuronmap.service.config import Settings

KERNELS = native.lesion_kernels()
needs_kernels = pytest.mark.skipif(KERNELS is None, reason="no C compiler or no AVX-512 here: torch paths only")


def mlp(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(12, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, 7),
    )


def data(net: LesionNetwork, n: int = 150) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 12, generator=torch.Generator().manual_seed(1))
    y = net.run(x).argmax(1)
    y[::3] = torch.randint(0, 7, (len(y[::3]),), generator=torch.Generator().manual_seed(2))
    return x, y


@needs_kernels
@pytest.mark.parametrize("width", [32, 40])  # 40: the kernels' 16-float vectors and AMX's tiles need zero padding
def test_kernels_give_the_one_at_a_time_counts_for_the_last_three_hidden_layers(width):
    net = LesionNetwork(mlp(width), (12,))
    x, y = data(net)
    rng = np.random.default_rng(0)
    lesions = [
        {layer: units}
        for layer in (1, 2, 3)
        for size in (1, 3, width // 2, width - 2, width)
        for units in draw_random_sets(np.arange(width), size, 4, rng)
    ]  # delta and complement forms
    assert net.native_tail(net.layer(2)) is not None and net.native_tail(net.layer(3)) is not None
    deep = net.native_tail(net.layer(1))  # two Linears after the delta one: AMX, or torch without it
    assert (deep is not None and deep.hidden is not None) == KERNELS.amx
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
    counts = KERNELS.lesion_counts(
        h, wt, idx, z, subtract=True, wout=wout_padded, bout=bout, n_out=outputs, y=y, n_classes=outputs, threads=2
    )
    for row, units in enumerate(sets):
        delta = h[:, units] @ wt[units]
        logits = torch.relu(z - delta) @ wout.t() + bout
        expected = np.bincount(y[logits.argmax(1) == y].numpy(), minlength=outputs)
        np.testing.assert_array_equal(counts[row], expected)
    # no hidden step: the Linear is the output layer, and equal logits go to the first class, as argmax
    flat = KERNELS.lesion_counts(
        torch.zeros(2, c),
        torch.zeros(c, 16),
        padded_indices([np.array([1])], c),
        torch.zeros(2, 16),
        subtract=True,
        wout=None,
        bout=None,
        n_out=3,
        y=torch.tensor([0, 1]),
        n_classes=3,
        threads=1,
    )
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


def test_the_kernels_can_be_turned_off_by_a_setting(tmp_path, monkeypatch):
    assert Settings.from_env({}).native_kernels is True
    assert Settings.from_env({"NEURONMAP_NATIVE_KERNELS": "0"}).native_kernels is False

    def no_compiler(*args, **kwargs):
        raise AssertionError("the compiler ran although the kernels are turned off")

    monkeypatch.setenv("NEURONMAP_NATIVE_KERNELS", "0")
    monkeypatch.setattr(native.shutil, "which", lambda name: "/usr/bin/cc")
    monkeypatch.setattr(native.subprocess, "run", no_compiler)
    assert native.lesion_kernels.__wrapped__(tmp_path) is None
    assert not list(tmp_path.iterdir())  # nothing was built
    monkeypatch.setenv("NEURONMAP_NATIVE_KERNELS", "1")
    with pytest.raises(AssertionError, match="the compiler ran"):  # on again: the build is attempted
        native.lesion_kernels.__wrapped__(tmp_path)


def test_lesions_run_on_torch_when_the_kernels_are_unavailable(monkeypatch):
    net = LesionNetwork(mlp(32), (12,))
    x, y = data(net, 60)
    rng = np.random.default_rng(4)
    lesions = [{3: units} for units in draw_random_sets(np.arange(32), 5, 6, rng)]
    monkeypatch.setattr(native, "lesion_kernels", lambda: None)
    fallback = LesionNetwork(mlp(32), (12,))
    assert fallback.native_tail(fallback.layer(3)) is None
    np.testing.assert_array_equal(
        lesion_correct_counts(fallback, x, y, 7, lesions), lesion_correct_counts(net, x, y, 7, lesions, native=False)
    )


@needs_kernels
def test_operands_that_break_the_layout_contract_are_refused():
    h, wt, z = torch.zeros(4, 8), torch.zeros(8, 16), torch.zeros(4, 16)
    idx = padded_indices([np.array([1])], 8)
    with pytest.raises(ValueError, match="float32"):
        KERNELS.lesion_counts(
            h.double(),
            wt,
            idx,
            z,
            subtract=True,
            wout=None,
            bout=None,
            n_out=3,
            y=torch.zeros(4, dtype=torch.int64),
            n_classes=3,
            threads=1,
        )
    with pytest.raises(ValueError, match="labels must lie in 0"):
        KERNELS.lesion_counts(
            h,
            wt,
            idx,
            z,
            subtract=True,
            wout=None,
            bout=None,
            n_out=3,
            y=torch.tensor([0, 1, 3, 0]),
            n_classes=3,
            threads=1,
        )
    with pytest.raises(ValueError, match="multiple of 16"):
        KERNELS.lesion_counts(
            h,
            torch.zeros(8, 12),
            idx,
            torch.zeros(4, 12),
            subtract=True,
            wout=None,
            bout=None,
            n_out=3,
            y=torch.zeros(4, dtype=torch.int64),
            n_classes=3,
            threads=1,
        )


needs_amx = pytest.mark.skipif(KERNELS is None or not KERNELS.amx, reason="no AMX tiles here: torch for that tail")


def deep_case(seed: int, b: int = 70, c: int = 24, width: int = 64, hidden: int = 40, outputs: int = 6):
    """Random operands of a lesion two hidden steps before the output, padded as the kernel takes them."""
    g = torch.Generator().manual_seed(seed)
    h = torch.relu(torch.randn(b, c, generator=g))
    wt, z = torch.randn(c, width, generator=g) / 4, torch.randn(b, width, generator=g)
    w2, b2 = torch.randn(hidden, width, generator=g) / 8, torch.randn(hidden, generator=g) / 4
    wout, bout = torch.randn(outputs, hidden, generator=g), torch.randn(outputs, generator=g)
    return h, wt, z, w2, b2, wout, bout


def padded_outputs(wout: torch.Tensor, width: int) -> torch.Tensor:
    """The last Linear as the kernel takes it: rows padded to a multiple of 4, columns to the hidden width."""
    padded = torch.zeros(-(-wout.shape[0] // 4) * 4, width)
    padded[: wout.shape[0], : wout.shape[1]] = wout
    return padded


def deep_counts(h, wt, z, w2, b2, wout, bout, sets, y, prepared=None):
    prepared = prepared or native.DeepHidden.prepare(w2, b2, wout, bout, wt.shape[1])
    padded = padded_outputs(wout, prepared.width)
    return KERNELS.lesion_counts_deep(
        h,
        wt,
        padded_indices(sets, h.shape[1]),
        z,
        subtract=True,
        hidden=prepared,
        wout=padded,
        bout=bout,
        n_out=wout.shape[0],
        y=y,
        n_classes=wout.shape[0],
        threads=2,
    )


def feed_rows(a, prepared, wout, bout, y):
    """The kernel's counts and fallbacks for hidden-layer inputs ``a`` fed directly: no unit is lesioned (h = 0),
    so the base, ``a``, is what the hidden product reads."""
    padded = padded_outputs(wout, prepared.width)
    width = prepared.wt.shape[0]
    return KERNELS.lesion_counts_deep(
        torch.zeros(a.shape[0], 4),
        torch.zeros(4, width),
        padded_indices([np.array([0])], 4),
        a,
        subtract=True,
        hidden=prepared,
        wout=padded,
        bout=bout,
        n_out=wout.shape[0],
        y=y,
        n_classes=wout.shape[0],
        threads=1,
    )


def float64_counts(h, wt, z, w2, b2, wout, bout, sets, y):
    h, wt, z, w2, b2, wout, bout = (t.double() for t in (h, wt, z, w2, b2, wout, bout))
    rows = []
    for units in sets:
        logits = torch.relu(torch.relu(z - h[:, units] @ wt[units]) @ w2.t() + b2) @ wout.t() + bout
        rows.append(np.bincount(y[logits.argmax(1) == y].numpy(), minlength=wout.shape[0]))
    return np.array(rows)


@needs_amx
def test_the_amx_kernel_gives_the_exact_predictions_and_certifies_nearly_all():
    h, wt, z, w2, b2, wout, bout = deep_case(5)
    y = torch.randint(0, 6, (h.shape[0],), generator=torch.Generator().manual_seed(6))
    sets = [np.array([0, 5, 7]), np.array([3]), np.arange(20), np.arange(24)]
    counts, fallbacks = deep_counts(h, wt, z, w2, b2, wout, bout, sets, y)
    np.testing.assert_array_equal(counts, float64_counts(h, wt, z, w2, b2, wout, bout, sets, y))
    assert fallbacks <= 0.05 * len(sets) * h.shape[0]  # the certificate decides nearly every prediction


@needs_amx
def test_uncertified_predictions_are_recomputed_in_float32_with_ties_at_the_first_maximum():
    h, wt, z, w2, b2, wout, bout = deep_case(7)
    wout[3], bout[3] = wout[1], bout[1]  # classes 1 and 3 tie exactly wherever they lead: never certified
    y = torch.full((h.shape[0],), 1)
    sets = [np.array([2, 4]), np.arange(12)]
    counts, fallbacks = deep_counts(h, wt, z, w2, b2, wout, bout, sets, y)
    expected = float64_counts(h, wt, z, w2, b2, wout, bout, sets, y)
    assert expected[:, 1].sum() > 0  # class 1 leads somewhere, so the tie is exercised
    np.testing.assert_array_equal(counts, expected)  # the first of the tied classes, as argmax
    assert fallbacks >= expected[:, 1].sum()
    # a certificate that can never hold sends every pair to float32, with the same counts
    prepared = native.DeepHidden.prepare(w2, b2, wout, bout, wt.shape[1])
    never = dataclasses.replace(prepared, coef_abs=float("inf"))
    counts, fallbacks = deep_counts(h, wt, z, w2, b2, wout, bout, sets, y, prepared=never)
    np.testing.assert_array_equal(counts, expected)
    assert fallbacks == len(sets) * h.shape[0]


def test_the_certificate_bounds_the_split_product_error():
    """The bound of ``DeepHidden`` holds for the three-term bfloat16 product, emulated in float64, and it is tight
    enough to certify: far below the logits' typical gaps."""
    h, wt, z, w2, b2, wout, bout = deep_case(9, b=400)
    prepared = native.DeepHidden.prepare(w2, b2, wout, bout, wt.shape[1])
    a = torch.relu(z - h[:, :5] @ wt[:5])  # a lesioned layer's values, as the kernel feeds them to the product
    hi = a.to(torch.bfloat16).double()
    lo = (a - hi.float()).to(torch.bfloat16).double()
    whi = w2.to(torch.bfloat16).double()
    wlo = (w2 - whi.float()).to(torch.bfloat16).double()
    split = torch.relu(hi @ whi.t() + lo @ whi.t() + hi @ wlo.t() + b2.double())
    exact = torch.relu(a.double() @ w2.double().t() + b2.double())
    error = ((split @ wout.double().t()) - (exact @ wout.double().t())).abs().max(dim=1).values
    bound = prepared.coef_h * a.double().sum(1) + prepared.coef_h2 * split.sum(1) + prepared.coef_abs
    assert bool((error <= bound).all())
    assert float(error.max()) > 0  # the split does lose something: the bound is not checked against nothing
    logits = exact @ wout.double().t() + bout.double()
    top2 = logits.topk(2, dim=1).values
    assert float((2 * bound).median()) < 0.01 * float((top2[:, 0] - top2[:, 1]).median())


@needs_amx
def test_amx_operands_that_break_the_layout_contract_are_refused():
    h, wt, z, w2, b2, wout, bout = deep_case(11)
    prepared = native.DeepHidden.prepare(w2, b2, wout, bout, 64)
    with pytest.raises(ValueError, match="multiple of 32"):
        KERNELS.lesion_counts_deep(
            h,
            wt[:, :48].contiguous(),
            padded_indices([np.array([1])], 24),
            z[:, :48].contiguous(),
            subtract=True,
            hidden=prepared,
            wout=torch.zeros(8, 64),
            bout=bout,
            n_out=6,
            y=torch.zeros(h.shape[0], dtype=torch.int64),
            n_classes=6,
            threads=1,
        )


@needs_amx
def test_the_tile_product_equals_an_emulation_of_its_three_bfloat16_products():
    """The hidden product alone: bfloat16 parts of a and w in the kernel's tile layout, the three products, float32
    sums. Equal to a float64 emulation up to the float32 sums' rounding (a dropped product or a layout slip is off
    by far more), and within the certificate's bound of the exact product."""
    g = torch.Generator().manual_seed(12)
    width, hidden, rows = 96, 64, 29  # 29: fewer rows than the kernel's 32
    w2 = torch.randn(hidden, width, generator=g) * torch.linspace(0.1, 3.0, width)  # varies along the inputs
    a = torch.relu(torch.randn(rows, width, generator=g)) * 7
    a[3] = 0.0  # a zero row
    prepared = native.DeepHidden.prepare(w2, None, torch.ones(1, hidden), None, width)
    got = KERNELS.hidden_product(a, prepared).double()

    def parts(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hi = t.to(torch.bfloat16).float()
        return hi.double(), (t - hi).to(torch.bfloat16).double()

    (ahi, alo), (whi, wlo) = parts(a), parts(w2)
    emulated = ahi @ whi.t() + alo @ whi.t() + ahi @ wlo.t()
    magnitude = a.double() @ w2.double().abs().t()  # Σ|a||w| per output
    n = 3 * width
    sums = n * 2.0**-24 / (1 - n * 2.0**-24) * 1.02 * magnitude
    assert bool(((got - emulated).abs() <= sums).all())
    assert bool((got[3] == 0).all())
    split = 2.0**-16 * (3 + 4 * 2.0**-8 + 2 * 2.0**-16) * magnitude
    exact = a.double() @ w2.double().t()
    assert bool(((got - exact).abs() <= split + sums).all())
    assert float(((got - exact).abs() / magnitude.clamp_min(1e-30)).max()) < 1e-4  # about 16 bits, not 8


@needs_amx
@pytest.mark.parametrize("deciding", [1, 2])
def test_predictions_across_an_exact_tie_are_the_exact_ones_at_every_gap(deciding):
    """Class 0 reads hidden units that need only a_hi·w_hi; class 1 units that need a_lo·w_hi (and the remainder of
    a that the split leaves out); class 2 units that need a_hi·w_lo. The bias of the deciding class sweeps across
    the exact tie with class 0, in relative gaps from 2⁻⁶ down to 2⁻²⁴: certified predictions must be the exact
    ones at every gap, and the float32 fallback must get every gap wider than float32's rounding."""
    from fractions import Fraction

    width, hidden = 64, 96
    a = torch.ones(1, width)
    a[0, 32:] = 1 + 2.0**-9 + 2.0**-18  # a_lo = 2⁻⁹, and 2⁻¹⁸ left out by the split
    step = torch.linspace(1, 2, 32)  # weights that vary along the inputs, exact in bfloat16 up to w_lo below
    step = step.to(torch.bfloat16).float()
    w2 = torch.zeros(hidden, width)
    w2[0:32, :32] = step / 64  # exact in bfloat16, reading a's exact half
    w2[32:64, 32:] = step / 64  # exact, reading a's inexact half
    w2[64:96, :32] = step * (1 + 2.0**-9) / 64  # w_lo = 2⁻⁹·w_hi, reading a's exact half
    wout = torch.zeros(3, hidden)
    for k in range(3):
        wout[k, 32 * k : 32 * (k + 1)] = 1.0
    exact = [
        sum(
            Fraction(float(a[0, j])) * Fraction(float(w2[i, j]))
            for i in range(32 * k, 32 * k + 32)
            for j in range(width)
        )
        for k in range(3)
    ]
    prepared = native.DeepHidden.prepare(w2, torch.zeros(hidden), wout, None, width)
    certified = 0
    for sign in (1, -1):
        for e in np.arange(6, 24.01, 0.25):
            bout = torch.zeros(3)
            bout[deciding] = float(exact[0] - exact[deciding]) + sign * 2.0**-e * float(exact[0])
            bout[3 - deciding] = -1e3  # the third class never leads
            want = deciding if Fraction(float(bout[deciding])) + exact[deciding] > exact[0] else 0
            counts, fallbacks = feed_rows(a, prepared, wout, bout, torch.tensor([want]))
            right = int(counts.sum()) == 1
            certified += 1 - fallbacks
            assert right or (fallbacks == 1 and e > 21), (sign, e)  # float32 may miss a gap under its rounding
    assert 0 < certified < 2 * len(np.arange(6, 24.01, 0.25))  # both outcomes of the certificate occur


@needs_amx
def test_flushed_tiny_values_and_overflows_are_never_certified():
    """Two ways the tile unit can be wrong by more than its rounding: values below float32's normal range are
    flushed to zero (which matters next to huge weights), and a value beyond bfloat16's range becomes inf, then
    NaN, which the ReLU hides. Both must reach the float32 fallback, which gets them right."""

    def predict(value: float, weight: float, bout: torch.Tensor) -> tuple[int, int]:
        a = torch.zeros(1, 32)
        a[0, 0] = value
        w2 = torch.zeros(32, 32)
        w2[0, 0] = weight
        wout = torch.zeros(2, 32)
        wout[0, 0] = 1.0
        prepared = native.DeepHidden.prepare(w2, None, wout, bout, 32)
        counts, fallbacks = feed_rows(a, prepared, wout, bout, torch.tensor([0]))
        return int(counts.sum()), fallbacks

    # 2⁻¹³⁰ · 2¹⁰⁰ = 2⁻³⁰ beats class 1's 2⁻³¹; flushed, it would be 0
    assert predict(2.0**-130, 2.0**100, torch.tensor([0.0, 2.0**-31])) == (1, 1)
    # a normal value whose low bfloat16 part is below the normal range
    assert predict(2.0**-119 * (1 + 2.0**-10), 2.0**100, torch.tensor([0.0, 2.0**-19])) == (1, 1)
    # 3.4e38 rounds to an infinite bfloat16: 3.4e38 · 1e-10 = 3.4e28 beats class 1's 1e27
    assert predict(3.4e38, 1e-10, torch.tensor([0.0, 1e27])) == (1, 1)


@needs_amx
def test_a_tie_decided_by_the_last_layers_rounding_is_never_certified_wrong():
    """With a = 0 the hidden product is exact and its bias alone feeds the last Linear, so only the last layer's
    float32 rounding can err: two classes whose exact logits differ by 2⁻¹⁰ down to 2⁻³⁰ of their size. Where float32
    gets the order wrong, the certificate must not have vouched for it."""
    from fractions import Fraction

    g = torch.Generator().manual_seed(13)
    width, hidden = 32, 64
    b2 = (torch.rand(hidden, generator=g) + 1) * 1000
    row = torch.randn(hidden, generator=g)
    wrong_certified = certified = wrong = 0
    for sign in (1, -1):
        for e in np.arange(10, 30.01, 0.5):
            wout = torch.stack([row, row])
            exact0 = sum(Fraction(float(w)) * Fraction(float(b)) for w, b in zip(row, b2))
            wout[1, 0] = float(row[0] + sign * 2.0**-e * float(abs(exact0)) / float(b2[0]))
            exact1 = sum(Fraction(float(w)) * Fraction(float(b)) for w, b in zip(wout[1], b2))
            want = 1 if exact1 > exact0 else 0
            prepared = native.DeepHidden.prepare(torch.zeros(hidden, width), b2, wout, None, width)
            counts, fallbacks = feed_rows(torch.zeros(1, width), prepared, wout, torch.zeros(2), torch.tensor([want]))
            certified += 1 - fallbacks
            wrong += int(counts.sum()) == 0
            wrong_certified += int(counts.sum()) == 0 and fallbacks == 0
    assert wrong_certified == 0
    assert wrong > 0 and certified > 0  # float32 does err at the smallest gaps; the widest ones are certified
