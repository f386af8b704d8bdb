"""Activation graphs: recording with hooks, streaming correlations against scipy, sparsification, and the store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from neuronmap.examples import nets
from neuronmap.loaders import graph_from_module
from neuronmap.loaders.activations import (
    ActivationRecorder,
    centered_ranks,
    compute_correlations,
    correlate,
    count_edges,
    gram,
    ranks,
    sparsify,
)
from neuronmap.loaders.activations.ranks import _rank_rows_torch
from neuronmap.loaders.datasets import load_dataset
from neuronmap.loaders.errors import (
    ActivationError,
    ActivationGraphExistsError,
    ActivationLayoutError,
    OptionError,
    UnknownActivationGraphError,
)
from neuronmap.loaders.ingest.activations import (
    ModelNotReadyForActivationsError,
    delete_activation_graph,
    graph_status,
    ingest_activation_graph,
    list_graphs,
)
from neuronmap.loaders.ingest.weights import UnknownModelError, ingest
from tests.loaders.test_ingest import Crash, crash_after


@pytest.fixture(scope="module")
def digits_x() -> torch.Tensor:
    return load_dataset("digits").x_test  # (449, 64)


def digits_net(dead: tuple[int, ...] = ()) -> nn.Module:
    """digits_mlp with a fixed seed; the units in ``dead`` (of the first hidden layer) never fire."""
    torch.manual_seed(0)
    net = nets.digits_mlp()
    with torch.no_grad():
        for unit in dead:
            net[0].bias[unit] = -1e3
    return net


def hidden(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        h1 = torch.relu(net[0](x))
        return torch.cat([h1, torch.relu(net[2](h1))], 1).double().numpy()


# -- recording ----------------------------------------------------------------------------------------------------


def test_hooks_record_the_hidden_units_after_their_activation(digits_x):
    net = digits_net()
    rec = ActivationRecorder(net, device="cpu")
    assert [layer.name for layer in rec.layers] == ["input", "0", "2", "4"] and rec.recorded == [1, 2]
    np.testing.assert_array_equal(rec.units, np.arange(64, 192))
    np.testing.assert_allclose(rec(digits_x).numpy(), hidden(net, digits_x), rtol=0, atol=1e-6)
    pre = ActivationRecorder(net, layers=["0"], point="pre", device="cpu")(digits_x)
    with torch.no_grad():
        torch.testing.assert_close(pre, net[0](digits_x))
    assert net.training  # the module's own mode is left alone


def test_layer_selection_by_role_name_and_index():
    net = digits_net()
    assert ActivationRecorder(net, layers="all", device="cpu").recorded == [0, 1, 2, 3]
    assert ActivationRecorder(net, layers=["4", 1], device="cpu").recorded == [1, 3]
    with pytest.raises(ActivationError, match="no layer 'fc9'.*input, 0, 2, 4"):
        ActivationRecorder(net, layers=["fc9"], device="cpu")


@pytest.mark.parametrize("reduction", ["mean", "l2", "spectral"])
def test_conv_channels_are_reduced_per_image(reduction):
    torch.manual_seed(1)
    net = nets.digits_cnn()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so "post" must apply them
        for bn in (net[1], net[4]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    x = load_dataset("digits-image").x_test[:40]
    rec = ActivationRecorder(net, layers=["0", "3"], reduction=reduction, device="cpu")
    got = rec(x).double().numpy()
    net.eval()
    with torch.no_grad():
        maps = [net[2](net[1](net[0](x)))]
        maps.append(net[5](net[4](net[3](maps[0]))))
    maps = [m.double().numpy() for m in maps]
    if reduction == "mean":
        expected = [m.mean(axis=(2, 3)) for m in maps]
    elif reduction == "l2":
        expected = [np.sqrt((m**2).sum(axis=(2, 3))) for m in maps]
    else:  # the reference's np.linalg.norm(fmap, ord=2, axis=(1, 2)) on channels-last maps
        expected = [np.linalg.norm(m.transpose(0, 2, 3, 1), ord=2, axis=(1, 2)) for m in maps]
    np.testing.assert_allclose(got, np.concatenate(expected, axis=1), rtol=1e-5, atol=1e-5)


def test_functional_activations_and_residual_nets_are_recorded():
    torch.manual_seed(2)
    net = nets.residual_mlp()
    x = torch.randn(50, 16)
    rec = ActivationRecorder(net, layers=["stem", "block.fc1"], device="cpu")
    with torch.no_grad():
        stem = torch.relu(net.stem(x))
        expected = torch.cat([stem, torch.relu(net.block.fc1(stem))], 1)
    torch.testing.assert_close(rec(x), expected)


@pytest.mark.parametrize("point", ["post", "pre"])
def test_exported_programs_record_the_units_of_their_module(point):
    torch.manual_seed(1)
    net = nets.digits_cnn().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as the demo's trained digits-cnn has
        for bn in (net[1], net[4]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    x = load_dataset("digits-image").x_test[:40]
    ep = torch.export.export(net, (x[:1],))  # exported with a batch of one, as the demo's digits-cnn.pt2 is
    exported = ActivationRecorder(ep, layers="all", point=point, device="cpu")
    plain = ActivationRecorder(net, layers="all", point=point, device="cpu")
    assert [layer.model_dump() for layer in exported.layers] == [layer.model_dump() for layer in plain.layers]
    assert exported.units.tolist() == plain.units.tolist()
    torch.testing.assert_close(exported(x), plain(x))  # any batch size, not only the exported one
    corr = compute_correlations(ep, x, method="pearson", device="cpu")
    torch.testing.assert_close(corr.r, compute_correlations(net, x, method="pearson", device="cpu").r)
    with pytest.raises(ActivationError, match="exported with"):
        ActivationRecorder(ep, input_shape=(64,), device="cpu")


# -- correlations against numpy / scipy ----------------------------------------------------------------------------


@pytest.fixture(params=["int8", "float64"])
def gram_path(request, monkeypatch):
    """Run a test on both Spearman Gram paths of the CPU: int8 products (where torch._int_mm works) and float64."""
    if request.param == "int8" and not gram._int8_matmul_works():
        pytest.skip("torch._int_mm does not work on this CPU and torch")
    monkeypatch.setattr(gram, "INT8_GRAM", request.param == "int8")
    return request.param


def test_pearson_and_spearman_equal_scipy_and_dead_units_are_excluded(digits_x):
    net = digits_net(dead=(5, 17))
    values = hidden(net, digits_x)
    constant = np.ptp(values, axis=0) == 0
    assert constant[5] and constant[17]
    kept = values[:, ~constant]
    for method in ("pearson", "spearman"):
        corr = compute_correlations(net, digits_x, method=method, batch_size=64, device="cpu", data="digits:test")
        np.testing.assert_array_equal(corr.excluded, 64 + np.flatnonzero(constant))
        np.testing.assert_array_equal(corr.ordinals, 64 + np.flatnonzero(~constant))
        assert corr.meta.n_inputs == 449 and corr.meta.method == method and corr.meta.data == "digits:test"
        expected = stats.spearmanr(kept).statistic if method == "spearman" else np.corrcoef(kept, rowvar=False)
        np.testing.assert_allclose(corr.r.numpy(), expected, rtol=0, atol=1e-6)
    pearson = compute_correlations(net, digits_x, method="pearson", device="cpu").r.numpy()
    for i, j in [(0, 1), (3, 70), (40, 41)]:
        assert pearson[i, j] == pytest.approx(stats.pearsonr(kept[:, i], kept[:, j]).statistic, abs=1e-6)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_streaming_in_any_batch_size_equals_one_shot(method, gram_path, monkeypatch):
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(size=(300, 24)) @ rng.normal(size=(24, 24)), 0).astype(np.float32)
    x[:, 3] = np.round(x[:, 3])  # many ties
    x[:, 7] = 2.5  # constant
    original = x.copy()
    one_shot = correlate(torch.from_numpy(x), method=method, batch_size=300, device="cpu")
    np.testing.assert_array_equal(x, original)  # the caller's matrix is read, never ranked in place
    assert one_shot.constant.tolist() == [i == 7 for i in range(24)]
    for batch_size in (1, 7, 64):
        streamed = correlate(torch.from_numpy(x), method=method, batch_size=batch_size, device="cpu")
        torch.testing.assert_close(streamed.r, one_shot.r, rtol=0, atol=1e-12)

    def batches():  # an iterable: its length is known only if announced
        return (torch.from_numpy(x[i : i + 50]) for i in range(0, 300, 50))

    # Spearman keeps the values in RAM or spills them to disk; with the pipeline off, it ranks them in place and
    # accumulates the products over chunks of inputs. Every way gives the same numbers.
    where = set()
    for pipeline in (True, False):
        if not pipeline:
            monkeypatch.setattr(gram, "RANK_COPY_BYTES", 0)
            monkeypatch.setattr(gram, "GRAM_CHUNK_BYTES", 0)  # 256 inputs a chunk: two chunks
        for n_inputs in (300, None):
            for memory_limit in (1 << 30, 0):
                got = correlate(batches(), method=method, n_inputs=n_inputs, memory_limit=memory_limit, device="cpu")
                torch.testing.assert_close(got.r, one_shot.r, rtol=0, atol=1e-12)
                where.add(got.buffer)
    assert where == ({""} if method == "pearson" else {"memory", "disk"})


def test_spearman_of_many_units_and_inputs_equals_scipy_on_every_path(gram_path, monkeypatch):
    # Large enough for the tiled upper-triangle products (> 256 units, ≥ 4096 inputs).
    rng = np.random.default_rng(5)
    x = np.maximum(rng.normal(size=(4200, 300)) @ rng.normal(size=(300, 300)) / 17 - 0.2, 0).astype(np.float32)
    expected = stats.spearmanr(x).statistic
    direct = correlate(torch.from_numpy(x), device="cpu")
    assert direct.buffer == "none"
    np.testing.assert_allclose(direct.r.numpy(), expected, rtol=0, atol=1e-12)
    monkeypatch.setattr(gram, "RANK_COPY_BYTES", 0)
    in_place = correlate(torch.from_numpy(x), batch_size=1000, device="cpu")
    assert in_place.buffer == "memory"
    np.testing.assert_allclose(in_place.r.numpy(), expected, rtol=0, atol=1e-12)


def test_end_to_end_batch_size_changes_nothing_beyond_float32_rounding(digits_x):
    net = digits_net()
    full = compute_correlations(net, digits_x, batch_size=449, device="cpu")
    for batch_size in (13, 100):
        part = compute_correlations(net, digits_x, batch_size=batch_size, device="cpu")
        np.testing.assert_array_equal(part.ordinals, full.ordinals)
        torch.testing.assert_close(part.r, full.r, rtol=0, atol=1e-5)


def test_ranks_equal_scipy_rankdata_with_ties_signed_zeros_and_negatives():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(37, 501)).astype(np.float32)
    values[:, ::3] = np.round(values[:, ::3])
    values[0, :100] = -0.0
    values[0, 100:200] = 0.0
    values[1] = 4.0
    values[2, 5] = -np.float32(3e38)
    expected = stats.rankdata(values, axis=1) - (501 + 1) / 2
    np.testing.assert_array_equal(centered_ranks(torch.from_numpy(values)).numpy(), expected)
    np.testing.assert_array_equal(_rank_rows_torch(torch.from_numpy(values)).numpy(), expected)
    for use_torch in (False, True):  # in place, through a strided view, as a GPU buffer is ranked
        buffer = torch.from_numpy(values.T.copy())
        ranks._rank_in_place(buffer.T, use_torch=use_torch)
        np.testing.assert_array_equal(buffer.T.numpy(), expected)


@pytest.mark.parametrize("kind", ["normal", "relu", "rounded", "relu_rounded_signed_zeros", "constant_rows"])
def test_ranks_of_random_blocks_equal_scipy_on_every_path(kind):
    # Blocks with and without bottom runs set aside, with sparse and dense ties, as floats and as int8 digits.
    rng = np.random.default_rng(len(kind))
    for _ in range(40):
        rows, n = int(rng.integers(1, 40)), int(rng.integers(1, 400))
        x = rng.normal(size=(rows, n)).astype(np.float32)
        if kind == "relu":
            x = np.maximum(x, 0)
        elif kind == "rounded":
            x = np.round(x * rng.integers(1, 4))
        elif kind == "relu_rounded_signed_zeros":
            x = np.maximum(np.round(x * 20) / 20, -0.3)
            x[rng.random(x.shape) < 0.1] *= -0.0
        elif kind == "constant_rows":
            x[: rows // 2] = 3.0
        expected = stats.rankdata(x, axis=1) - (n + 1) / 2
        np.testing.assert_array_equal(centered_ranks(torch.from_numpy(x)).numpy(), expected)
        digits = gram._int8_digits(n)
        planes = np.zeros((digits, rows, n), np.int8)
        ranks._rank_rows_numpy(torch.from_numpy(x.T.copy()).T, planes)  # strided, as a buffer's view
        doubled = sum(planes[d].astype(np.int64) * 256**d for d in range(digits))
        np.testing.assert_array_equal(doubled, 2 * expected)


@pytest.mark.parametrize("n, digits", [(2, 1), (128, 1), (129, 2), (32640, 2), (32641, 3), (1 << 20, 3)])
def test_int8_digits_hold_every_doubled_rank(n, digits):
    assert gram._int8_digits(n) == digits
    v = np.arange(-(n - 1), n, dtype=np.int32)  # every integer a doubled rank of n inputs can be
    planes = np.empty((digits, 1, v.size), np.int8)
    ranks._split_digits(v[None].copy(), planes)
    np.testing.assert_array_equal(sum(planes[d, 0].astype(np.int64) * 256**d for d in range(digits)), v)


def test_int8_sums_stay_within_int32_and_int64():
    assert gram.INT8_CHUNK * 128**2 < 2**31  # |digit| ≤ 128 in every product
    assert gram._int8_digits(1 << 22) is None  # Σ v² could pass int64: float64 takes over


def exact_gram(x: np.ndarray) -> np.ndarray:
    """Σ over inputs of the products of centred ranks (scipy's), from exact int64 sums of doubled ranks."""
    doubled = (2 * stats.rankdata(x, axis=0) - (x.shape[0] + 1)).astype(np.int64)
    return (doubled.T @ doubled) / 4  # below 2⁵³ here: exact in float64


@pytest.mark.parametrize("n, p", [(300, 13), (4100, 40), (33000, 6)])  # 33,000 inputs need 3 digits
def test_int8_gram_equals_the_exact_and_the_float64_gram(n, p, monkeypatch):
    if not gram._int8_matmul_works():
        pytest.skip("torch._int_mm does not work on this CPU and torch")
    rng = np.random.default_rng(n)
    x = np.maximum(rng.normal(size=(n, p)) @ rng.normal(size=(p, p)), 0).astype(np.float32)
    x[:, 1] = np.round(x[:, 1])  # many ties
    x[:, 2] = 0.5  # constant
    x[::3, 3] = -0.0  # ties with +0.0
    expected = exact_gram(x)
    cpu = torch.device("cpu")

    def gram_of(int8: bool, copy: bool, chunk: int) -> np.ndarray:
        monkeypatch.setattr(gram, "INT8_GRAM", int8)
        monkeypatch.setattr(gram, "RANK_COPY_BYTES", 1 << 30 if copy else 0)  # 0: rank in place
        monkeypatch.setattr(gram, "INT8_CHUNK", chunk)
        monkeypatch.setattr(gram, "GRAM_CHUNK_BYTES", 0)  # in place: 256 inputs a chunk at most
        values = torch.from_numpy(x.copy())
        got = gram._spearman_gram(values.T, cpu, 1 << 30)
        assert got.dtype == torch.float64 and got.shape == (p, p)
        return got.numpy()

    for copy in (True, False):
        np.testing.assert_array_equal(gram_of(False, copy, 1 << 16), expected)
        for chunk in (1 << 16, 64):  # 64: the int32 sums end every 64 inputs and add up in int64
            np.testing.assert_array_equal(gram_of(True, copy, chunk), expected)


def test_spearman_falls_back_to_float64_where_int_mm_is_missing(monkeypatch):
    monkeypatch.delattr(torch, "_int_mm", raising=False)  # as in an older torch
    monkeypatch.setattr(gram, "_INT8_MATMUL", None)  # probe again
    monkeypatch.setattr(gram, "INT8_GRAM", None)
    assert not gram._use_int8(torch.device("cpu"))
    rng = np.random.default_rng(8)
    x = np.maximum(rng.normal(size=(500, 30)), 0).astype(np.float32)
    np.testing.assert_allclose(
        correlate(torch.from_numpy(x), device="cpu").r.numpy(), stats.spearmanr(x).statistic, rtol=0, atol=1e-9
    )


def test_int8_gram_is_for_the_cpu_only():
    assert not gram._use_int8(torch.device("cuda"))


def test_bad_inputs_are_refused_with_the_rule():
    net = digits_net()
    with pytest.raises(OptionError, match="reduction='max'"):
        ActivationRecorder(net, reduction="max", device="cpu")  # a value outside the Literal, on purpose
    with pytest.raises(OptionError, match="method='kendall'"):
        correlate(torch.zeros(4, 2), method="kendall")  # a value outside the Literal, on purpose
    with pytest.raises(ActivationError, match="at least 2 inputs"):
        correlate(torch.ones(1, 3), device="cpu")
    with pytest.raises(ActivationError, match="do not fit this network"):
        ActivationRecorder(net, device="cpu")(torch.zeros(3, 65))
    x = torch.rand(20, 64)
    x[4, 0] = float("nan")
    with pytest.raises(ActivationError, match="Non-finite activations.*layer '0'"):
        compute_correlations(net, x, device="cpu")
    values = torch.rand(30, 5)
    values[7, 3] = float("inf")
    for method in ("spearman", "pearson"):
        with pytest.raises(ActivationError, match=r"Non-finite .*: 1, the first in column 3 at input 7"):
            correlate(values, method=method, device="cpu")
        with pytest.raises(ActivationError, match="Non-finite"):
            correlate(-values, method=method, batch_size=4, n_inputs=30, device="cpu")


# -- sparsification ---------------------------------------------------------------------------------------------


def expected_pairs(r: np.ndarray, min_r2: float, top_k: int | None) -> set[tuple[int, int]]:
    """The promise of sparsify, in plain numpy: r² ≥ min_r2, and (with top_k) among either end's k strongest."""
    n = r.shape[0]
    r2 = r**2
    chosen = np.ones((n, n), bool)
    if top_k is not None:
        chosen[:] = False
        for i in range(n):
            others = [j for j in np.argsort(-r2[i], kind="stable") if j != i][:top_k]
            chosen[i, others] = True
        chosen |= chosen.T
    return {(i, j) for i in range(n) for j in range(i + 1, n) if r2[i, j] >= min_r2 and chosen[i, j]}


@pytest.mark.parametrize("min_r2, top_k", [(0.0, None), (0.05, None), (0.0, 3), (0.02, 5), (0.0, 1000)])
def test_sparsify_keeps_exactly_the_promised_edges(digits_x, min_r2, top_k):
    corr = compute_correlations(digits_net(dead=(2,)), digits_x, device="cpu")
    edges = sparsify(corr, min_r2=min_r2, top_k=top_k)
    r = corr.r.numpy()
    index = {int(o): i for i, o in enumerate(corr.ordinals)}
    got = {(index[int(s)], index[int(d)]) for s, d in zip(edges.src, edges.dst)}
    assert got == expected_pairs(r, min_r2, top_k)
    assert edges.n_edges == len(got) == count_edges(corr, min_r2=min_r2, top_k=top_k)
    assert np.all(edges.src < edges.dst)
    np.testing.assert_array_equal(edges.r, [r[index[int(s)], index[int(d)]] for s, d in zip(edges.src, edges.dst)])
    np.testing.assert_array_equal(edges.r2, edges.r**2)
    if (min_r2, top_k) == (0.0, None):
        assert edges.n_edges == corr.n_pairs == corr.n_units * (corr.n_units - 1) // 2
    if top_k == 3:
        assert corr.n_units * 3 / 2 <= edges.n_edges <= corr.n_units * 3
    with pytest.raises(ActivationError, match="min_r2"):
        sparsify(corr, min_r2=1.5)


# -- the store ------------------------------------------------------------------------------------------------


@pytest.fixture
def stored_digits_model(store, model_id):
    net = digits_net(dead=(9,))
    ingest(store, model_id, graph_from_module(net))
    return model_id, net


def stored_edges(store, model, name):
    rows = store.run("activations.graph_edges", model=model, graph=name, lo=0, hi=10_000)
    return {(row["src"], d): (r, r2) for row in rows for d, r, r2 in zip(row["dst"], row["r"], row["r2"])}


def test_ingest_writes_every_edge_once_with_r_and_r2(store, stored_digits_model, digits_x):
    model, net = stored_digits_model
    edges = sparsify(compute_correlations(net, digits_x, device="cpu", data="digits:test"), top_k=4)
    written = ingest_activation_graph(store, model, "digits-top4", edges, batch_size=37)
    assert written == edges.n_edges
    assert graph_status(store, model, "digits-top4") == "ready"
    assert stored_edges(store, model, "digits-top4") == {
        (int(s), int(d)): (float(r), float(r2)) for s, d, r, r2 in zip(edges.src, edges.dst, edges.r, edges.r2)
    }
    assert store.run("activations.graph_counts", model=model, graph="digits-top4") == [{"n_edges": edges.n_edges}]
    [info] = store.run("activations.graph_info", model=model, name="digits-top4")
    assert (info["method"], info["reduction"], info["n_inputs"], info["top_k"], info["data"]) == (
        "spearman",
        "l2",
        449,
        4,
        "digits:test",
    )
    assert info["excluded"] == edges.excluded.tolist() and 64 + 9 in info["excluded"]
    assert info["n_excluded"] == edges.excluded.size and info["layers"] == [1, 2]
    assert info["n_units"] == 128 - edges.excluded.size and info["n_edges"] == edges.n_edges


def test_graphs_coexist_replace_only_on_request_and_leave_with_their_model(store, stored_digits_model, digits_x):
    model, net = stored_digits_model
    corr = compute_correlations(net, digits_x, method="pearson", device="cpu")
    ingest_activation_graph(store, model, "a", sparsify(corr, min_r2=0.1))
    ingest_activation_graph(store, model, "b", sparsify(corr, top_k=2))
    with pytest.raises(ActivationGraphExistsError, match="already has an activation graph 'a'.*--replace"):
        ingest_activation_graph(store, model, "a", sparsify(corr, top_k=1))
    assert store.run("activations.graph_counts", model=model, graph="a") == [{"n_edges": count_edges(corr, min_r2=0.1)}]
    ingest_activation_graph(store, model, "a", sparsify(corr, top_k=1), replace=True)
    assert store.run("activations.graph_counts", model=model, graph="a") == [{"n_edges": count_edges(corr, top_k=1)}]
    assert [(g["name"], g["status"]) for g in list_graphs(store, model)] == [("a", "ready"), ("b", "ready")]
    assert delete_activation_graph(store, model, "b") == count_edges(corr, top_k=2)
    assert graph_status(store, model, "b") is None
    assert store.run("activations.graph_counts", model=model, graph="a") == [{"n_edges": count_edges(corr, top_k=1)}]
    assert store.run("admin.model_counts", model=model)[0]["n_edges"] == 64 * 64 * 2 + 64 * 10  # weights untouched
    with pytest.raises(UnknownActivationGraphError):
        delete_activation_graph(store, model, "b")
    store.run("admin.delete_model", model=model)
    assert list_graphs(store, model) == [] and graph_status(store, model, "a") is None


def test_a_crash_midway_leaves_a_failed_graph_that_a_rerun_replaces(store, stored_digits_model, digits_x):
    model, net = stored_digits_model
    edges = sparsify(compute_correlations(net, digits_x, device="cpu"), top_k=5)
    with pytest.raises(Crash):
        ingest_activation_graph(store, model, "g", edges, batch_size=50, workers=1, on_batch=crash_after(2))
    assert graph_status(store, model, "g") == "failed"
    ingest_activation_graph(store, model, "g", edges, batch_size=50)  # no replace needed for leftovers
    assert graph_status(store, model, "g") == "ready"
    assert store.run("activations.graph_counts", model=model, graph="g") == [{"n_edges": edges.n_edges}]


def test_ingest_checks_the_model_and_its_layers(store, model_id, digits_x):
    edges = sparsify(compute_correlations(digits_net(), digits_x, device="cpu"), top_k=2)
    with pytest.raises(UnknownModelError):
        ingest_activation_graph(store, model_id, "g", edges)
    store.run("ingest.begin_model", model=model_id, meta={}, layers=[])
    with pytest.raises(ModelNotReadyForActivationsError, match="'loading'"):
        ingest_activation_graph(store, model_id, "g", edges)
    store.run("admin.delete_model", model=model_id)
    other = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    ingest(store, model_id, graph_from_module(other))
    with pytest.raises(ActivationLayoutError, match="layer 1 \\('0', 64 units\\).*32 units"):
        ingest_activation_graph(store, model_id, "g", edges)
    assert graph_status(store, model_id, "g") is None
