"""Clusterability: the real n-cut against batched shuffled nulls, and the statistics of methods.md §4."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.cluster import SpectralClustering

from neuronmap.device import numpy_generator, sample_seeds, seed_sequence
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.clustering.clusterability import clusterability
from neuronmap.service.clustering.ncut import ncut
from neuronmap.service.clustering.shuffles import shuffle_graph
from neuronmap.service.errors import ClusteringInputError
from neuronmap.service.stats import adjust_pvalues, cohens_d, percentile_pvalue, z_score

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def modular_mlp(
    sizes: list[int], seed: int, n_modules: int = 4, delta: float = 0.6, density: float = 1.0
) -> BlockGraph:
    """Glorot |W| with the reference's clusterable initialisation (methods.md §4)."""
    rng = np.random.default_rng(seed)
    modules = [rng.integers(0, n_modules, size) for size in sizes]
    inside = 1 + (1 - delta) * (n_modules - 1)
    blocks = []
    for i in range(len(sizes) - 1):
        limit = np.sqrt(6 / (sizes[i] + sizes[i + 1]))
        w = np.abs(rng.uniform(-limit, limit, (sizes[i], sizes[i + 1])))
        w *= np.where(modules[i][:, None] == modules[i + 1][None, :], inside, delta)
        if density < 1:
            w *= rng.random(w.shape) < density
        blocks.append((i, i + 1, torch.as_tensor(w)))
    return BlockGraph(sizes, blocks)


@pytest.mark.parametrize("device", DEVICES)
def test_a_modular_net_is_more_clusterable_than_its_shuffles(device):
    graph = modular_mlp([100, 64, 64, 10], seed=0)
    result = clusterability(graph, 4, 20, random_state=0, device=device)
    assert result.null_ncuts.shape == (20,)
    assert result.ncut < float(result.null_ncuts.min())
    assert result.p_value == pytest.approx(1 / 21)
    assert result.z_score < -3
    values = result.null_ncuts.numpy()
    assert result.mean == pytest.approx(values.mean()) and result.sd == pytest.approx(values.std(ddof=0))
    assert result.labels.shape == (graph.n_nodes,)


def test_statistics_follow_the_reference_formulae():
    graph = modular_mlp([60, 40, 40], seed=1, delta=1.0)  # no modules: the real net is like its shuffles
    result = clusterability(graph, 3, 15, random_state=1)
    values = result.null_ncuts.numpy()
    assert result.p_value == pytest.approx((np.sum(values < result.ncut) + 1) / 16)
    assert result.z_score == pytest.approx((result.ncut - values.mean()) / values.std())


def test_one_seed_reproduces_everything_whatever_the_batch_size():
    graph = modular_mlp([50, 40, 30], seed=2)
    a = clusterability(graph, 3, 9, random_state=5, batch_size=2)
    b = clusterability(graph, 3, 9, random_state=5, batch_size=9)
    c = clusterability(graph, 3, 9, random_state=6)
    torch.testing.assert_close(a.null_ncuts, b.null_ncuts, rtol=1e-6, atol=1e-9)
    assert torch.equal(a.labels, b.labels)
    assert not torch.allclose(a.null_ncuts, c.null_ncuts)
    assert a.entropy == 5


def test_unseeded_runs_record_their_entropy():
    graph = modular_mlp([30, 20, 10], seed=3)
    first = clusterability(graph, 2, 3)
    again = clusterability(graph, 2, 3, random_state=first.entropy)
    torch.testing.assert_close(first.null_ncuts, again.null_ncuts)


def test_null_matches_sklearn_on_the_same_shuffles():
    graph = modular_mlp([120, 80, 80, 10], seed=4)
    result = clusterability(graph, 5, 8, random_state=7, parity=True)
    reduced, _ = graph.drop_isolated()
    ref = []
    for i, seed in enumerate(sample_seeds(seed_sequence(7), 8)):
        shuffled, _ = shuffle_graph(reduced, "layer", numpy_generator(seed)).drop_isolated()
        labels = (
            SpectralClustering(5, affinity="precomputed", n_init=25, random_state=i).fit(shuffled.to_scipy()).labels_
        )
        ref.append(ncut(shuffled, labels))
    # the same eight shuffled networks: each null n-cut within 1% of sklearn's (or better)
    assert np.all(result.null_ncuts.numpy() <= np.array(ref) * 1.01)


@pytest.mark.parametrize("method", ["layer", "layer_nonzero"])
def test_pruned_nets_and_per_shuffle_isolated_neurons(method):
    # at 8% density the `layer` shuffle leaves some neurons without edges: each null drops its own
    graph = modular_mlp([80, 60, 40], seed=5, density=0.08)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sparse shuffles may be disconnected; that is reported, not an error
        result = clusterability(graph, 3, 6, method=method, random_state=8)
    assert torch.isfinite(result.null_ncuts).all()
    assert bool((result.null_ncuts >= 0).all()) and bool((result.null_ncuts <= 3).all())


def test_errors():
    graph = modular_mlp([10, 8], seed=6)
    with pytest.raises(ClusteringInputError, match="n_shuffles"):
        clusterability(graph, 2, 0)
    with pytest.raises(ClusteringInputError, match="shuffle method"):
        clusterability(graph, 2, 3, method="layer_all_distribution")
    with pytest.raises(ClusteringInputError, match="BlockGraph"):
        clusterability(graph.to_dense(), 2, 3)


# --- stats (methods.md §8 test_compute_pvalue)


def test_compute_pvalue():
    null = np.arange(100)
    assert percentile_pvalue(0, null) == pytest.approx(1 / 101)
    assert percentile_pvalue(1, null) == pytest.approx(2 / 101)
    assert percentile_pvalue(101, null) == pytest.approx(1.0)
    assert percentile_pvalue(98.5, null, "greater") == pytest.approx(2 / 101)


def test_z_score_and_effect_size():
    null = np.array([1.0, 2.0, 3.0, 4.0])
    assert z_score(0.0, null) == pytest.approx((0 - 2.5) / np.std(null))
    assert np.isnan(z_score(1.0, [2.0, 2.0]))
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0])
    assert cohens_d(a, b) == pytest.approx(-1.0)


def test_adjust_pvalues():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    np.testing.assert_allclose(adjust_pvalues(p, "bonferroni"), [0.04, 0.16, 0.12, 1.0])
    # Benjamini–Hochberg: sorted 0.01, 0.03, 0.04, 0.5 → ×4/1, ×4/2, ×4/3, ×4/4, then step-up minimum
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
