"""Importance of a partition's modules: lesion each sub-cluster against random same-size sets of its layer
(methods.md §5).

``assess_importance`` works on a network and tensors; ``neuronmap.service.runs`` reads its inputs from the store and
writes its results back. ``parity=True`` reproduces the reference's choices. Pairs of sub-clusters lesioned together
are in ``double_lesion``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from neuronmap.options import AccuracyMetric, BatchNormLesion, LesionMethod, Significance, Split, Ties
from neuronmap.results import BriefRepr, SubclusterTable
from neuronmap.service.assessment.common import Progress, finite_mean, no_progress, none_if_nan, subcluster_generators
from neuronmap.service.assessment.layout import SubClusterRef
from neuronmap.service.assessment.lesion import draw_random_sets, intact_correct_counts, lesion_correct_counts
from neuronmap.service.assessment.network import LesionNetwork
from neuronmap.service.stats import (
    adjust_pvalues,
    chi2_uniformity_pvalue,
    effect_factor,
    empirical_pvalues,
    fisher_combined_pvalue,
    range_statistic,
)

Category = Literal["complete", "small", "important", "prunable", "sig-but-not-diff", "diff-but-not-sig", "other"]
Lesion = dict[int, np.ndarray]  # layer index → the units set to 0


class ImportanceConfig(BaseModel):
    """How to run the lesion test; the defaults are the intended method, ``parity=True`` the reference's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = "digits"  # a load_dataset name or path; a classification data set the network reads
    split: Split = "test"
    n_null: int = Field(default=100, ge=1)  # random sets per sub-cluster
    random_state: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    metric: AccuracyMetric = "overall"  # the accuracy behind p_value and the network tests
    ties: Ties = "conservative"
    significance: Significance = "bh"  # the taxonomy's test: BH-adjusted p < alpha, or p < 1/N
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    small_size: int = Field(default=12, ge=0)  # the taxonomy's "small": at most this many neurons
    min_drop: float = Field(default=0.01, ge=0.0)  # the taxonomy's "diff": accuracy falls by at least this
    method: LesionMethod = "auto"
    batchnorm: BatchNormLesion = "after"
    batch_size: int = Field(default=1000, ge=1)
    max_elements: int = Field(default=2**22, ge=1)  # see lesion.lesion_correct_counts
    parity: bool = False

    @model_validator(mode="before")
    @classmethod
    def _parity(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("parity"):
            # The reference: p_mean on balanced accuracy with strict counts, important iff p < 1/n_shuffles.
            values = {**values, "metric": "balanced", "ties": "strict", "significance": "reference"}
        return values


class SubClusterImportance(BaseModel):
    """One sub-cluster's lesion against its random sets."""

    cluster: int
    layer: int
    layer_name: str
    size: int
    pool_size: int  # the layer's units in the partition
    accuracy: float  # overall accuracy with the sub-cluster lesioned
    delta_accuracy: float  # accuracy − intact accuracy
    balanced_accuracy: float  # mean per-class recall, lesioned
    delta_balanced: float
    class_accuracy: list[float]  # per-class recall, lesioned (NaN for a class without inputs)
    null_delta_mean: float | None = None  # mean Δ accuracy of the random sets
    null_delta_sd: float | None = None
    z: float | None = None
    p_overall: float | None = None  # percentile of the overall accuracy among the random sets
    p_balanced: float | None = None  # percentile of the balanced accuracy (the reference's p_mean)
    p_value: float | None = None  # p_overall or p_balanced, as config.metric says
    p_adjusted: float | None = None  # Benjamini–Hochberg over the tested sub-clusters
    range_statistic: float | None = None  # R of the per-class changes; None when the mean change is 0
    null_range_mean: float | None = None
    p_range: float | None = None  # (#{R_random ≥ R} + 1)/(N + 1)
    p_range_adjusted: float | None = None
    effect_mean: float | None = None  # mean(metric of random sets) / metric of the sub-cluster (>1: it hurts more)
    category: Category

    def stored_properties(self) -> dict[str, Any]:
        """The SCORED relationship's properties."""
        return self.model_dump(exclude={"cluster", "layer", "layer_name", "size"})


class ImportanceResult(BriefRepr, SubclusterTable, BaseModel):
    """A lesion test of every hidden-layer sub-cluster of a partition."""

    _brief_fields = ("assessment", "model", "partition", "n_null", "accuracy", "n_tested", "n_important", "fisher_p")

    assessment: str | None = None  # the (:Assessment) id, when written to the store
    model: str = ""
    partition: str = ""
    dataset: str
    split: str
    n_inputs: int
    n_classes: int
    n_null: int
    seed: int
    device: str
    metric: str
    ties: str
    accuracy: float  # intact
    balanced_accuracy: float
    class_accuracy: list[float]
    subclusters: list[SubClusterImportance]
    n_tested: int  # sub-clusters with a null (not complete)
    n_important: int
    fisher_p: float | None  # Fisher with the centring shift, over p_value
    chi2_p: float | None  # the reference's χ² uniformity test (two-sided), over p_value
    fisher_p_range: float | None
    chi2_p_range: float | None
    effect_means: float | None  # the reference's effect factors, averaged over sub-clusters (NaN-free)
    effect_ranges: float | None
    seconds: float

    def stored_properties(self) -> dict[str, Any]:
        """The (:Assessment) node's properties."""
        return self.model_dump(exclude={"assessment", "model", "partition", "subclusters"})


def taxonomy(
    sub: SubClusterRef, p_overall: float | None, p_significance: float | None, delta: float, config: ImportanceConfig
) -> Category:
    """The reference's ``layer_cluster_taxonomify``, checked in its order (methods.md §5).

    ``p_significance`` is the BH-adjusted p-value (``significance="bh"``, significant below ``alpha``) or the raw one
    (``"reference"``, significant below 1/N).
    """
    if sub.complete:
        return "complete"
    if sub.size <= config.small_size:
        return "small"
    threshold = config.alpha if config.significance == "bh" else 1.0 / config.n_null
    significant = p_significance is not None and p_significance < threshold
    differs = delta <= -config.min_drop
    if significant and differs:
        return "important"
    if p_overall is not None and p_overall >= 1.0:
        return "prunable"
    if significant:
        return "sig-but-not-diff"
    if differs:
        return "diff-but-not-sig"
    return "other"


def _recall(counts: np.ndarray, totals: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(totals > 0, counts / np.maximum(totals, 1), np.nan)


def count_correct(
    net: LesionNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    lesions: list[Lesion],
    config: ImportanceConfig,
    stage: str,
    on_progress: Progress,
) -> tuple[np.ndarray, np.ndarray]:
    """Correct predictions per class of the intact network and of every lesion, reporting ``stage`` progress."""
    total, done = len(lesions) * -(-x.shape[0] // config.batch_size), 0
    on_progress(stage, 0, total)

    def advance(k: int) -> None:
        nonlocal done
        done += k
        on_progress(stage, done, total)

    intact = intact_correct_counts(net, x, y, n_classes, batch_size=config.batch_size)
    counts = lesion_correct_counts(
        net,
        x,
        y,
        n_classes,
        lesions,
        method=config.method,
        batch_size=config.batch_size,
        max_elements=config.max_elements,
        on_chunk=advance,
    )
    return intact, counts


def _single_lesions(
    subclusters: Sequence[SubClusterRef], pools: Mapping[int, np.ndarray], config: ImportanceConfig
) -> tuple[list[Lesion], list[tuple[int, int]]]:
    """Every lesion to run, and per sub-cluster its rows: the real set, then its random ones (none when complete)."""
    generators = subcluster_generators(config.random_state, len(subclusters))
    lesions: list[Lesion] = []
    spans: list[tuple[int, int]] = []
    for sub, rng in zip(subclusters, generators):
        first = len(lesions)
        lesions.append({sub.layer: np.asarray(sub.units, dtype=np.int64)})
        if not sub.complete:
            lesions.extend({sub.layer: row} for row in draw_random_sets(pools[sub.layer], sub.size, config.n_null, rng))
        spans.append((first, len(lesions)))
    return lesions, spans


@dataclass(frozen=True)
class _Accuracies:
    """The intact network's accuracies and, per lesion (row), the lesioned ones."""

    acc0: float
    recall0: np.ndarray  # (n_classes,)
    balanced0: float
    acc: np.ndarray  # (n_lesions,)
    recall: np.ndarray  # (n_lesions, n_classes)
    balanced: np.ndarray  # (n_lesions,)
    ranges: np.ndarray  # (n_lesions,): R of the per-class changes

    @classmethod
    def of(cls, intact: np.ndarray, counts: np.ndarray, y: torch.Tensor, n_classes: int) -> _Accuracies:
        totals = np.bincount(y.cpu().numpy(), minlength=n_classes).astype(np.float64)
        present = totals > 0
        recall0 = _recall(intact, totals)
        recall = _recall(counts, totals)
        return cls(
            acc0=float(intact.sum() / totals.sum()),
            recall0=recall0,
            balanced0=float(np.nanmean(recall0)),
            acc=counts.sum(axis=1) / totals.sum(),
            recall=recall,
            balanced=np.nanmean(recall[:, present], axis=1),
            ranges=range_statistic((recall - recall0)[:, present]),
        )


def _subcluster_row(sub: SubClusterRef, lo: int, hi: int, a: _Accuracies, config: ImportanceConfig) -> dict[str, Any]:
    """One sub-cluster's statistics: its lesion (row ``lo``) against its random sets (rows ``lo + 1 … hi − 1``)."""
    acc, balanced, ranges = a.acc, a.balanced, a.ranges
    row: dict[str, Any] = {
        "cluster": sub.cluster,
        "layer": sub.layer,
        "layer_name": sub.layer_name,
        "size": sub.size,
        "pool_size": sub.pool_size,
        "accuracy": float(acc[lo]),
        "delta_accuracy": float(acc[lo] - a.acc0),
        "balanced_accuracy": float(balanced[lo]),
        "delta_balanced": float(balanced[lo] - a.balanced0),
        "class_accuracy": a.recall[lo].tolist(),
        "range_statistic": None if np.isnan(ranges[lo]) else float(ranges[lo]),
    }
    if hi - lo <= 1:
        return row
    null_delta = acc[lo + 1 : hi] - a.acc0
    sd = float(null_delta.std())
    metric = balanced if config.metric == "balanced" else acc
    null_ranges = ranges[lo + 1 : hi]
    # A lesion that changes nothing on average has no R; it is never more class-specific than another one.
    r_true = -np.inf if np.isnan(ranges[lo]) else ranges[lo]
    row.update(
        {
            "null_delta_mean": float(null_delta.mean()),
            "null_delta_sd": sd,
            "z": (float(acc[lo] - a.acc0) - float(null_delta.mean())) / sd if sd > 0 else None,
            "p_overall": float(empirical_pvalues([acc[lo]], [acc[lo + 1 : hi]], "less", config.ties)[0]),
            "p_balanced": float(empirical_pvalues([balanced[lo]], [balanced[lo + 1 : hi]], "less", config.ties)[0]),
            "null_range_mean": float(np.nanmean(null_ranges)) if np.isfinite(null_ranges).any() else None,
            "p_range": float(
                empirical_pvalues([r_true], [np.nan_to_num(null_ranges, nan=-np.inf)], "greater", config.ties)[0]
            ),
            "effect_mean": float(effect_factor(metric[lo + 1 : hi].mean(), metric[lo])),
        }
    )
    row["p_value"] = row["p_balanced"] if config.metric == "balanced" else row["p_overall"]
    return row


def _classify(
    subclusters: Sequence[SubClusterRef], rows: list[dict[str, Any]], config: ImportanceConfig
) -> list[SubClusterImportance]:
    """BH adjustments over the tested sub-clusters (in place) and every sub-cluster's taxonomy."""
    tested = [i for i, row in enumerate(rows) if row.get("p_value") is not None]
    adjusted = adjust_pvalues(np.array([rows[i]["p_value"] for i in tested]), "bh") if tested else np.zeros(0)
    adjusted_range = adjust_pvalues(np.array([rows[i]["p_range"] for i in tested]), "bh") if tested else np.zeros(0)
    adjusted_overall = adjust_pvalues(np.array([rows[i]["p_overall"] for i in tested]), "bh") if tested else np.zeros(0)
    significance: dict[int, float] = {}
    for j, i in enumerate(tested):
        rows[i]["p_adjusted"] = float(adjusted[j])
        rows[i]["p_range_adjusted"] = float(adjusted_range[j])
        significance[i] = float(adjusted_overall[j]) if config.significance == "bh" else rows[i]["p_overall"]
    return [
        SubClusterImportance(
            **row, category=taxonomy(sub, row.get("p_overall"), significance.get(i), row["delta_accuracy"], config)
        )
        for i, (sub, row) in enumerate(zip(subclusters, rows))
    ]


def _network_tests(results: list[SubClusterImportance], n: int) -> dict[str, Any]:
    """Fisher's and the reference's χ² test over the tested sub-clusters, and the mean effect factors."""
    tested = [r for r in results if r.p_value is not None]
    p_values = np.array([r.p_value for r in tested])
    p_ranges = np.array([r.p_range for r in tested])
    range_effects = [
        float(effect_factor(r.null_range_mean, r.range_statistic))
        if r.null_range_mean is not None and r.range_statistic is not None
        else None
        for r in results
    ]
    return {
        "n_tested": len(tested),
        "n_important": sum(r.category == "important" for r in results),
        "fisher_p": none_if_nan(fisher_combined_pvalue(p_values, n)) if tested else None,
        "chi2_p": none_if_nan(chi2_uniformity_pvalue(p_values, n)) if tested else None,
        "fisher_p_range": none_if_nan(fisher_combined_pvalue(p_ranges, n)) if tested else None,
        "chi2_p_range": none_if_nan(chi2_uniformity_pvalue(p_ranges, n)) if tested else None,
        "effect_means": finite_mean([r.effect_mean for r in results]),
        "effect_ranges": finite_mean(range_effects),
    }


def assess_importance(
    net: LesionNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    subclusters: Sequence[SubClusterRef],
    pools: Mapping[int, np.ndarray],
    config: ImportanceConfig | None = None,
    *,
    on_progress: Progress = no_progress,
) -> ImportanceResult:
    """Lesion every sub-cluster and N random same-size sets of its layer; the statistics of methods.md §5.

    Parameters
    ----------
    net : LesionNetwork
    x : torch.Tensor of shape (N, ...)
    y : torch.Tensor of shape (N,)
        Class labels.
    n_classes : int
    subclusters : sequence of SubClusterRef
        Hidden-layer sub-clusters; each gets its own random generator, in this order.
    pools : mapping of int to numpy.ndarray
        Per layer index, the units random sets are drawn from (the layer's units in the partition).
    config : ImportanceConfig, optional
    on_progress : callable, optional
        ``on_progress("lesions", done, total)`` as lesions finish.

    Returns
    -------
    ImportanceResult
        Without store ids (``runs.run_importance`` fills them in).
    """
    config = config or ImportanceConfig()
    start = time.perf_counter()
    lesions, spans = _single_lesions(subclusters, pools, config)
    intact, counts = count_correct(net, x, y, n_classes, lesions, config, "lesions", on_progress)
    a = _Accuracies.of(intact, counts, y, n_classes)
    rows = [_subcluster_row(sub, lo, hi, a, config) for sub, (lo, hi) in zip(subclusters, spans)]
    results = _classify(subclusters, rows, config)
    return ImportanceResult(
        dataset=config.dataset,
        split=config.split,
        n_inputs=int(x.shape[0]),
        n_classes=n_classes,
        n_null=config.n_null,
        seed=config.random_state,
        device=str(net.device),
        metric=config.metric,
        ties=config.ties,
        accuracy=a.acc0,
        balanced_accuracy=a.balanced0,
        class_accuracy=a.recall0.tolist(),
        subclusters=results,
        **_network_tests(results, config.n_null),
        seconds=time.perf_counter() - start,
    )
