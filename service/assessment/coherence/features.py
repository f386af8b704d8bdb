"""Coherence of a partition's modules: do a sub-cluster's neurons respond to one kind of input? (methods.md §6)

Two methods, each against N random same-size sets of the same layer, with per-sub-cluster percentile p-values,
Benjamini–Hochberg adjustment over the sub-clusters, and Fisher's and the reference's χ² test per network:

**Feature visualisation** (``assess_features``). For every set S an input is optimised to maximise the mean
activation of S's neurons after their activation function (channels: spatial means), the reference's
``objectives.channel`` summed over S. Images (C, H, W) are parameterised as lucid does by default: a Fourier
spectrum scaled by 1/frequency, colour-decorrelated when C = 3, through a sigmoid into [0, 1]; vectors are plain
pixels through a sigmoid. Adam(0.05), ``steps`` steps, no transforms unless asked (``"jitter"``, ``"scale"``), and
lucid's redirected ReLU gradient. All sets of a layer — the sub-clusters and their random sets — are optimised
together as one batch (the samples do not interact: Adam is elementwise, the network is in eval mode). The
reference's two statistics: the objective reached (``activation``: higher than random, p = (#{random ≥ real} +
1)/(N + 1)) and the entropy (nats) of the network's softmax at the optimised input (``entropy``: lower than random
means a class-specific image, p = (#{random ≤ real} + 1)/(N + 1)).

**Data-set examples** (``assess_examples``; not in the reference code, the design methods.md §6 suggests). The k
inputs of a data set with the highest mean activation of S's neurons. Statistics: the entropy of their labels
(``entropy``, lower), their mean activation (``activation``, higher), and their mean pairwise cosine similarity
(``similarity``, higher).

Ties count against the sub-cluster (``ties="conservative"``; ``"strict"`` is the reference's count): a label
entropy of 0 shared by many random sets is no evidence. The reference has no per-sub-cluster verdict; neuronmap
gives each sub-cluster one p-value, the smallest of its statistics' p-values times their number (Bonferroni over the
method's statistics), BH-adjusted over the sub-clusters (``p_adjusted``, what ``library.coherent_modules`` filters
on); per network, each statistic's Fisher and χ² p-value, and ``fisher_p``, the smallest Fisher p-value times the
number of statistics. Sub-clusters qualify when ``min_size`` ≤ |S| < ``max_fraction``·|layer| (the reference: 5 <
|S| < 0.8·|layer|); the others are listed in ``skipped``.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from neuronmap.device import resolve_device
from neuronmap.cypher import Store

from neuronmap.service.store.assessments import PartitionLayout, SubClusterRef, read_partition_layout, write_assessment
from neuronmap.service.errors import AssessmentInputError
from neuronmap.service.assessment.importance import Progress, _no_progress, _none_if_nan, load_split, subcluster_generators
from neuronmap.service.assessment.lesion import draw_random_sets
from neuronmap.service.assessment.network import LayerPoint, LesionNetwork, prepare_inputs
from neuronmap.service.store.model_source import load_network
from neuronmap.service.stats import (Ties, adjust_pvalues, chi2_uniformity_pvalue, effect_factor, empirical_pvalues, entropy_nats,
                    fisher_combined_pvalue)

Transform = Literal["jitter", "scale"]

# lucid's colour decorrelation (the square root of ImageNet's colour covariance), columns normalised to max norm 1.
_COLOR_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
_COLOR_CORRELATION = _COLOR_SVD_SQRT / np.max(np.linalg.norm(_COLOR_SVD_SQRT, axis=0))


class _Qualify(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    min_size: int = Field(default=6, ge=1)  # the reference: 5 < |S|
    max_fraction: float = Field(default=0.8, gt=0.0, le=1.0)  # … and |S| < 0.8·|layer| (strict, as the reference)
    ties: Ties = "conservative"
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)  # n_coherent counts p_adjusted < alpha
    random_state: int = 0
    device: str = "auto"


class FeatureConfig(_Qualify):
    """How to render and score feature visualisations."""

    n_null: int = Field(default=100, ge=1)  # random sets per sub-cluster (the reference: 9; see run_feature_coherence)
    steps: int = Field(default=256, ge=1)
    lr: float = Field(default=0.05, gt=0.0)
    parameterization: Literal["auto", "fourier", "pixel"] = "auto"  # auto: fourier for (C, H, W), pixel otherwise
    decorrelate: bool = True  # colour decorrelation for 3-channel images
    transforms: tuple[Transform, ...] = ()
    jitter: int = Field(default=2, ge=0)  # pixels, for "jitter"
    scales: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.1)  # for "scale"
    relu_gradient_override: bool = True
    max_images: int = Field(default=512, ge=1)  # inputs optimised in one batch
    save_random: int = Field(default=3, ge=0)  # random sets shown beside each sub-cluster's image


class ExamplesConfig(_Qualify):
    """How to pick and score data-set examples."""

    dataset: str = "digits"
    split: Literal["train", "test", "all"] = "test"
    n_null: int = Field(default=100, ge=1)
    k: int = Field(default=32, ge=2)  # top inputs per set
    batch_size: int = Field(default=1000, ge=1)
    max_elements: int = Field(default=2 ** 24, ge=1)  # bounds the (k, sets, input) block of the similarity


class SubClusterCoherence(BaseModel):
    """One sub-cluster's coherence statistics in one method, each against its random sets.

    ``entropy`` is the entropy (nats) of the network's output at the optimised input (features) or of the labels of
    the top inputs (examples): lower than random is coherent. ``activation`` is the objective reached (features) or
    the top inputs' mean activation (examples), ``similarity`` the top inputs' mean pairwise cosine similarity
    (examples only): higher than random is coherent.
    """

    cluster: int
    layer: int
    layer_name: str
    size: int
    p_value: float  # min(1, n_statistics × the smallest of the statistics' p-values): Bonferroni over them
    p_adjusted: float = 1.0  # Benjamini–Hochberg of p_value over the sub-clusters
    statistic: str  # the statistic behind p_value: entropy, activation or similarity
    entropy: float
    null_entropy_mean: float
    p_entropy: float  # (#{random ≤ real} + 1)/(N + 1)
    p_entropy_adjusted: float = 1.0
    effect_entropy: float | None = None  # mean(random)/real, the reference's effect factor (None for 0/0)
    activation: float
    null_activation_mean: float
    p_activation: float  # (#{random ≥ real} + 1)/(N + 1)
    p_activation_adjusted: float = 1.0
    similarity: float | None = None
    null_similarity_mean: float | None = None
    p_similarity: float | None = None
    p_similarity_adjusted: float | None = None
    top_inputs: list[int] | None = None  # examples: indices into the split, best first
    top_labels: list[int] | None = None
    image: str | None = None  # the saved figure, when out_dir was given

    def stored_properties(self) -> dict[str, Any]:
        return self.model_dump(exclude={"cluster", "layer", "layer_name", "size"}, exclude_none=True)


class CoherenceResult(BaseModel):
    """One coherence method over every qualifying hidden-layer sub-cluster of a partition."""

    assessment: str | None = None
    model: str = ""
    partition: str = ""
    method: Literal["coherence_features", "coherence_examples"]
    dataset: str | None = None
    split: str | None = None
    n_inputs: int | None = None
    n_null: int
    seed: int
    device: str
    subclusters: list[SubClusterCoherence]
    skipped: list[str]  # sub-clusters outside the size rule, as "layer:cluster (size n of m)"
    n_coherent: int  # sub-clusters with p_adjusted below alpha
    alpha: float
    fisher_p: float | None  # min(1, n_statistics × the smallest per-statistic Fisher p): Bonferroni over them
    fisher_p_entropy: float | None  # Fisher with the centring shift (methods.md §5)
    chi2_p_entropy: float | None  # the reference's two-sided χ² uniformity test
    fisher_p_activation: float | None
    chi2_p_activation: float | None
    fisher_p_similarity: float | None = None
    chi2_p_similarity: float | None = None
    effect_entropy: float | None  # mean effect factors over the sub-clusters
    effect_activation: float | None
    image_dir: str | None = None
    seconds: float

    def stored_properties(self) -> dict[str, Any]:
        return self.model_dump(exclude={"assessment", "model", "partition", "subclusters", "method"})


# -- shared --------------------------------------------------------------------------------------------------------

def qualifying(subclusters: Sequence[SubClusterRef], config: _Qualify) -> tuple[list[SubClusterRef], list[str]]:
    """The sub-clusters inside the size rule, and the others described."""
    keep, skipped = [], []
    for sub in subclusters:
        if config.min_size <= sub.size < config.max_fraction * sub.pool_size:
            keep.append(sub)
        else:
            skipped.append(f"{sub.layer_name}:{sub.cluster} (size {sub.size} of {sub.pool_size})")
    return keep, skipped


def _sets(subclusters: Sequence[SubClusterRef], pools: Mapping[int, np.ndarray], n_null: int,
          seed: int) -> list[list[np.ndarray]]:
    """Per sub-cluster: its units, then n_null random same-size sets of its layer."""
    out = []
    for sub, rng in zip(subclusters, subcluster_generators(seed, len(subclusters))):
        draws = draw_random_sets(pools[sub.layer], sub.size, n_null, rng)
        out.append([np.asarray(sub.units, dtype=np.int64)] + list(draws))
    return out


def _selection(sets: Sequence[np.ndarray], size: int, device: torch.device) -> torch.Tensor:
    """(M, size) float: 1/|S| on each set's units (the mean over the set)."""
    weights = torch.zeros(len(sets), size, device=device)
    for row, units in enumerate(sets):
        weights[row, torch.as_tensor(units, device=device)] = 1.0 / len(units)
    return weights


def _summarise(rows: list[dict[str, Any]], names: Sequence[str], n_null: int, alpha: float) -> dict[str, Any]:
    """Per sub-cluster: the Bonferroni-combined p-value and BH adjustments (in place); per network: the tests."""
    network: dict[str, Any] = {}
    for row in rows:
        ps = {name: row[f"p_{name}"] for name in names}
        best = min(ps, key=lambda name: ps[name])
        row["statistic"], row["p_value"] = best, min(1.0, len(names) * ps[best])
    fishers = []
    for key in [f"p_{name}" for name in names] + ["p_value"]:
        p = np.array([row[key] for row in rows], dtype=np.float64)
        adjusted = adjust_pvalues(p, "bh") if p.size else p
        for row, value in zip(rows, adjusted):
            row["p_adjusted" if key == "p_value" else f"{key}_adjusted"] = float(value)
        if key != "p_value":
            suffix = key[1:]  # "_entropy", …
            network[f"fisher_p{suffix}"] = _none_if_nan(fisher_combined_pvalue(p, n_null)) if p.size else None
            network[f"chi2_p{suffix}"] = _none_if_nan(chi2_uniformity_pvalue(p, n_null)) if p.size else None
            fishers.append(network[f"fisher_p{suffix}"])
    found = [f for f in fishers if f is not None]
    network["fisher_p"] = min(1.0, len(names) * min(found)) if found else None
    network["n_coherent"] = sum(row["p_adjusted"] < alpha for row in rows)
    network["alpha"] = alpha
    network["effect_entropy"] = _finite_mean([row["effect_entropy"] for row in rows])
    network["effect_activation"] = _finite_mean([_effect(row["null_activation_mean"], row["activation"])
                                                 for row in rows])
    return network


def _finite_mean(values: Sequence[float | None]) -> float | None:
    arr = np.array([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else None


def _effect(null_mean: float, value: float) -> float | None:
    out = float(effect_factor(null_mean, value))
    return out if math.isfinite(out) else None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "layer"


def _as_image(x: np.ndarray) -> np.ndarray | None:
    """(H, W) or (H, W, 3) in [0, 1] for display, or None when the input is not image-like."""
    if x.ndim == 3 and x.shape[0] in (1, 3):
        return x[0] if x.shape[0] == 1 else np.transpose(x, (1, 2, 0))
    if x.ndim == 2:
        return x
    side = int(round(math.sqrt(x.size)))
    if x.ndim == 1 and side * side == x.size:
        return x.reshape(side, side)
    return None


def _save_sheet(path: Path, inputs: Sequence[np.ndarray], title: str, columns: int) -> str | None:
    """Save inputs side by side as one image grid (each rescaled to its own range); None when not image-like."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = [_as_image(np.asarray(x, dtype=np.float64)) for x in inputs]
    if not images or any(image is None for image in images):
        return None
    h, w = images[0].shape[:2]
    channels = images[0].shape[2] if images[0].ndim == 3 else 1
    rows = -(-len(images) // columns)
    pad = max(1, h // 8)
    mosaic = np.ones(((h + pad) * rows - pad, (w + pad) * columns - pad, channels))
    for i, image in enumerate(images):
        lo, hi = float(np.min(image)), float(np.max(image))
        shown = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
        r, c = divmod(i, columns)
        mosaic[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = shown.reshape(h, w, channels)
    scale = max(1.0, 160.0 / (h + pad))  # at least ~160 px per row of inputs
    figure = Figure(figsize=(max(3.0, mosaic.shape[1] * scale / 100), mosaic.shape[0] * scale / 100 + 0.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, mosaic.shape[0] * scale / 100 / figure.get_figheight()))
    axes.imshow(mosaic[..., 0] if channels == 1 else mosaic, cmap="gray" if channels == 1 else None,
                interpolation="nearest", vmin=0, vmax=1)
    axes.axis("off")
    figure.suptitle(title, fontsize=8, y=0.99)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, format="png")
    return str(path)


# -- feature visualisation -------------------------------------------------------------------------------------------

class _Renderer:
    """Turns free parameters into inputs in [0, 1]: lucid's Fourier image or plain pixels, through a sigmoid."""

    def __init__(self, shape: tuple[int, ...], config: FeatureConfig, device: torch.device) -> None:
        self.shape = shape
        image = len(shape) == 3
        kind = config.parameterization
        self.fourier = (kind == "fourier" or (kind == "auto" and image))
        if self.fourier and not image:
            raise AssessmentInputError(f"parameterization='fourier' needs (C, H, W) inputs; the network reads {shape}. "
                                       "Use 'pixel' or 'auto'.")
        self.device = device
        if self.fourier:
            c, h, w = shape
            fy = np.fft.fftfreq(h)[:, None]
            fx = np.fft.rfftfreq(w)[None, :]
            freqs = np.sqrt(fx * fx + fy * fy)
            scale = 1.0 / np.maximum(freqs, 1.0 / max(h, w)) * math.sqrt(h * w)  # decay power 1, as lucid
            self.scale = torch.tensor(scale, dtype=torch.float32, device=device)
            self.param_shape: tuple[int, ...] = (c, h, w // 2 + 1, 2)
            self.color = (torch.tensor(_COLOR_CORRELATION, device=device)
                          if (c == 3 and config.decorrelate) else None)
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
                    x = scaled[..., top:top + h, left:left + w]
                else:  # pad back to size
                    top, left = (h - sh) // 2, (w - sw) // 2
                    x = F.pad(scaled, (left, w - sw - left, top, h - sh - top), mode="replicate")
    return x


def _channel_means(value: torch.Tensor) -> torch.Tensor:
    return value.mean(dim=tuple(range(2, value.dim()))) if value.dim() > 2 else value


def render_sets(net: LesionNetwork, layer: LayerPoint, sets: Sequence[np.ndarray], config: FeatureConfig,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Optimise one input per set of ``layer``'s units, all in one batch.

    Returns
    -------
    inputs : torch.Tensor of shape (M, *input_shape), on the CPU
    objective : torch.Tensor of shape (M,)
        The mean activation of each set at its optimised input (no transforms, plain ReLU gradient irrelevant).
    entropy : torch.Tensor of shape (M,)
        Entropy (nats) of the network's softmax at the optimised input.
    """
    renderer = _Renderer(net.input_shape, config, net.device)
    selection = _selection(sets, layer.size, net.device)  # (M, C)
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


def assess_features(net: LesionNetwork, subclusters: Sequence[SubClusterRef], pools: Mapping[int, np.ndarray],
                    config: FeatureConfig | None = None, *, out_dir: str | Path | None = None,
                    on_progress: Progress = _no_progress) -> CoherenceResult:
    """Feature-visualisation coherence of sub-clusters against random same-size sets (module docstring).

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
    all_sets = _sets(subs, pools, config.n_null, config.random_state)
    generator = torch.Generator().manual_seed(config.random_state)
    by_layer: dict[int, list[int]] = {}
    for i, sub in enumerate(subs):
        by_layer.setdefault(sub.layer, []).append(i)
    m = config.n_null + 1
    batches = []  # (layer, [sub-cluster positions]) with at most max_images inputs
    per_batch = max(1, config.max_images // m)
    for layer, members in by_layer.items():
        for lo in range(0, len(members), per_batch):
            batches.append((layer, members[lo:lo + per_batch]))
    total, done = len(batches) * (config.steps + 1), 0
    on_progress("features", 0, total)
    objective = np.zeros((len(subs), m))
    entropy = np.zeros((len(subs), m))
    inputs: dict[int, torch.Tensor] = {}
    for layer_index, members in batches:
        sets = [units for i in members for units in all_sets[i]]
        x, obj, ent = render_sets(net, net.layer(layer_index), sets, config, generator)
        for j, i in enumerate(members):
            objective[i] = obj[j * m:(j + 1) * m].numpy()
            entropy[i] = ent[j * m:(j + 1) * m].numpy()
            inputs[i] = x[j * m:(j + 1) * m]
        done += config.steps + 1
        on_progress("features", done, total)
    rows = []
    image_dir = Path(out_dir) / "features" if out_dir is not None else None
    for i, sub in enumerate(subs):
        row = {"cluster": sub.cluster, "layer": sub.layer, "layer_name": sub.layer_name, "size": sub.size,
               "entropy": float(entropy[i, 0]), "null_entropy_mean": float(entropy[i, 1:].mean()),
               "p_entropy": float(empirical_pvalues([entropy[i, 0]], [entropy[i, 1:]], "less", config.ties)[0]),
               "effect_entropy": _effect(float(entropy[i, 1:].mean()), float(entropy[i, 0])),
               "activation": float(objective[i, 0]), "null_activation_mean": float(objective[i, 1:].mean()),
               "p_activation": float(empirical_pvalues([objective[i, 0]], [objective[i, 1:]], "greater",
                                                       config.ties)[0])}
        if image_dir is not None:
            stem = image_dir / f"{_slug(sub.layer_name)}_c{sub.cluster}"
            stem.parent.mkdir(parents=True, exist_ok=True)
            np.save(stem.with_suffix(".npy"), inputs[i].numpy())
            shown = inputs[i][:1 + config.save_random].numpy()
            title = (f"{sub.layer_name} cluster {sub.cluster} (objective {objective[i, 0]:.3g}), then "
                     f"{len(shown) - 1} random sets ({', '.join(f'{v:.3g}' for v in objective[i, 1:len(shown)])})")
            row["image"] = _save_sheet(stem.with_suffix(".png"), shown, title, columns=len(shown))
        rows.append(row)
    network = _summarise(rows, ("entropy", "activation"), config.n_null, config.alpha)
    return CoherenceResult(
        method="coherence_features", n_null=config.n_null, seed=config.random_state, device=str(net.device),
        subclusters=[SubClusterCoherence(**row) for row in rows], skipped=skipped, **network,
        image_dir=str(image_dir) if image_dir is not None else None, seconds=time.perf_counter() - start)


# -- data-set examples -----------------------------------------------------------------------------------------------

def layer_activations(net: LesionNetwork, x: torch.Tensor, layer: LayerPoint, batch_size: int = 1000) -> torch.Tensor:
    """(N, C) post-activation values of a layer over a data set (channels: spatial means), on the network's device."""
    x = prepare_inputs(net, x)
    with torch.no_grad():
        return torch.cat([net.activations(x[lo:lo + batch_size].to(net.device), layer)
                          for lo in range(0, x.shape[0], batch_size)])


def top_examples(activations: torch.Tensor, sets: Sequence[np.ndarray], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k inputs with the highest mean activation of each set: (values (M, k), indices (M, k)), best first."""
    selection = _selection(sets, activations.shape[1], activations.device)  # (M, C)
    scores = activations @ selection.t()  # (N, M)
    values, indices = torch.topk(scores, k, dim=0)  # ties: torch's order, the same on every run of one device
    return values.t(), indices.t()


def mean_pairwise_cosine(unit_inputs: torch.Tensor, indices: torch.Tensor, max_elements: int = 2 ** 24) -> torch.Tensor:
    """(M,) mean cosine similarity over the k(k−1) ordered pairs of each row's inputs.

    ``unit_inputs`` (N, D) are the inputs scaled to norm 1: the sum of all k² cosines is |Σ x_i|², so the mean over
    the pairs is (|Σ x_i|² − k)/(k(k − 1)) without forming a k×k matrix.
    """
    m, k = indices.shape
    per = max(1, max_elements // (k * unit_inputs.shape[1]))
    out = []
    for lo in range(0, m, per):
        summed = unit_inputs[indices[lo:lo + per]].sum(dim=1)  # (m', D)
        out.append(((summed * summed).sum(dim=1) - k) / (k * (k - 1)))
    return torch.cat(out)


def assess_examples(net: LesionNetwork, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                    subclusters: Sequence[SubClusterRef], pools: Mapping[int, np.ndarray],
                    config: ExamplesConfig | None = None, *, out_dir: str | Path | None = None,
                    on_progress: Progress = _no_progress) -> CoherenceResult:
    """Data-set-example coherence of sub-clusters against random same-size sets (module docstring).

    Parameters
    ----------
    net : LesionNetwork
    x : torch.Tensor of shape (N, ...)
    y : torch.Tensor of shape (N,)
    n_classes : int
    subclusters, pools
        As for :func:`assess_features`.
    config : ExamplesConfig, optional
    out_dir : str or Path, optional
        Where to save ``examples/<layer>_c<cluster>.png``, the sub-cluster's top inputs with their labels.
    on_progress : callable, optional
        ``on_progress("examples", done, total)`` per layer.
    """
    config = config or ExamplesConfig()
    start = time.perf_counter()
    if config.k > x.shape[0]:
        raise AssessmentInputError(f"k={config.k} top inputs are more than the {x.shape[0]} inputs of the data set.")
    subs, skipped = qualifying(subclusters, config)
    all_sets = _sets(subs, pools, config.n_null, config.random_state)
    flat = prepare_inputs(net, x).reshape(x.shape[0], -1).to(net.device, torch.float32)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    labels = y.to(net.device)
    layers = sorted({sub.layer for sub in subs})
    on_progress("examples", 0, len(layers))
    rows: list[dict[str, Any]] = []
    image_dir = Path(out_dir) / "examples" if out_dir is not None else None
    for done, layer_index in enumerate(layers, start=1):
        point = net.layer(layer_index)
        acts = layer_activations(net, x, point, config.batch_size)
        members = [i for i, sub in enumerate(subs) if sub.layer == layer_index]
        sets = [units for i in members for units in all_sets[i]]
        values, indices = top_examples(acts, sets, config.k)  # (M, k)
        counts = F.one_hot(labels[indices], n_classes).sum(dim=1)  # (M, n_classes)
        label_entropy = entropy_nats(counts.cpu().numpy())
        activation = values.mean(dim=1).cpu().numpy()
        similarity = mean_pairwise_cosine(unit, indices, config.max_elements).cpu().numpy()
        m = config.n_null + 1
        for j, i in enumerate(members):
            sub, block = subs[i], slice(j * m, (j + 1) * m)
            ent, act, sim = label_entropy[block], activation[block], similarity[block]
            top = indices[j * m].cpu().tolist()
            row = {"cluster": sub.cluster, "layer": sub.layer, "layer_name": sub.layer_name, "size": sub.size,
                   "entropy": float(ent[0]), "null_entropy_mean": float(ent[1:].mean()),
                   "p_entropy": float(empirical_pvalues([ent[0]], [ent[1:]], "less", config.ties)[0]),
                   "effect_entropy": _effect(float(ent[1:].mean()), float(ent[0])),
                   "activation": float(act[0]), "null_activation_mean": float(act[1:].mean()),
                   "p_activation": float(empirical_pvalues([act[0]], [act[1:]], "greater", config.ties)[0]),
                   "similarity": float(sim[0]), "null_similarity_mean": float(sim[1:].mean()),
                   "p_similarity": float(empirical_pvalues([sim[0]], [sim[1:]], "greater", config.ties)[0]),
                   "top_inputs": top, "top_labels": labels[indices[j * m]].cpu().tolist()}
            if image_dir is not None:
                path = image_dir / f"{_slug(sub.layer_name)}_c{sub.cluster}.png"
                title = (f"{sub.layer_name} cluster {sub.cluster}: top {config.k} inputs, labels "
                         f"{' '.join(str(v) for v in row['top_labels'])}")
                row["image"] = _save_sheet(path, [x[t].numpy() for t in top], title, columns=8)
            rows.append(row)
        on_progress("examples", done, len(layers))
    rows.sort(key=lambda row: (row["layer"], row["cluster"]))
    network = _summarise(rows, ("entropy", "activation", "similarity"), config.n_null, config.alpha)
    return CoherenceResult(
        method="coherence_examples", dataset=config.dataset, split=config.split, n_inputs=int(x.shape[0]),
        n_null=config.n_null, seed=config.random_state, device=str(net.device),
        subclusters=[SubClusterCoherence(**row) for row in rows], skipped=skipped, **network,
        image_dir=str(image_dir) if image_dir is not None else None, seconds=time.perf_counter() - start)


# -- store in, store out ---------------------------------------------------------------------------------------------

def _write(store: Store, layout: PartitionLayout, result: CoherenceResult, config: BaseModel) -> str:
    skip = {"dataset", "n_null", "random_state", "device", "split"}
    props = {**result.stored_properties(),
             **{f"config_{k}": (list(v) if isinstance(v, tuple) else v)
                for k, v in config.model_dump().items() if k not in skip}}
    scores = [{"cluster": s.cluster, "layer": s.layer, "stats": s.stored_properties()} for s in result.subclusters]
    return write_assessment(store, layout, result.method, props, scores)


def run_feature_coherence(store: Store, model: str, partition: str = "latest", *, n_null: int = 100, seed: int = 0,
                          device: str = "auto", steps: int = 256, out_dir: str | Path | None = None,
                          on_progress: Progress | None = None, write: bool = True,
                          **options: Any) -> CoherenceResult:
    """Feature-visualisation coherence of a stored partition; stored as a ``coherence_features`` assessment.

    Parameters
    ----------
    store : Store
    model : str
    partition : str, default "latest"
    n_null : int, default 100
        Random same-size sets per sub-cluster (the reference used 9). A sub-cluster's p-value is at least
        2/(N + 1) (two statistics, Bonferroni), so per-sub-cluster verdicts need N of about 60 or more; the
        network-level Fisher test works with fewer.
    seed : int, default 0
        Seeds the random sets, the initial inputs and the transforms.
    device : str, default "auto"
    steps : int, default 256
        Optimisation steps (the reference: 256).
    out_dir : str or Path, optional
        Save the images under ``out_dir/features/``.
    on_progress : callable, optional
        ``on_progress(stage, done, total)``; stages ``"load"`` and ``"features"``.
    write : bool, default True
    **options
        Any other ``FeatureConfig`` field, e.g. ``transforms=("jitter", "scale")``, ``parameterization="pixel"``.

    Returns
    -------
    CoherenceResult
    """
    config = FeatureConfig(n_null=n_null, random_state=seed, device=device, steps=steps, **options)
    progress = on_progress or _no_progress
    progress("load", 0, 1)
    layout = read_partition_layout(store, model, partition)
    net = load_network(store, layout.model, device=resolve_device(config.device))
    progress("load", 1, 1)
    result = assess_features(net, layout.subclusters, layout.pools, config, out_dir=out_dir, on_progress=progress)
    result.model, result.partition = layout.model, layout.partition
    if write:
        result.assessment = _write(store, layout, result, config)
    return result


def run_example_coherence(store: Store, model: str, partition: str = "latest", *, dataset: str = "digits",
                          n_null: int = 100, seed: int = 0, device: str = "auto", k: int = 32,
                          out_dir: str | Path | None = None, on_progress: Progress | None = None,
                          write: bool = True, **options: Any) -> CoherenceResult:
    """Data-set-example coherence of a stored partition; stored as a ``coherence_examples`` assessment.

    Parameters
    ----------
    store : Store
    model : str
    partition : str, default "latest"
    dataset : str, default "digits"
        A classification data set the network reads (``load_dataset`` name or path).
    n_null : int, default 100
    seed : int, default 0
    device : str, default "auto"
    k : int, default 32
        Top inputs per set.
    out_dir : str or Path, optional
        Save the top inputs under ``out_dir/examples/``.
    on_progress : callable, optional
        Stages ``"load"`` and ``"examples"``.
    write : bool, default True
    **options
        Any other ``ExamplesConfig`` field, e.g. ``split="train"``.
    """
    config = ExamplesConfig(dataset=dataset, n_null=n_null, random_state=seed, device=device, k=k, **options)
    progress = on_progress or _no_progress
    progress("load", 0, 1)
    layout = read_partition_layout(store, model, partition)
    net = load_network(store, layout.model, device=resolve_device(config.device))
    data, x, y = load_split(config.dataset, config.split)
    progress("load", 1, 1)
    result = assess_examples(net, x, y, data.n_classes, layout.subclusters, layout.pools, config, out_dir=out_dir,
                             on_progress=progress)
    result.model, result.partition = layout.model, layout.partition
    if write:
        result.assessment = _write(store, layout, result, config)
    return result


class CoherenceRun(BaseModel):
    """Both coherence methods of one partition (``run_coherence``)."""

    features: CoherenceResult | None = None
    examples: CoherenceResult | None = None


def run_coherence(store: Store, model: str, partition: str = "latest", *, dataset: str = "digits",
                  n_null: int = 100, seed: int = 0, device: str = "auto",
                  methods: Sequence[Literal["features", "examples"]] = ("features", "examples"),
                  steps: int = 256, k: int = 32, out_dir: str | Path | None = None,
                  on_progress: Progress | None = None, write: bool = True) -> CoherenceRun:
    """Run the chosen coherence methods with one N and seed (what ``neuronmap coherence`` runs by default)."""
    unknown = set(methods) - {"features", "examples"}
    if unknown:
        raise AssessmentInputError(f"Unknown coherence method(s) {sorted(unknown)}; choose 'features', 'examples'.")
    run = CoherenceRun()
    if "features" in methods:
        run.features = run_feature_coherence(store, model, partition, n_null=n_null, seed=seed, device=device,
                                             steps=steps, out_dir=out_dir, on_progress=on_progress, write=write)
    if "examples" in methods:
        run.examples = run_example_coherence(store, model, partition, dataset=dataset, n_null=n_null, seed=seed,
                                             device=device, k=k, out_dir=out_dir, on_progress=on_progress,
                                             write=write)
    return run
