"""Coherence: feature visualisation and data-set examples find the planted modules and not random partitions; the
renderers, transforms, redirected ReLU and similarity formula behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuronmap.examples.nets import digits_cnn, residual_cnn
from neuronmap.service.assessment.coherence import (
    ExamplesConfig,
    FeatureConfig,
    Renderer,
    assess_examples,
    assess_features,
    mean_pairwise_cosine,
    qualifying,
)
from neuronmap.service.assessment.common import load_split
from neuronmap.service.assessment.network import LesionNetwork, redirected_relu
from tests.conftest import DEVICES
from tests.service.test_importance import POOLS, planted_net, planted_subclusters, random_subclusters


def test_examples_of_planted_modules_are_coherent_and_of_random_partitions_are_not():
    net = LesionNetwork(planted_net()[0])
    _, x, y = load_split("digits", "test")
    config = ExamplesConfig(n_null=99, k=32)
    planted = assess_examples(net, x, y, 10, planted_subclusters(), POOLS, config)
    assert len(planted.subclusters) == 20 and planted.skipped == []
    assert planted.n_coherent >= 10 and planted.fisher_p < 1e-8
    # module c adds evidence for class c only: its top inputs are (nearly) all of class c
    assert np.mean([s.top_labels.count(s.cluster) / 32 for s in planted.subclusters]) > 0.8
    assert np.mean([s.entropy for s in planted.subclusters]) < np.mean(
        [s.null_entropy_mean for s in planted.subclusters]
    )
    for seed in (1, 2):
        random = assess_examples(
            net, x, y, 10, random_subclusters(seed), POOLS, config.model_copy(update={"random_state": seed})
        )
        assert random.n_coherent == 0 and random.fisher_p > 1e-3


def test_feature_visualisation_of_planted_modules_is_coherent_and_of_random_partitions_is_not(tmp_path):
    net = LesionNetwork(planted_net()[0])
    config = FeatureConfig(n_null=49, steps=32)
    planted = assess_features(net, planted_subclusters(), POOLS, config, out_dir=tmp_path)
    # the network-level verdict, as the reference declares coherence (methods.md §6)
    assert planted.fisher_p < 1e-6 and planted.fisher_p_activation < 1e-6
    assert np.median([s.p_activation for s in planted.subclusters]) <= 0.05
    # 64 inputs are an 8×8 image: each sub-cluster's image is saved beside three random sets' images
    first = planted.subclusters[0]
    assert first.image and (tmp_path / "features" / "0_c0.png").exists()
    assert np.load(tmp_path / "features" / "0_c0.npy").shape == (50, 64)
    for seed in (1, 2):
        random = assess_features(net, random_subclusters(seed), POOLS, config.model_copy(update={"random_state": seed}))
        assert random.fisher_p > 1e-3


def test_examples_images_and_reproducibility(tmp_path):
    net = LesionNetwork(planted_net()[0])
    _, x, y = load_split("digits", "test")
    subs = planted_subclusters()[:3]
    config = ExamplesConfig(n_null=10, k=8, random_state=3)
    seen = []
    a = assess_examples(net, x, y, 10, subs, POOLS, config, out_dir=tmp_path, on_progress=lambda *s: seen.append(s))
    b = assess_examples(net, x, y, 10, subs, POOLS, config)
    assert [s.p_value for s in a.subclusters] == [s.p_value for s in b.subclusters]
    assert a.subclusters[0].top_inputs == b.subclusters[0].top_inputs
    assert (tmp_path / "examples" / "0_c0.png").exists() and seen[-1] == ("examples", 1, 1)


def test_size_rule_skips_tiny_and_whole_layer_sub_clusters():
    subs = planted_subclusters()
    tiny = subs[0].model_copy(update={"units": (0, 1, 2)})
    whole = subs[0].model_copy(update={"units": tuple(range(64))})
    keep, skipped = qualifying([tiny, whole, subs[1]], FeatureConfig())
    assert keep == [subs[1]] and len(skipped) == 2 and "size 3 of 64" in skipped[0]


@pytest.mark.parametrize("device", DEVICES)
def test_fourier_images_with_transforms_and_colour(tmp_path, device):
    torch.manual_seed(0)
    for factory, channels in ((digits_cnn, 1), (residual_cnn, 3)):
        net = LesionNetwork(factory(), device=device)
        point = net.layers[0]
        sub = planted_subclusters()[0].model_copy(
            update={
                "layer": point.index,
                "layer_name": point.name,
                "units": (0, 1, 2, 3, 4, 5),
                "pool_size": point.size,
            }
        )
        config = FeatureConfig(n_null=3, steps=4, transforms=("jitter", "scale"), max_images=2)
        result = assess_features(net, [sub], {point.index: np.arange(point.size)}, config, out_dir=tmp_path)
        assert result.subclusters[0].image is not None
        inputs = np.load(tmp_path / "features" / f"{point.name}_c0.npy")
        assert inputs.shape == (4, channels, 8, 8) and inputs.min() >= 0 and inputs.max() <= 1
    renderer = Renderer((3, 8, 8), FeatureConfig(), torch.device("cpu"))
    assert renderer.fourier and renderer.color is not None and renderer.param_shape == (3, 8, 5, 2)
    assert Renderer((64,), FeatureConfig(), torch.device("cpu")).param_shape == (64,)


def test_redirected_relu_passes_gradient_only_where_nothing_else_does():
    x = torch.tensor([[-1.0, -2.0], [-1.0, 3.0]], requires_grad=True)
    (redirected_relu(x) * torch.tensor([[1.0, -1.0], [1.0, 1.0]])).sum().backward()
    # The loss gradient is (1, −1) and (1, 1). Sample 0 has no positive unit, so the plain ReLU passes nothing and
    # the gradient is redirected: kept where descent pushes the input up (−1), dropped where it would push an already
    # negative input further down (+1). Sample 1's positive unit carries gradient, so the ordinary ReLU rule holds.
    assert x.grad.tolist() == [[0.0, -1.0], [0.0, 1.0]]


def test_mean_pairwise_cosine_equals_the_explicit_pairs():
    rng = np.random.default_rng(0)
    inputs = torch.tensor(rng.normal(size=(30, 5)), dtype=torch.float32)
    unit = inputs / inputs.norm(dim=1, keepdim=True)
    idx = torch.tensor([[0, 3, 7, 9], [1, 2, 4, 29]])
    expected = []
    for row in idx:
        sims = unit[row] @ unit[row].t()
        expected.append(float((sims.sum() - sims.diagonal().sum()) / (4 * 3)))
    assert mean_pairwise_cosine(unit, idx, max_elements=8).tolist() == pytest.approx(expected, abs=1e-6)
