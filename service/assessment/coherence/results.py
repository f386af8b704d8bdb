"""What both coherence methods share (methods.md §6): their configs, the result types, the size rule, the random
sets, and the per-sub-cluster and per-network summary of the statistics' p-values."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from neuronmap.options import Direction, Parameterization, Split, Ties, Transform
from neuronmap.results import BriefRepr, SubclusterTable
from neuronmap.service.assessment.common import finite_mean, none_if_nan, subcluster_generators
from neuronmap.service.assessment.layout import SubClusterRef
from neuronmap.service.assessment.lesion import draw_random_sets
from neuronmap.service.stats import (
    adjust_pvalues,
    chi2_uniformity_pvalue,
    effect_factor,
    empirical_pvalues,
    fisher_combined_pvalue,
)


class CoherenceConfig(BaseModel):
    """The settings both methods share: which sub-clusters qualify, the tests, the seed and the device."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_size: int = Field(default=6, ge=1)  # the reference: 5 < |S|
    max_fraction: float = Field(default=0.8, gt=0.0, le=1.0)  # … and |S| < 0.8·|layer| (strict, as the reference)
    ties: Ties = "conservative"
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)  # n_coherent counts p_adjusted < alpha
    random_state: int = 0
    device: str = "auto"


class FeatureConfig(CoherenceConfig):
    """How to render and score feature visualisations."""

    n_null: int = Field(default=100, ge=1)  # random sets per sub-cluster (the reference: 9; see runs.run_coherence)
    steps: int = Field(default=256, ge=1)
    lr: float = Field(default=0.05, gt=0.0)
    parameterization: Parameterization = "auto"  # auto: fourier for (C, H, W), pixel otherwise
    decorrelate: bool = True  # colour decorrelation for 3-channel images
    transforms: tuple[Transform, ...] = ()
    jitter: int = Field(default=2, ge=0)  # pixels, for "jitter"
    scales: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.1)  # for "scale"
    relu_gradient_override: bool = True
    max_images: int = Field(default=512, ge=1)  # inputs optimised in one batch
    save_random: int = Field(default=3, ge=0)  # random sets shown beside each sub-cluster's image


class ExamplesConfig(CoherenceConfig):
    """How to pick and score data-set examples."""

    dataset: str = "digits"
    split: Split = "test"
    n_null: int = Field(default=100, ge=1)
    k: int = Field(default=32, ge=2)  # top inputs per set
    batch_size: int = Field(default=1000, ge=1)
    max_elements: int = Field(default=2**24, ge=1)  # bounds the (k, sets, input) block of the similarity


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


class CoherenceResult(BriefRepr, SubclusterTable, BaseModel):
    """One coherence method over every qualifying hidden-layer sub-cluster of a partition."""

    _brief_fields = ("assessment", "model", "partition", "method", "n_null", "n_coherent", "fisher_p")

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


def qualifying(subclusters: Sequence[SubClusterRef], config: CoherenceConfig) -> tuple[list[SubClusterRef], list[str]]:
    """The sub-clusters inside the size rule, and the others described."""
    keep, skipped = [], []
    for sub in subclusters:
        if config.min_size <= sub.size < config.max_fraction * sub.pool_size:
            keep.append(sub)
        else:
            skipped.append(f"{sub.layer_name}:{sub.cluster} (size {sub.size} of {sub.pool_size})")
    return keep, skipped


def subcluster_sets(
    subclusters: Sequence[SubClusterRef], pools: Mapping[int, np.ndarray], n_null: int, seed: int
) -> list[list[np.ndarray]]:
    """Per sub-cluster: its units, then n_null random same-size sets of its layer."""
    out = []
    for sub, rng in zip(subclusters, subcluster_generators(seed, len(subclusters))):
        draws = draw_random_sets(pools[sub.layer], sub.size, n_null, rng)
        out.append([np.asarray(sub.units, dtype=np.int64)] + list(draws))
    return out


def selection_weights(sets: Sequence[np.ndarray], size: int, device: torch.device) -> torch.Tensor:
    """(M, size) float: 1/|S| on each set's units (the mean over the set)."""
    weights = torch.zeros(len(sets), size, device=device)
    for row, units in enumerate(sets):
        weights[row, torch.as_tensor(units, device=device)] = 1.0 / len(units)
    return weights


def against_random(name: str, values: np.ndarray, direction: Direction, ties: Ties) -> dict[str, float]:
    """A statistic of the sub-cluster (``values[0]``) against its random sets (``values[1:]``): the value, the
    random sets' mean and the percentile p-value (``"less"``: lower than random is coherent)."""
    return {
        name: float(values[0]),
        f"null_{name}_mean": float(values[1:].mean()),
        f"p_{name}": float(empirical_pvalues([values[0]], [values[1:]], direction, ties)[0]),
    }


def summarise(rows: list[dict[str, Any]], names: Sequence[str], n_null: int, alpha: float) -> dict[str, Any]:
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
            network[f"fisher_p{suffix}"] = none_if_nan(fisher_combined_pvalue(p, n_null)) if p.size else None
            network[f"chi2_p{suffix}"] = none_if_nan(chi2_uniformity_pvalue(p, n_null)) if p.size else None
            fishers.append(network[f"fisher_p{suffix}"])
    found = [f for f in fishers if f is not None]
    network["fisher_p"] = min(1.0, len(names) * min(found)) if found else None
    network["n_coherent"] = sum(row["p_adjusted"] < alpha for row in rows)
    network["alpha"] = alpha
    network["effect_entropy"] = finite_mean([row["effect_entropy"] for row in rows])
    network["effect_activation"] = finite_mean([effect(row["null_activation_mean"], row["activation"]) for row in rows])
    return network


def effect(null_mean: float, value: float) -> float | None:
    """The reference's effect factor mean(random)/real, or None where it is not finite (0/0)."""
    out = float(effect_factor(null_mean, value))
    return out if math.isfinite(out) else None
