"""Lesion tests: batching equals one lesion at a time, the statistics equal hand-computed values, and a network
with planted modules has important modules where a random partition of it has none."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from neuronmap.examples.nets import digits_cnn, digits_mlp, residual_mlp
from neuronmap.loaders.datasets import load_dataset
from neuronmap.service.assessment.common import load_split
from neuronmap.service.assessment.double_lesion import assess_double_lesion
from neuronmap.service.assessment.importance import ImportanceConfig, assess_importance
from neuronmap.service.assessment.layout import SubClusterRef
from neuronmap.service.assessment.lesion import (
    draw_random_sets,
    keep_masks,
    lesion_correct_counts,
    one_at_a_time_correct_counts,
)
from neuronmap.service.assessment.network import LesionNetwork
from neuronmap.service.errors import AssessmentInputError
from neuronmap.service.stats import (
    adjust_pvalues,
    chi2_uniformity_pvalue,
    empirical_pvalues,
    fisher_combined_pvalue,
    range_statistic,
)
from tests.conftest import DEVICES

N_MODULES = 10  # one module per class: module c's hidden units feed only class c


# -- the planted network ------------------------------------------------------------------------------------------


@functools.cache
def _planted_state() -> tuple[dict[str, torch.Tensor], np.ndarray, float]:
    """digits_mlp (64 → 64 → 64 → 10) trained with ten planted modules, one per class.

    Unit u of each hidden layer belongs to module u·10 // 64 (6–7 units). The hidden→hidden and hidden→output
    weights are block-diagonal and non-negative (projected after every Adam step), so module c is a sub-network
    that only ever adds evidence for class c; the input layer feeds every unit. Dropout during training spreads
    each class over its module's units, so a random set of the same size hurts less than the module itself.
    """
    torch.manual_seed(0)
    net = digits_mlp()
    unit_module = torch.arange(64) * N_MODULES // 64
    masks = [
        (net[2].weight, (unit_module[:, None] == unit_module[None, :]).float()),
        (net[4].weight, (torch.arange(10)[:, None] == unit_module[None, :]).float()),
    ]

    def project() -> None:
        with torch.no_grad():
            for weight, mask in masks:
                weight.mul_(mask).clamp_(min=0)

    project()
    trainer = nn.Sequential(net[0], net[1], nn.Dropout(0.3), net[2], net[3], nn.Dropout(0.3), net[4]).train()
    data = load_dataset("digits")
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(15):
        order = torch.randperm(len(data.x_train), generator=generator)
        for start in range(0, len(order), 64):
            index = order[start : start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(trainer(data.x_train[index]), data.y_train[index]).backward()
            optimizer.step()
            project()
    net.eval()
    accuracy = float((net(data.x_test).argmax(1) == data.y_test).float().mean())
    return {k: v.detach().clone() for k, v in net.state_dict().items()}, unit_module.numpy(), accuracy


def planted_net() -> tuple[nn.Module, np.ndarray]:
    """A fresh copy of the planted network (eval mode) and each hidden unit's module."""
    state, modules, _ = _planted_state()
    net = digits_mlp()
    net.load_state_dict(state)
    return net.eval(), modules


def subclusters_of(hidden_labels: dict[int, np.ndarray]) -> list[SubClusterRef]:
    """Sub-clusters of the two hidden layers (indices 1 and 2, named "0" and "2") from per-layer unit labels."""
    out = []
    for layer, labels in sorted(hidden_labels.items()):
        for cluster in np.unique(labels):
            out.append(
                SubClusterRef(
                    cluster=int(cluster),
                    layer=layer,
                    layer_name=str(2 * layer - 2),
                    units=tuple(np.flatnonzero(labels == cluster).tolist()),
                    pool_size=labels.size,
                )
            )
    return out


def planted_subclusters() -> list[SubClusterRef]:
    _, modules = planted_net()
    return subclusters_of({1: modules, 2: modules})


def random_subclusters(seed: int) -> list[SubClusterRef]:
    """A random partition with the planted sizes: each hidden layer's module labels permuted."""
    _, modules = planted_net()
    rng = np.random.default_rng(seed)
    return subclusters_of({1: rng.permutation(modules), 2: rng.permutation(modules)})


POOLS = {1: np.arange(64), 2: np.arange(64)}


# -- statistics against hand-computed values ------------------------------------------------------------------------


def test_percentile_counts_ties_against_the_real_set_unless_strict():
    null = [[0.1, 0.2, 0.2, 0.3, 0.9]]
    assert empirical_pvalues([0.2], null)[0] == pytest.approx(4 / 6)  # 0.1, 0.2, 0.2 are worse or equal
    assert empirical_pvalues([0.2], null, ties="strict")[0] == pytest.approx(2 / 6)
    assert empirical_pvalues([0.05], null)[0] == pytest.approx(1 / 6)  # the minimum, 1/(N+1)
    assert empirical_pvalues([0.3], null, "greater")[0] == pytest.approx(3 / 6)  # 0.3, 0.9
    assert empirical_pvalues([0, 1], [np.arange(100), np.arange(100)], ties="strict").tolist() == pytest.approx(
        [1 / 101, 2 / 101]
    )  # the reference's test_compute_pvalue (methods.md §8)


def test_fisher_with_the_centring_shift_equals_the_formula():
    p, n = np.array([1 / 21, 5 / 21, 1.0]), 20
    shifted = p - 1 / (2 * 21)
    statistic = -2 * np.log(shifted).sum()
    assert fisher_combined_pvalue(p, n) == pytest.approx(scipy.stats.chi2.sf(statistic, 2 * p.size), rel=1e-12)
    unshifted = scipy.stats.chi2.sf(-2 * np.log(p).sum(), 2 * p.size)
    assert fisher_combined_pvalue(p, n, shift=False) == pytest.approx(unshifted, rel=1e-12)
    assert math.isnan(fisher_combined_pvalue([np.nan], n))


def test_reference_chi2_bins_the_ranks():
    n = 4  # ranks 0..4, five bins
    p = np.array([1, 1, 2, 5, 5, 5]) / 5  # ranks 0, 0, 1, 4, 4, 4
    observed = np.array([2, 1, 0, 0, 3])
    expected = p.size / 5
    statistic = ((observed - expected) ** 2 / expected).sum()
    assert chi2_uniformity_pvalue(p, n) == pytest.approx(scipy.stats.chi2.sf(statistic, 4), rel=1e-12)


def test_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 → ×4/rank: 0.04, 0.06, 0.0533, 0.5 → step-up minimum: 0.04, 0.0533, 0.0533, 0.5
    assert adjust_pvalues(p, "bh") == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert adjust_pvalues(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 1.0])


def test_range_statistic_by_hand():
    # Δ = (−0.6, −0.2, 0.2): mean −0.2, ratios 3, 1, −1 → R = 4
    assert range_statistic([-0.6, -0.2, 0.2]) == pytest.approx(4.0)
    assert range_statistic([[0.1, 0.1], [0.0, 0.0]]).tolist()[0] == pytest.approx(0.0)
    assert math.isnan(range_statistic([0.0, 0.0]))  # no change on average: undefined


# -- batching ------------------------------------------------------------------------------------------------------


def _lesions(net: LesionNetwork, rng: np.random.Generator, per_layer: int = 6) -> list[dict[int, np.ndarray]]:
    lesions = []
    for point in net.layers[:-1]:
        for size in (1, 3, point.size // 2):
            lesions += [{point.index: units} for units in draw_random_sets(np.arange(point.size), size, 2, rng)]
    return lesions[: per_layer * len(net.layers)]


def inplace_mlp() -> nn.Module:
    """In-place ReLUs: the intact run keeps every value for the lesioned runs, so they must not overwrite them."""
    return nn.Sequential(
        nn.Linear(64, 32), nn.ReLU(inplace=True), nn.Linear(32, 32), nn.ReLU(inplace=True), nn.Linear(32, 10)
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "factory", [digits_mlp, residual_mlp, digits_cnn, inplace_mlp], ids=["mlp", "residual", "cnn-bn", "inplace-relu"]
)
def test_batched_lesions_equal_one_lesion_at_a_time(factory, device):
    torch.manual_seed(0)
    net = LesionNetwork(factory(), device=device)
    x = torch.rand(120, *net.input_shape)
    y = torch.randint(0, 10, (120,))
    lesions = _lesions(net, np.random.default_rng(0))
    batched = lesion_correct_counts(net, x, y, 10, lesions, method="mask", batch_size=64, max_elements=20_000)
    single = one_at_a_time_correct_counts(net, x, y, 10, lesions, how="mask", batch_size=64)
    np.testing.assert_array_equal(batched, single)
    # the logits themselves, not just the counts: several lesions in one pass equal one lesion per pass exactly
    env = net.run(x[:64].to(net.device), keep=True)
    for point in net.layers[:-1]:
        sets = [lesion[point.index] for lesion in lesions if point.index in lesion]
        together = net.run_lesioned(env, masks={point.value: keep_masks(sets, point.size, net.device)})
        apart = torch.cat(
            [net.run_lesioned(env, masks={point.value: keep_masks([s], point.size, net.device)}) for s in sets]
        )
        assert torch.equal(together, apart)
    if factory is not digits_cnn:  # zeroing incoming weights and bias, as the reference did: the same lesion
        np.testing.assert_array_equal(batched, one_at_a_time_correct_counts(net, x, y, 10, lesions, how="weights"))
    if any(point.delta is not None for point in net.layers):
        np.testing.assert_array_equal(batched, lesion_correct_counts(net, x, y, 10, lesions, method="auto"))


def test_exported_programs_lesion_like_their_modules():
    from neuronmap.loaders.tracing.trace_export import trace_export

    torch.manual_seed(0)
    module = digits_cnn().eval()
    ep = torch.export.export(module, (torch.zeros(2, 1, 8, 8),))
    exported, plain = LesionNetwork(ep.module(), traced=trace_export(ep)), LesionNetwork(module)
    assert [(p.index, p.name, p.size) for p in exported.layers] == [(p.index, p.name, p.size) for p in plain.layers]
    x, y = torch.rand(30, 1, 8, 8), torch.randint(0, 10, (30,))
    lesions = [{1: np.array([0, 3])}, {2: np.array([1, 2, 9])}, {3: np.array([4])}]
    np.testing.assert_array_equal(
        lesion_correct_counts(exported, x, y, 10, lesions), lesion_correct_counts(plain, x, y, 10, lesions)
    )


def test_delta_path_equals_the_mask_path_up_to_rounding():
    torch.manual_seed(1)
    net = LesionNetwork(digits_mlp())
    point = net.layers[0]
    assert point.delta is not None and net.layers[1].delta is not None and net.layers[2].delta is None
    x = torch.rand(50, 64)
    env = net.run(x, keep=True)
    sets = list(draw_random_sets(np.arange(64), 9, 5, np.random.default_rng(0))) + [np.array([3])]
    from neuronmap.service.assessment.lesion import padded_indices

    masked = net.run_lesioned(env, masks={point.value: keep_masks(sets, 64)})
    delta = net.run_lesioned(env, delta=(point.delta, padded_indices(sets, 64)))
    torch.testing.assert_close(delta, masked, rtol=1e-5, atol=1e-5)


def test_batchnorm_lesion_before_equals_zeroing_the_conv_and_after_silences_the_channel():
    torch.manual_seed(0)
    module = digits_cnn()
    with torch.no_grad():  # non-trivial running statistics, so the BatchNorm offset matters
        for bn in (module[1], module[4]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
    x = torch.rand(20, 1, 8, 8)
    units = np.array([0, 5, 7])
    before = LesionNetwork(module, batchnorm="before")
    point = before.layer("0")
    assert point.batchnorm is not None and point.value == point.output
    lesioned = before.run_lesioned(before.run(x, keep=True), masks={point.value: keep_masks([units], 16)})
    zeroed = digits_cnn()
    zeroed.load_state_dict(module.state_dict())
    with torch.no_grad():
        zeroed[0].weight[units] = 0
        zeroed[0].bias[units] = 0
    torch.testing.assert_close(lesioned, zeroed.eval()(x))
    after = LesionNetwork(module, batchnorm="after")
    point = after.layer("0")
    assert point.value == point.batchnorm
    env = after.run(x, keep=True)
    silenced = after.run_lesioned(env, masks={point.value: keep_masks([units], 16)})
    # the channel after its BatchNorm is 0, so the ReLU passes 0: the same as masking the ReLU's output
    relu = after.layer("0").activation
    masked_relu = after.run_lesioned(env, masks={relu: keep_masks([units], 16)})
    torch.testing.assert_close(silenced, masked_relu)
    assert not torch.allclose(silenced, lesioned)


# -- the planted network ------------------------------------------------------------------------------------------


def test_planted_modules_are_important_and_random_partitions_are_not():
    net, _ = planted_net()
    assert _planted_state()[2] > 0.85
    lesion_net = LesionNetwork(net)
    data, x, y = load_split("digits", "test")
    config = ImportanceConfig(n_null=100, small_size=4)  # the planted modules have 6–7 units
    planted = assess_importance(lesion_net, x, y, 10, planted_subclusters(), POOLS, config)
    assert planted.n_tested == 20 and planted.accuracy == pytest.approx(_planted_state()[2])
    assert planted.n_important >= 16
    assert sum(s.p_adjusted < 0.05 for s in planted.subclusters) >= 16
    assert planted.fisher_p < 1e-10
    for sub in planted.subclusters:
        assert sub.delta_accuracy < sub.null_delta_mean  # every module hurts more than its random sets on average
        lesioned_class = sub.cluster  # module c feeds class c only: its class's recall falls the most
        assert int(np.nanargmin(np.array(sub.class_accuracy) - np.array(planted.class_accuracy))) == lesioned_class
    for seed in (1, 2):
        random = assess_importance(
            lesion_net, x, y, 10, random_subclusters(seed), POOLS, config.model_copy(update={"random_state": seed})
        )
        assert random.n_important <= 1
        assert random.fisher_p > 1e-3


def test_parity_switches_to_the_reference_choices():
    config = ImportanceConfig(parity=True, n_null=20, small_size=4)
    assert (config.metric, config.ties, config.significance) == ("balanced", "strict", "reference")
    with pytest.raises(ValueError):
        ImportanceConfig(n_nul=3)  # a misspelt option fails
    _, x, y = load_split("digits", "test")
    result = assess_importance(LesionNetwork(planted_net()[0]), x, y, 10, planted_subclusters()[:4], POOLS, config)
    for sub in result.subclusters:
        assert sub.p_value == sub.p_balanced  # the reference's p_mean
        # the reference's rule: important iff p < 1/n_shuffles (worse than every random set) and Δacc ≤ −1 point
        assert (sub.category == "important") == (sub.p_overall < 1 / 20 and sub.delta_accuracy <= -0.01)


def test_same_seed_same_result_and_progress_is_reported():
    net, _ = planted_net()
    lesion_net = LesionNetwork(net)
    _, x, y = load_split("digits", "test")
    subs = planted_subclusters()[:6]
    seen: list[tuple[str, int, int]] = []
    config = ImportanceConfig(n_null=20, random_state=5, batch_size=200)
    a = assess_importance(lesion_net, x, y, 10, subs, POOLS, config, on_progress=lambda *s: seen.append(s))
    b = assess_importance(lesion_net, x, y, 10, subs, POOLS, config)
    assert [s.model_dump() for s in a.subclusters] == [s.model_dump() for s in b.subclusters]
    assert seen[0] == ("lesions", 0, 6 * 21 * 3) and seen[-1] == ("lesions", 6 * 21 * 3, 6 * 21 * 3)


@pytest.mark.parametrize("device", [d for d in DEVICES if d != "cpu"])  # an accelerator against the CPU
def test_devices_agree(device):
    net, _ = planted_net()
    _, x, y = load_split("digits", "test")
    config = ImportanceConfig(n_null=20)
    cpu = assess_importance(LesionNetwork(net), x, y, 10, planted_subclusters()[:4], POOLS, config)
    other = assess_importance(
        LesionNetwork(planted_net()[0], device=device), x, y, 10, planted_subclusters()[:4], POOLS, config
    )
    for a, b in zip(cpu.subclusters, other.subclusters):
        assert b.accuracy == pytest.approx(a.accuracy, abs=2 / x.shape[0])  # a float tie may flip one prediction
        assert b.p_value == pytest.approx(a.p_value, abs=2 / 21)


def test_double_lesion_interaction_is_the_joint_change_minus_the_single_ones():
    net, _ = planted_net()
    lesion_net = LesionNetwork(net)
    _, x, y = load_split("digits", "test")
    subs = [s for s in planted_subclusters() if s.cluster in (0, 1)]  # two modules in two layers: 4 sub-clusters
    result = assess_double_lesion(lesion_net, x, y, 10, subs, POOLS, ImportanceConfig(n_null=10))
    assert len(result.pairs) == 6
    for pair in result.pairs:
        assert pair.interaction == pytest.approx(pair.delta_ab - pair.delta_a - pair.delta_b)
        assert 1 / 11 <= pair.p_less <= 1 and 0 <= pair.p_adjusted <= 1
    # module 0 in both layers is one chain: silencing its first layer already removes class 0, so adding its
    # second layer adds nothing (a strongly positive interaction)
    chain = next(p for p in result.pairs if p.cluster_a == p.cluster_b == 0)
    assert chain.interaction > 0.05 and chain.p_greater <= 2 / 11


def test_regression_data_and_wrong_shapes_are_refused():
    net = LesionNetwork(digits_mlp())
    with pytest.raises(AssessmentInputError, match="classification"):
        load_split("poly", "test")
    with pytest.raises(AssessmentInputError, match="shape"):
        lesion_correct_counts(net, torch.rand(4, 10), torch.zeros(4, dtype=torch.long), 10, [{1: np.array([0])}])
    with pytest.raises(AssessmentInputError, match="no layer"):
        net.layer("fc9")
