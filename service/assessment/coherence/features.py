"""Feature-visualisation coherence (methods.md §6): for every set of a layer's units, optimise an input that drives
their mean activation (lucid's parameterisations and redirected ReLU gradient), then ask whether a sub-cluster's
input reaches a higher objective, and a more class-specific network output, than its random same-size sets'."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from neuronmap.service.assessment.coherence.results import (
    CoherenceResult,
    FeatureConfig,
    SubClusterCoherence,
    against_random,
    effect,
    qualifying,
    selection_weights,
    subcluster_sets,
    summarise,
)
from neuronmap.service.assessment.coherence.sheets import save_sheet, slug
from neuronmap.service.assessment.common import Progress, no_progress
from neuronmap.service.assessment.layer_plan import LayerPoint
from neuronmap.service.assessment.layout import SubClusterRef
from neuronmap.service.assessment.network import LesionNetwork
from neuronmap.service.errors import AssessmentInputError

# lucid's colour decorrelation (the square root of ImageNet's colour covariance), columns normalised to max norm 1.
_COLOR_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
_COLOR_CORRELATION = _COLOR_SVD_SQRT / np.max(np.linalg.norm(_COLOR_SVD_SQRT, axis=0))


class Renderer:
    """Turns free parameters into inputs in [0, 1]: lucid's Fourier image or plain pixels, through a sigmoid."""

    def __init__(self, shape: tuple[int, ...], config: FeatureConfig, device: torch.device) -> None:
        self.shape = shape
        image = len(shape) == 3
        kind = config.parameterization
        self.fourier = kind == "fourier" or (kind == "auto" and image)
        if self.fourier and not image:
            raise AssessmentInputError(
                f"parameterization='fourier' needs (C, H, W) inputs; the network reads {shape}. Use 'pixel' or 'auto'."
            )
        self.device = device
        if self.fourier:
            c, h, w = shape
            fy = np.fft.fftfreq(h)[:, None]
            fx = np.fft.rfftfreq(w)[None, :]
            freqs = np.sqrt(fx * fx + fy * fy)
            scale = 1.0 / np.maximum(freqs, 1.0 / max(h, w)) * math.sqrt(h * w)  # decay power 1, as lucid
            self.scale = torch.tensor(scale, dtype=torch.float32, device=device)
            self.param_shape: tuple[int, ...] = (c, h, w // 2 + 1, 2)
            self.color = torch.tensor(_COLOR_CORRELATION, device=device) if (c == 3 and config.decorrelate) else None
        else:
            self.param_shape = (int(np.prod(shape)),)
            self.color = None

    def init(self, n: int, generator: torch.Generator) -> torch.Tensor:
        values = torch.randn((n, *self.param_shape), generator=generator) * 0.01  # lucid's sd
        return values.to(self.device)

    def __call__(self, params: torch.Tensor) -> torch.Tensor:
        if not self.fourier:
            return torch.sigmoid(params).reshape(params.shape[0], *self.shape)
        c, h, w = self.shape
        spectrum = torch.complex(params[..., 0], params[..., 1]) * self.scale
        image = torch.fft.irfft2(spectrum, s=(h, w)) / 4.0  # (n, c, h, w)
        if self.color is not None:
            image = torch.einsum("nchw,dc->ndhw", image, self.color)
        return torch.sigmoid(image)


def _transform(x: torch.Tensor, config: FeatureConfig, generator: torch.Generator) -> torch.Tensor:
    """The selected random transforms, one draw per step for the whole batch (images only)."""
    if x.dim() != 4:
        return x
    h, w = x.shape[-2:]
    for name in config.transforms:
        if name == "jitter" and config.jitter > 0:
            dy, dx = (int(v) for v in torch.randint(-config.jitter, config.jitter + 1, (2,), generator=generator))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        elif name == "scale":
            factor = config.scales[int(torch.randint(len(config.scales), (1,), generator=generator))]
            if factor != 1.0:
                scaled = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
                sh, sw = scaled.shape[-2:]
                if sh >= h:  # crop the centre
                    top, left = (sh - h) // 2, (sw - w) // 2
                    x = scaled[..., top : top + h, left : left + w]
                else:  # pad back to size
                    top, left = (h - sh) // 2, (w - sw) // 2
                    x = F.pad(scaled, (left, w - sw - left, top, h - sh - top), mode="replicate")
    return x


def _channel_means(value: torch.Tensor) -> torch.Tensor:
    return value.mean(dim=tuple(range(2, value.dim()))) if value.dim() > 2 else value


def render_sets(
    net: LesionNetwork, layer: LayerPoint, sets: Sequence[np.ndarray], config: FeatureConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Optimise one input per set of ``layer``'s units, all in one batch.

    Returns
    -------
    inputs : torch.Tensor of shape (M, *input_shape), on the CPU
    objective : torch.Tensor of shape (M,)
        The mean activation of each set at its optimised input (no transforms, plain ReLU gradient irrelevant).
    entropy : torch.Tensor of shape (M,)
        Entropy (nats) of the network's softmax at the optimised input.
    """
    renderer = Renderer(net.input_shape, config, net.device)
    selection = selection_weights(sets, layer.size, net.device)  # (M, C)
    params = renderer.init(len(sets), generator).requires_grad_(True)
    optimizer = torch.optim.Adam([params], lr=config.lr)
    for _ in range(config.steps):
        optimizer.zero_grad()
        x = _transform(renderer(params), config, generator)
        value = _channel_means(net.run(x, stop_at=layer.activation, relu_override=config.relu_gradient_override))
        objective = (value * selection).sum(dim=1)  # (M,): each input has its own set
        (-objective.sum()).backward()
        optimizer.step()
    with torch.no_grad():
        x = renderer(params)
        objective = (_channel_means(net.run(x, stop_at=layer.activation)) * selection).sum(dim=1)
        logp = torch.log_softmax(net.run(x).float(), dim=1)
        entropy = -(logp.exp() * logp).sum(dim=1)
    return x.detach().cpu(), objective.cpu(), entropy.cpu()


def _batches(subs: Sequence[SubClusterRef], m: int, max_images: int) -> list[tuple[int, list[int]]]:
    """(layer, sub-cluster positions) batches of one layer each, with at most ``max_images`` inputs (m per set)."""
    by_layer: dict[int, list[int]] = {}
    for i, sub in enumerate(subs):
        by_layer.setdefault(sub.layer, []).append(i)
    per_batch = max(1, max_images // m)
    return [
        (layer, members[lo : lo + per_batch])
        for layer, members in by_layer.items()
        for lo in range(0, len(members), per_batch)
    ]


def _feature_row(
    sub: SubClusterRef,
    objective: np.ndarray,
    entropy: np.ndarray,
    inputs: torch.Tensor,
    config: FeatureConfig,
    image_dir: Path | None,
) -> dict[str, Any]:
    """One sub-cluster's statistics (index 0: its own set, then its random ones), its images saved when asked."""
    row = {
        "cluster": sub.cluster,
        "layer": sub.layer,
        "layer_name": sub.layer_name,
        "size": sub.size,
        **against_random("entropy", entropy, "less", config.ties),
        "effect_entropy": effect(float(entropy[1:].mean()), float(entropy[0])),
        **against_random("activation", objective, "greater", config.ties),
    }
    if image_dir is not None:
        stem = image_dir / f"{slug(sub.layer_name)}_c{sub.cluster}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        np.save(stem.with_suffix(".npy"), inputs.numpy())
        shown = inputs[: 1 + config.save_random].numpy()
        title = (
            f"{sub.layer_name} cluster {sub.cluster} (objective {objective[0]:.3g}), then "
            f"{len(shown) - 1} random sets ({', '.join(f'{v:.3g}' for v in objective[1 : len(shown)])})"
        )
        row["image"] = save_sheet(stem.with_suffix(".png"), shown, title, columns=len(shown))
    return row


def assess_features(
    net: LesionNetwork,
    subclusters: Sequence[SubClusterRef],
    pools: Mapping[int, np.ndarray],
    config: FeatureConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    on_progress: Progress = no_progress,
) -> CoherenceResult:
    """Feature-visualisation coherence of sub-clusters against random same-size sets (methods.md §6).

    Parameters
    ----------
    net : LesionNetwork
    subclusters : sequence of SubClusterRef
    pools : mapping of int to numpy.ndarray
        Per layer index, the units random sets are drawn from.
    config : FeatureConfig, optional
    out_dir : str or Path, optional
        Where to save ``features/<layer>_c<cluster>.png`` (the sub-cluster's image beside ``save_random`` random
        ones) and ``.npy`` (every optimised input of the sub-cluster and its random sets).
    on_progress : callable, optional
        ``on_progress("features", done, total)`` in optimisation steps × batches.
    """
    config = config or FeatureConfig()
    start = time.perf_counter()
    subs, skipped = qualifying(subclusters, config)
    all_sets = subcluster_sets(subs, pools, config.n_null, config.random_state)
    generator = torch.Generator().manual_seed(config.random_state)
    m = config.n_null + 1
    batches = _batches(subs, m, config.max_images)
    total, done = len(batches) * (config.steps + 1), 0
    on_progress("features", 0, total)
    objective = np.zeros((len(subs), m))
    entropy = np.zeros((len(subs), m))
    inputs: dict[int, torch.Tensor] = {}
    for layer_index, members in batches:
        sets = [units for i in members for units in all_sets[i]]
        x, obj, ent = render_sets(net, net.layer(layer_index), sets, config, generator)
        for j, i in enumerate(members):
            objective[i] = obj[j * m : (j + 1) * m].numpy()
            entropy[i] = ent[j * m : (j + 1) * m].numpy()
            inputs[i] = x[j * m : (j + 1) * m]
        done += config.steps + 1
        on_progress("features", done, total)
    image_dir = Path(out_dir) / "features" if out_dir is not None else None
    rows = [_feature_row(sub, objective[i], entropy[i], inputs[i], config, image_dir) for i, sub in enumerate(subs)]
    network = summarise(rows, ("entropy", "activation"), config.n_null, config.alpha)
    return CoherenceResult(
        method="coherence_features",
        n_null=config.n_null,
        seed=config.random_state,
        device=str(net.device),
        subclusters=[SubClusterCoherence(**row) for row in rows],
        skipped=skipped,
        **network,
        image_dir=str(image_dir) if image_dir is not None else None,
        seconds=time.perf_counter() - start,
    )
