"""Transformer importance by ablation (methods.md §11.2): the batched hooks against one ablation at a time, the
statistics by hand, and the planted-module positive control on a tiny trained two-task GPT-2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuronmap.service.assessment.layout import SubClusterRef
from neuronmap.service.assessment.transformer.ablation import (
    _scores,
    ablation_scores,
    intact_scores,
    mean_activations,
    one_at_a_time_scores,
    scores_with_intact,
)
from neuronmap.service.assessment.transformer.importance import (
    TransformerImportanceConfig,
    _row,
    assess_transformer_importance,
    classify,
)
from neuronmap.service.assessment.transformer.sites import mlp_sites
from neuronmap.service.errors import AssessmentInputError
from tests.service.transformer_models import (
    N_INNER,
    VOCAB,
    one_thread,
    planted_two_task,
    subclusters_of,
    tiny_gpt2,
    tiny_llama,
)


def _ablations(seed: int, n: int, size: int) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(2)), rng.choice(N_INNER, size, replace=False)) for _ in range(n)]


def _rewritten_scores(model, sites, ids, ablations, means):
    """The definition itself: per ablation, a full forward pass whose hooks set the units' hidden activations to
    their means (or 0) before the output projection (every part of a joint ablation)."""
    loss, acc = [], []
    for ablation in ablations:
        parts = [ablation] if isinstance(ablation[0], int) else list(ablation)
        handles = []
        for block, units in parts:

            def rewrite(module, args, block=block, units=units):
                h = args[0].clone()
                h[..., units] = 0.0 if means is None else means[block][units]
                return (h, *args[1:])

            handles.append(sites.writers[block].register_forward_pre_hook(rewrite))
        try:
            with torch.inference_mode():
                logits = model(input_ids=ids, use_cache=False).logits
        finally:
            for handle in handles:
                handle.remove()
        l, a = _scores(logits, ids)
        loss.append(l.double().numpy())
        acc.append(a.double().numpy())
    return np.array(loss), np.array(acc)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_batched_ablations_equal_one_at_a_time_exactly(family):
    model = tiny_gpt2(1) if family == "gpt2" else tiny_llama(1)
    sites = mlp_sites(model)
    ids = torch.randint(0, VOCAB, (10, 12), generator=torch.Generator().manual_seed(0))
    pairs = _ablations(1, 4, 3)
    joint = [(pairs[0], pairs[1]), ((0, pairs[2][1]), (1, pairs[3][1]))]  # and one across the two blocks
    ablations = _ablations(0, 9, 5) + joint + [(0, np.array([], dtype=np.int64))]
    with one_thread():
        means = mean_activations(model, sites, ids, batch_size=4)
        for fill in (None, means):
            loss, acc, loss0, acc0 = scores_with_intact(
                model, sites, ids, ablations, means=fill, batch_size=4, max_rows=24
            )
            single = one_at_a_time_scores(model, sites, ids, ablations, means=fill, batch_size=4)
            np.testing.assert_array_equal(loss, single[0])
            np.testing.assert_array_equal(acc, single[1])
            reference = _rewritten_scores(model, sites, ids, ablations, fill)
            np.testing.assert_allclose(loss, reference[0], rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(acc, reference[1])
        intact = intact_scores(model, ids, batch_size=4)
    np.testing.assert_array_equal(loss0, intact[0])
    np.testing.assert_array_equal(loss[-1], intact[0])  # an empty set changes nothing
    assert not np.allclose(loss[0], intact[0]), "an ablation changes the loss"
    assert mlp_sites(model).block_of(sites.weights.blocks[1].path) == 1


def test_a_model_without_head_or_a_foreign_layer_is_refused():
    import transformers

    bare = transformers.GPT2Model(tiny_gpt2().config)
    with pytest.raises(AssessmentInputError, match="no language-model head"):
        mlp_sites(bare)
    with pytest.raises(AssessmentInputError, match="is not the MLP of any block"):
        mlp_sites(tiny_gpt2()).block_of("fc1")


def test_statistics_by_hand():
    """Sub-cluster A (4 of 8 units): its ablation and three random sets; B is the whole layer (complete)."""
    a = SubClusterRef(cluster=0, layer=0, layer_name="h.0.mlp", units=(0, 1, 2, 3), pool_size=8)
    b = SubClusterRef(cluster=1, layer=1, layer_name="h.1.mlp", units=tuple(range(8)), pool_size=8)
    loss = np.array([1.5, 1.0, 1.6, 1.2, 1.1])  # rows: A, A's random sets ×3, B
    acc = np.array([0.5, 0.9, 0.4, 0.8, 0.7])
    tasks = np.array([[2.0, 1.0], [1.0, 1.0], [1.2, 2.0], [1.4, 1.0], [1.2, 1.0]])  # per-task loss
    intact = (1.0, 0.9, np.array([1.0, 1.0]))
    config = TransformerImportanceConfig(n_null=3, small_size=0)
    rows = [
        _row(a, 0, (0, 4), loss, acc, tasks, intact, "conservative"),
        _row(b, 1, (4, 5), loss, acc, tasks, intact, "conservative"),
    ]
    ra, rb = classify([a, b], rows, config)
    assert ra.delta_loss == pytest.approx(0.5) and ra.delta_accuracy == pytest.approx(-0.4)
    assert ra.null_delta_loss_mean == pytest.approx((0.0 + 0.6 + 0.2) / 3)
    assert ra.null_delta_loss_sd == pytest.approx(np.std([0.0, 0.6, 0.2]))
    assert ra.p_loss == pytest.approx((1 + 1) / 4)  # one random loss (1.6) ≥ 1.5
    assert ra.p_accuracy == pytest.approx((1 + 1) / 4)  # one random accuracy (0.4) ≤ 0.5
    assert ra.p_task == pytest.approx([1 / 4, 1.0])  # task 0: none ≥ 2.0; task 1: 1.0, 2.0, 1.0 all ≥ 1.0
    assert ra.range_statistic == pytest.approx(2.0)  # Δ per task (1, 0), mean 0.5: ratios 2 and 0
    assert ra.p_adjusted == pytest.approx(0.5) and ra.p_task_adjusted == pytest.approx([0.25, 1.0])  # one test
    assert ra.effect_mean == pytest.approx(0.5 / ((0.0 + 0.6 + 0.2) / 3))
    assert ra.category == "diff-but-not-sig"  # Δ loss 0.5 ≥ 0.01, p_adjusted 0.5 ≥ 0.05
    assert rb.category == "complete" and rb.p_value is None and rb.delta_loss == pytest.approx(0.1)


@pytest.fixture(scope="module")
def planted():
    return planted_two_task()


def _assess(planted, labels, n_null=49):
    subs, pools = subclusters_of(labels, n_blocks=1)
    config = TransformerImportanceConfig(dataset="two-task", n_null=n_null, small_size=4)
    with one_thread():
        return assess_transformer_importance(
            planted.model,
            planted.data.train,
            planted.data.test,
            subs,
            pools,
            config,
            task_test=planted.data.task_test,
            task_names=planted.data.task_names,
        )


def test_planted_halves_matter_for_their_own_task_and_random_halves_do_not(planted):
    result = _assess(planted, planted.halves)
    assert result.task_names == ["count", "permute"] and result.loss < 1.2, "the model learnt both tasks"
    for sub in result.subclusters:
        own, other = sub.cluster, 1 - sub.cluster
        assert sub.p_task[own] == pytest.approx(1 / 50), "no random set hurts its own task as much"
        assert sub.p_task_adjusted[own] < 0.05 <= sub.p_task_adjusted[other]
        assert sub.task_delta_loss[own] > 10 * abs(sub.task_delta_loss[other])
    assert result.n_important_task == [1, 1]
    shuffled = np.random.default_rng(0).permutation(planted.halves)
    control = _assess(planted, shuffled)
    assert control.n_important_task == [0, 0] and control.n_important == 0
    assert all(min(sub.p_task) > 0.05 for sub in control.subclusters)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cpu_and_cuda_agree(planted):
    sites = mlp_sites(planted.model)
    ablations = _ablations(2, 12, 8)
    ids = planted.data.test[:16]
    cpu = ablation_scores(planted.model, sites, ids, ablations, batch_size=8)
    import copy

    gpu_model = copy.deepcopy(planted.model).cuda()
    gpu = ablation_scores(gpu_model, mlp_sites(gpu_model), ids, ablations, batch_size=8)
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=1e-4, atol=1e-5)
    assert np.abs(gpu[1] - cpu[1]).max() <= 1 / ids.shape[1]  # a tied top-1 may flip


def test_double_ablations_add_up_by_hand(planted):
    """One pair per block and one across blocks: each interaction is ΔL_ab − ΔL_a − ΔL_b of the pair's own
    ablations (checked against direct ablations), and the null has N triples."""
    from neuronmap.service.assessment.transformer.double import assess_transformer_double

    subs, pools = subclusters_of(planted.halves)  # two sub-clusters (the halves) in each of the two blocks
    config = TransformerImportanceConfig(n_null=4, ablation="zero")
    test = planted.data.test[:24]
    with one_thread():
        result = assess_transformer_double(planted.model, planted.data.train, test, subs, pools, config)
        sites = mlp_sites(planted.model)
        direct = [(s.layer, np.asarray(s.units)) for s in subs]
        union = ((0, np.asarray(subs[0].units)), (1, np.asarray(subs[3].units)))
        loss, _, loss0, _ = scores_with_intact(planted.model, sites, test, [*direct, union], batch_size=8)
    delta = loss.mean(axis=1) - loss0.mean()
    assert result.loss == pytest.approx(loss0.mean()) and len(result.pairs) == 6  # C(4, 2)
    pairs = {(p.cluster_a, p.layer_a, p.cluster_b, p.layer_b): p for p in result.pairs}
    across = pairs[(0, 0, 1, 1)]
    assert across.delta_a == pytest.approx(delta[0]) and across.delta_b == pytest.approx(delta[3])
    assert across.delta_ab == pytest.approx(delta[4])
    for p in result.pairs:
        assert p.interaction == pytest.approx(p.delta_ab - p.delta_a - p.delta_b)
        assert 1 / 5 <= min(p.p_less, p.p_greater) and p.p_two_sided == pytest.approx(
            min(1.0, 2 * min(p.p_less, p.p_greater))
        )
    within = pairs[(0, 0, 1, 0)]  # both halves of block 0: the whole MLP of the block
    assert within.delta_ab > max(within.delta_a, within.delta_b)
