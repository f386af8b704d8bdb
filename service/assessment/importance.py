"""Importance of a partition's modules: lesion each sub-cluster, against random same-size sets (methods.md §5).

A *sub-cluster* is a cluster's neurons within one hidden layer. Lesioning it (its neurons' values set to 0:
zeroing their incoming weights and bias in the stored, BatchNorm-folded graph; ``lesion.py`` documents the
BatchNorm choice) changes the network's accuracy on a data set. The same is done for N random sets of the same size
drawn from the partition's units of the same layer; a sub-cluster is *important* when its lesion hurts more than
nearly all of them. All lesions of a layer run as batches of masks (``lesion.lesion_correct_counts``).

Per sub-cluster: the accuracy with it lesioned (overall and per class) and its change Δ; the percentile p-value of
the lesioned accuracy among the random sets, p = (#{random ≤ real} + 1)/(N + 1) (ties count against the
sub-cluster); the range statistic R of the per-class changes (class-specificity) and its p-value; Benjamini–Hochberg
adjusted p-values over the sub-clusters; the reference's taxonomy. Per network: Fisher's combination of the
p-values (with the reference's centring shift) and the reference's two-sided χ² uniformity test. ``parity=True``
reproduces the reference's choices (strict ``<`` counts, balanced accuracy for the combined tests, the 1/N
significance threshold of the taxonomy).

``run_importance`` (store in, store out) is what ``neuronmap importance`` calls; ``assess_importance`` is the same
computation on a network and tensors; ``run_double_lesion`` / ``assess_double_lesion`` test pairs.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from neuronmap.device import resolve_device
from neuronmap.cypher import Store
from neuronmap.loaders.datasets import Dataset, load_dataset

from neuronmap.service.store.assessments import PartitionLayout, SubClusterRef, read_partition_layout, write_assessment
from neuronmap.service.errors import AssessmentInputError
from neuronmap.options import BatchNormLesion, LesionMethod
from neuronmap.service.assessment.lesion import draw_random_sets, intact_correct_counts, lesion_correct_counts
from neuronmap.service.assessment.network import LesionNetwork
from neuronmap.service.store.model_source import load_network
from neuronmap.service.stats import (Ties, adjust_pvalues, chi2_uniformity_pvalue, effect_factor, empirical_pvalues,
                    fisher_combined_pvalue, range_statistic)

Progress = Callable[[str, int, int], None]
"""``on_progress(stage, done, total)``: called as work finishes; ``done`` counts up to ``total`` within a stage."""

Category = Literal["complete", "small", "important", "prunable", "sig-but-not-diff", "diff-but-not-sig", "other"]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


class ImportanceConfig(BaseModel):
    """How to run the lesion test; the defaults are the intended method, ``parity=True`` the reference's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = "digits"  # a load_dataset name or path; a classification data set the network reads
    split: Literal["train", "test", "all"] = "test"
    n_null: int = Field(default=100, ge=1)  # random sets per sub-cluster
    random_state: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    metric: Literal["overall", "balanced"] = "overall"  # the accuracy behind p_value and the network tests
    ties: Ties = "conservative"
    significance: Literal["bh", "reference"] = "bh"  # the taxonomy's test: BH-adjusted p < alpha, or p < 1/N
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    small_size: int = Field(default=12, ge=0)  # the taxonomy's "small": at most this many neurons
    min_drop: float = Field(default=0.01, ge=0.0)  # the taxonomy's "diff": accuracy falls by at least this
    method: LesionMethod = "auto"
    batchnorm: BatchNormLesion = "after"
    batch_size: int = Field(default=1000, ge=1)
    max_elements: int = Field(default=2 ** 22, ge=1)  # see lesion.lesion_correct_counts
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


class ImportanceResult(BaseModel):
    """A lesion test of every hidden-layer sub-cluster of a partition."""

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


def load_split(name: str, split: str) -> tuple[Dataset, torch.Tensor, torch.Tensor]:
    """A classification data set's inputs and labels of one split."""
    data = load_dataset(name)
    if data.task != "classification":
        raise AssessmentInputError(f"Data set {name!r} is a {data.task} task; lesion and coherence tests measure "
                                   "class accuracy and label entropy, so they need a classification data set.")
    x = data.inputs(split)  # type: ignore[arg-type]
    y = {"train": data.y_train, "test": data.y_test}.get(split)
    if y is None:
        y = torch.cat([data.y_train, data.y_test])
    return data, x, y


def subcluster_generators(seed: int, n: int) -> list[np.random.Generator]:
    """One independent generator per sub-cluster (in layout order), so results never depend on batching or device."""
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(n)]


def taxonomy(sub: SubClusterRef, p_overall: float | None, p_significance: float | None, delta: float,
             config: ImportanceConfig) -> Category:
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


def _count_correct(net: LesionNetwork, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                   lesions: list[dict[int, np.ndarray]], config: ImportanceConfig, stage: str,
                   on_progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """Correct predictions per class of the intact network and of every lesion, reporting ``stage`` progress."""
    total, done = len(lesions) * -(-x.shape[0] // config.batch_size), 0
    on_progress(stage, 0, total)

    def advance(k: int) -> None:
        nonlocal done
        done += k
        on_progress(stage, done, total)

    intact = intact_correct_counts(net, x, y, n_classes, batch_size=config.batch_size)
    counts = lesion_correct_counts(net, x, y, n_classes, lesions, method=config.method,
                                   batch_size=config.batch_size, max_elements=config.max_elements, on_chunk=advance)
    return intact, counts


def assess_importance(net: LesionNetwork, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                      subclusters: Sequence[SubClusterRef], pools: Mapping[int, np.ndarray],
                      config: ImportanceConfig | None = None, *,
                      on_progress: Progress = _no_progress) -> ImportanceResult:
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
        Without store ids (``run_importance`` fills them in).
    """
    config = config or ImportanceConfig()
    start = time.perf_counter()
    n = config.n_null
    generators = subcluster_generators(config.random_state, len(subclusters))
    lesions: list[dict[int, np.ndarray]] = []
    spans: list[tuple[int, int]] = []  # rows of each sub-cluster: the real set, then its random ones
    for sub, rng in zip(subclusters, generators):
        first = len(lesions)
        units = np.asarray(sub.units, dtype=np.int64)
        lesions.append({sub.layer: units})
        if not sub.complete:
            lesions.extend({sub.layer: row} for row in draw_random_sets(pools[sub.layer], sub.size, n, rng))
        spans.append((first, len(lesions)))
    intact, counts = _count_correct(net, x, y, n_classes, lesions, config, "lesions", on_progress)
    totals = np.bincount(y.cpu().numpy(), minlength=n_classes).astype(np.float64)
    present = totals > 0
    acc0 = float(intact.sum() / totals.sum())
    recall0 = _recall(intact, totals)
    balanced0 = float(np.nanmean(recall0))
    acc = counts.sum(axis=1) / totals.sum()  # (n_lesions,)
    recall = _recall(counts, totals)  # (n_lesions, n_classes)
    balanced = np.nanmean(recall[:, present], axis=1)
    ranges = range_statistic((recall - recall0)[:, present])

    rows: list[dict[str, Any]] = []
    for sub, (lo, hi) in zip(subclusters, spans):
        row: dict[str, Any] = {
            "cluster": sub.cluster, "layer": sub.layer, "layer_name": sub.layer_name, "size": sub.size,
            "pool_size": sub.pool_size, "accuracy": float(acc[lo]), "delta_accuracy": float(acc[lo] - acc0),
            "balanced_accuracy": float(balanced[lo]), "delta_balanced": float(balanced[lo] - balanced0),
            "class_accuracy": recall[lo].tolist(),
            "range_statistic": None if np.isnan(ranges[lo]) else float(ranges[lo]),
        }
        if hi - lo > 1:
            null_delta = acc[lo + 1:hi] - acc0
            sd = float(null_delta.std())
            metric = balanced if config.metric == "balanced" else acc
            null_ranges = ranges[lo + 1:hi]
            # A lesion that changes nothing on average has no R; it is never more class-specific than another one.
            r_true = -np.inf if np.isnan(ranges[lo]) else ranges[lo]
            row.update({
                "null_delta_mean": float(null_delta.mean()), "null_delta_sd": sd,
                "z": (float(acc[lo] - acc0) - float(null_delta.mean())) / sd if sd > 0 else None,
                "p_overall": float(empirical_pvalues([acc[lo]], [acc[lo + 1:hi]], "less", config.ties)[0]),
                "p_balanced": float(empirical_pvalues([balanced[lo]], [balanced[lo + 1:hi]], "less",
                                                      config.ties)[0]),
                "null_range_mean": float(np.nanmean(null_ranges)) if np.isfinite(null_ranges).any() else None,
                "p_range": float(empirical_pvalues([r_true], [np.nan_to_num(null_ranges, nan=-np.inf)], "greater",
                                                   config.ties)[0]),
                "effect_mean": float(effect_factor(metric[lo + 1:hi].mean(), metric[lo])),
            })
            row["p_value"] = row["p_balanced"] if config.metric == "balanced" else row["p_overall"]
        rows.append(row)

    tested = [i for i, row in enumerate(rows) if row.get("p_value") is not None]
    p_values = np.array([rows[i]["p_value"] for i in tested])
    p_ranges = np.array([rows[i]["p_range"] for i in tested])
    adjusted = adjust_pvalues(p_values, "bh") if tested else np.zeros(0)
    adjusted_range = adjust_pvalues(p_ranges, "bh") if tested else np.zeros(0)
    adjusted_overall = adjust_pvalues(np.array([rows[i]["p_overall"] for i in tested]), "bh") if tested else []
    significance: dict[int, float] = {}
    for j, i in enumerate(tested):
        rows[i]["p_adjusted"] = float(adjusted[j])
        rows[i]["p_range_adjusted"] = float(adjusted_range[j])
        significance[i] = float(adjusted_overall[j]) if config.significance == "bh" else rows[i]["p_overall"]
    results = []
    for i, (sub, row) in enumerate(zip(subclusters, rows)):
        category = taxonomy(sub, row.get("p_overall"), significance.get(i), row["delta_accuracy"], config)
        results.append(SubClusterImportance(**row, category=category))

    def finite_mean(values: list[float | None]) -> float | None:
        arr = np.array([v for v in values if v is not None], dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        return float(arr.mean()) if arr.size else None

    range_effects = [float(effect_factor(r.null_range_mean, r.range_statistic))
                     if r.null_range_mean is not None and r.range_statistic is not None else None for r in results]
    return ImportanceResult(
        dataset=config.dataset, split=config.split, n_inputs=int(x.shape[0]), n_classes=n_classes, n_null=n,
        seed=config.random_state, device=str(net.device), metric=config.metric, ties=config.ties, accuracy=acc0,
        balanced_accuracy=balanced0, class_accuracy=recall0.tolist(), subclusters=results, n_tested=len(tested),
        n_important=sum(r.category == "important" for r in results),
        fisher_p=_none_if_nan(fisher_combined_pvalue(p_values, n)) if tested else None,
        chi2_p=_none_if_nan(chi2_uniformity_pvalue(p_values, n)) if tested else None,
        fisher_p_range=_none_if_nan(fisher_combined_pvalue(p_ranges, n)) if tested else None,
        chi2_p_range=_none_if_nan(chi2_uniformity_pvalue(p_ranges, n)) if tested else None,
        effect_means=finite_mean([r.effect_mean for r in results]), effect_ranges=finite_mean(range_effects),
        seconds=time.perf_counter() - start)


def _none_if_nan(value: float) -> float | None:
    return None if value != value else float(value)


def _load(store: Store, model: str, partition: str, config: ImportanceConfig, progress: Progress
          ) -> tuple[PartitionLayout, LesionNetwork, Dataset, torch.Tensor, torch.Tensor]:
    """What both lesion tests read first: the partition's layout, the re-loaded network and the data split."""
    progress("load", 0, 1)
    layout = read_partition_layout(store, model, partition)
    net = load_network(store, layout.model, device=resolve_device(config.device), batchnorm=config.batchnorm)
    data, x, y = load_split(config.dataset, config.split)
    progress("load", 1, 1)
    return layout, net, data, x, y


def run_importance(store: Store, model: str, partition: str = "latest", *, dataset: str = "digits",
                   n_null: int = 100, seed: int = 0, device: str = "auto", on_progress: Progress | None = None,
                   write: bool = True, **options: Any) -> ImportanceResult:
    """Lesion test of a stored partition's sub-clusters; the result is stored as an (:Assessment).

    Parameters
    ----------
    store : Store
    model : str
        The model's name.
    partition : str, default "latest"
        A partition id of the model, or ``'latest'``.
    dataset : str, default "digits"
        A ``load_dataset`` name or path of a classification data set the network reads.
    n_null : int, default 100
        Random same-size sets per sub-cluster (N).
    seed : int, default 0
        Seeds the random sets; the same seed gives the same result on CPU and CUDA (up to float ties).
    device : str, default "auto"
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    on_progress : callable, optional
        ``on_progress(stage, done, total)``; the stages are ``"load"`` (0/1, 1/1) and ``"lesions"``.
    write : bool, default True
        Store the run (sub-clusters, assessment, scores).
    **options
        Any other ``ImportanceConfig`` field, e.g. ``split="train"``, ``parity=True``, ``method="mask"``.

    Returns
    -------
    ImportanceResult
        ``assessment`` is the stored run's id (None with ``write=False``).

    Raises
    ------
    ModelNotFoundError, ModelNotReadyError, PartitionNotFoundError, NoPartitionError
    SourceUnavailableError
        The model's source file is gone or changed since ingest.
    LayerMismatchError, AssessmentInputError, DatasetError, DeviceError
    pydantic.ValidationError
        An unknown or invalid option.
    """
    config = ImportanceConfig(dataset=dataset, n_null=n_null, random_state=seed, device=device, **options)
    progress = on_progress or _no_progress
    layout, net, data, x, y = _load(store, model, partition, config, progress)
    result = assess_importance(net, x, y, data.n_classes, layout.subclusters, layout.pools, config,
                               on_progress=progress)
    result.model, result.partition = layout.model, layout.partition
    if write:
        result.assessment = write_importance(store, layout, result, config)
    return result


def write_importance(store: Store, layout: PartitionLayout, result: ImportanceResult,
                     config: ImportanceConfig) -> str:
    """Store an importance run; returns the assessment id."""
    props = {**result.stored_properties(), **_config_properties(config)}
    scores = [{"cluster": s.cluster, "layer": s.layer, "stats": s.stored_properties()} for s in result.subclusters]
    return write_assessment(store, layout, "importance", props, scores)


def _config_properties(config: BaseModel) -> dict[str, Any]:
    skip = {"dataset", "n_null", "random_state", "device", "metric", "ties", "split"}
    return {f"config_{k}": v for k, v in config.model_dump().items() if k not in skip}


# -- double lesions ------------------------------------------------------------------------------------------------

class PairInteraction(BaseModel):
    """Two sub-clusters lesioned together: is the joint damage more (or less) than the sum of the single ones?"""

    cluster_a: int
    layer_a: int
    cluster_b: int
    layer_b: int
    delta_a: float  # Δ accuracy with a alone lesioned
    delta_b: float
    delta_ab: float  # with both
    interaction: float  # delta_ab − delta_a − delta_b (negative: the joint lesion hurts more than the sum)
    null_mean: float  # the same for random same-size sets (disjoint when the two share a layer)
    null_sd: float
    p_less: float  # (#{random ≤ real} + 1)/(N + 1): more negative than random
    p_greater: float
    p_two_sided: float  # min(1, 2 min(p_less, p_greater))
    p_adjusted: float  # BH of p_two_sided over the pairs

    def stored_properties(self) -> dict[str, Any]:
        return self.model_dump(exclude={"cluster_a", "layer_a", "cluster_b", "layer_b"})


class DoubleLesionResult(BaseModel):
    """The joint double-lesion test of methods.md §5 over all pairs of sub-clusters."""

    assessment: str | None = None
    model: str = ""
    partition: str = ""
    dataset: str
    split: str
    n_inputs: int
    n_null: int
    seed: int
    device: str
    accuracy: float
    pairs: list[PairInteraction]
    fisher_p: float | None  # over p_less: is there super-additive damage anywhere?
    chi2_p: float | None
    seconds: float

    def stored_properties(self) -> dict[str, Any]:
        return self.model_dump(exclude={"assessment", "model", "partition", "pairs"})


def assess_double_lesion(net: LesionNetwork, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                         subclusters: Sequence[SubClusterRef], pools: Mapping[int, np.ndarray],
                         config: ImportanceConfig | None = None, *, same_layer: bool = True,
                         on_progress: Progress = _no_progress) -> DoubleLesionResult:
    """Lesion every pair (i < j) of sub-clusters together, against random pairs of the same sizes and layers.

    For a pair (i, j) the interaction is Δ_ij − Δ_i − Δ_j (accuracy changes). The null draws, per sample, a random
    set of i's size from i's layer and one of j's size from j's layer (disjoint when the layers are the same) and
    computes the same interaction from the three lesions. Pairs that include a complete sub-cluster are skipped.

    Parameters
    ----------
    same_layer : bool, default True
        Also test pairs within one layer (the reference drops them when interpreting).
    """
    config = config or ImportanceConfig(n_null=50)
    start = time.perf_counter()
    n = config.n_null
    candidates = [s for s in subclusters if not s.complete]
    pairs = [(a, b) for i, a in enumerate(candidates) for b in candidates[i + 1:]
             if same_layer or a.layer != b.layer]
    generators = subcluster_generators(config.random_state, len(pairs))
    lesions: list[dict[int, np.ndarray]] = []
    single_row: dict[tuple[int, int], int] = {}
    for sub in candidates:
        single_row[(sub.cluster, sub.layer)] = len(lesions)
        lesions.append({sub.layer: np.asarray(sub.units, dtype=np.int64)})
    layouts = []
    for (a, b), rng in zip(pairs, generators):
        joint = len(lesions)
        lesions.append(_union({a.layer: np.asarray(a.units)}, {b.layer: np.asarray(b.units)}))
        if a.layer == b.layer:
            drawn = draw_random_sets(pools[a.layer], a.size + b.size, n, rng)
            ra, rb = drawn[:, :a.size], drawn[:, a.size:]
        else:
            ra = draw_random_sets(pools[a.layer], a.size, n, rng)
            rb = draw_random_sets(pools[b.layer], b.size, n, rng)
        first = len(lesions)
        for k in range(n):
            lesions.extend([{a.layer: ra[k]}, {b.layer: rb[k]}, _union({a.layer: ra[k]}, {b.layer: rb[k]})])
        layouts.append((a, b, joint, first))
    intact, counts = _count_correct(net, x, y, n_classes, lesions, config, "double lesions", on_progress)
    n_inputs = int(x.shape[0])
    acc0 = float(intact.sum() / n_inputs)
    delta = counts.sum(axis=1) / n_inputs - acc0
    rows = []
    for a, b, joint, first in layouts:
        da, db = delta[single_row[(a.cluster, a.layer)]], delta[single_row[(b.cluster, b.layer)]]
        real = delta[joint] - da - db
        block = delta[first:first + 3 * n].reshape(n, 3)
        null = block[:, 2] - block[:, 0] - block[:, 1]
        p_less = float(empirical_pvalues([real], [null], "less", config.ties)[0])
        p_greater = float(empirical_pvalues([real], [null], "greater", config.ties)[0])
        rows.append({"cluster_a": a.cluster, "layer_a": a.layer, "cluster_b": b.cluster, "layer_b": b.layer,
                     "delta_a": float(da), "delta_b": float(db), "delta_ab": float(delta[joint]),
                     "interaction": float(real), "null_mean": float(null.mean()), "null_sd": float(null.std()),
                     "p_less": p_less, "p_greater": p_greater, "p_two_sided": min(1.0, 2 * min(p_less, p_greater))})
    adjusted = adjust_pvalues([r["p_two_sided"] for r in rows], "bh") if rows else []
    results = [PairInteraction(**row, p_adjusted=float(p)) for row, p in zip(rows, adjusted)]
    p_less = np.array([r.p_less for r in results])
    return DoubleLesionResult(
        dataset=config.dataset, split=config.split, n_inputs=n_inputs, n_null=n, seed=config.random_state,
        device=str(net.device), accuracy=acc0, pairs=results,
        fisher_p=_none_if_nan(fisher_combined_pvalue(p_less, n)) if results else None,
        chi2_p=_none_if_nan(chi2_uniformity_pvalue(p_less, n)) if results else None,
        seconds=time.perf_counter() - start)


def _union(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    out = dict(a)
    for layer, units in b.items():
        out[layer] = np.union1d(out[layer], units) if layer in out else np.asarray(units)
    return out


def run_double_lesion(store: Store, model: str, partition: str = "latest", *, dataset: str = "digits",
                      n_null: int = 50, seed: int = 0, device: str = "auto", on_progress: Progress | None = None,
                      write: bool = True, same_layer: bool = True,
                      **options: Any) -> DoubleLesionResult:
    """The double-lesion interaction test of a stored partition; stored as an ``importance_pairs`` assessment.

    Parameters are those of :func:`run_importance` (default ``n_null=50``, as the reference), plus ``same_layer``
    (also test pairs within one layer). The stages reported to ``on_progress`` are ``"load"`` and
    ``"double lesions"``. The pairs are stored as ``(:SubCluster)-[:INTERACTS]->(:SubCluster)``.
    """
    config = ImportanceConfig(dataset=dataset, n_null=n_null, random_state=seed, device=device, **options)
    progress = on_progress or _no_progress
    layout, net, data, x, y = _load(store, model, partition, config, progress)
    result = assess_double_lesion(net, x, y, data.n_classes, layout.subclusters, layout.pools, config,
                                  same_layer=same_layer, on_progress=progress)
    result.model, result.partition = layout.model, layout.partition
    if write:
        props = {**result.stored_properties(), **_config_properties(config)}
        interactions = [{"cluster_a": p.cluster_a, "layer_a": p.layer_a, "cluster_b": p.cluster_b,
                         "layer_b": p.layer_b, "stats": p.stored_properties()} for p in result.pairs]
        result.assessment = write_assessment(store, layout, "importance_pairs", props, [],
                                             interactions=interactions)
    return result
