"""The fast lesion paths of an MLP's Linear/ReLU tail: the same values as the graph interpreter and as one lesion at a
time — exactly for masks, up to float rounding for the delta and complement forms."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from neuronmap.service.assessment.lesion import (
    _class_counts,
    draw_random_sets,
    keep_masks,
    lesion_correct_counts,
    one_at_a_time_correct_counts,
    padded_indices,
)
from neuronmap.service.assessment.network import LesionNetwork
from neuronmap.service.assessment.tails import LesionBuffers


def deep_mlp() -> nn.Module:
    """Four hidden layers, as the benchmark's MLP: every fast path occurs (tail chains, the folded last ReLU)."""
    layers: list[nn.Module] = []
    width = 20
    for _ in range(4):
        layers += [nn.Linear(width, 24), nn.ReLU()]
        width = 24
    return nn.Sequential(*layers, nn.Linear(width, 10))


def _setup(seed: int = 0) -> tuple[LesionNetwork, torch.Tensor, torch.Tensor, dict]:
    torch.manual_seed(seed)
    net = LesionNetwork(deep_mlp(), (20,))
    x = torch.randn(90, 20)
    y = net.run(x).argmax(1)
    y[::4] = torch.randint(0, 10, (len(y[::4]),))
    return net, x, y, net.run(x, keep=True)


def test_the_tail_chain_is_found_and_masks_on_it_equal_the_interpreter_exactly():
    net, x, _, env = _setup()
    assert net._chain(net.layers[3].value) is not None  # ReLU → Linear to the output
    assert net._chain(net.layers[0].delta.node) is not None
    rng = np.random.default_rng(0)
    for point in net.layers[:-1]:
        sets = list(draw_random_sets(np.arange(point.size), 7, 5, rng))
        masks = {point.value: keep_masks(sets, point.size)}
        chained = net.run_lesioned(env, masks=masks, buffers=LesionBuffers())
        interpreted = net._run_graph(env, masks, None, x.shape[0], LesionBuffers())
        assert torch.equal(chained, interpreted)


def test_delta_and_complement_forms_equal_the_masks_up_to_rounding():
    net, _, _, env = _setup()
    rng = np.random.default_rng(1)
    for point in net.layers[:-1]:
        for size in (1, 5, 18, point.size):
            sets = list(draw_random_sets(np.arange(point.size), size, 4, rng))
            masked = net.run_lesioned(env, masks={point.value: keep_masks(sets, point.size)})
            delta = net.run_lesioned(env, delta=(point.delta, padded_indices(sets, point.size)))
            kept = [np.setdiff1d(np.arange(point.size), units) for units in sets]
            complement = net.run_lesioned(env, kept=(point.delta, padded_indices(kept, point.size)))
            torch.testing.assert_close(delta, masked, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(complement, masked, rtol=1e-5, atol=1e-5)


def test_reused_buffers_give_the_same_counts_in_any_chunking():
    net, x, y, _ = _setup()
    rng = np.random.default_rng(2)
    lesions = [
        {point.index: units}
        for point in net.layers[:-1]
        for size in (1, 6, 20, point.size)
        for units in draw_random_sets(np.arange(point.size), size, 3, rng)
    ]
    single = one_at_a_time_correct_counts(net, x, y, 10, lesions, how="weights", batch_size=50)
    for max_lesions, max_elements in ((1, 10**9), (5, 10**9), (32, 2000)):
        mask = lesion_correct_counts(
            net, x, y, 10, lesions, method="mask", batch_size=50, max_elements=max_elements, max_lesions=max_lesions
        )
        np.testing.assert_array_equal(mask, single)  # exact: the same addmm on the same rows
        auto = lesion_correct_counts(
            net, x, y, 10, lesions, batch_size=50, max_elements=max_elements, max_lesions=max_lesions
        )
        assert np.abs(auto - single).sum() <= 2  # float rounding may decide a near tie, no more


def test_class_counts_break_ties_at_the_first_maximum_as_argmax():
    logits = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 3.0, 3.0]])
    y = torch.tensor([0, 1, 2])
    counts = _class_counts(logits, y, torch.nn.functional.one_hot(y, 3).float(), 1)
    assert counts.tolist() == [[1, 1, 0]]
