"""Importance of a transformer's modules: ablate each sub-cluster (a cluster's MLP neurons within one block) and N
random same-size sets of the same block, and score Δ next-token loss and Δ top-1 accuracy on held-out contexts
(methods.md §11.2). The statistics are the MLPs' (methods.md §5): percentile, BH-adjusted p, Fisher, the taxonomy.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from neuronmap.options import AblationMethod, Ties
from neuronmap.results import BriefRepr, SubclusterTable
from neuronmap.service.assessment.common import Progress, finite_mean, no_progress, none_if_nan, subcluster_generators
from neuronmap.service.assessment.importance import Category, ImportanceConfig, taxonomy
from neuronmap.service.assessment.layout import SubClusterRef
from neuronmap.service.assessment.lesion import draw_random_sets
from neuronmap.service.assessment.transformer.ablation import (
    Ablation,
    AnyAblation,
    mean_activations,
    scores_with_intact,
)
from neuronmap.service.assessment.transformer.sites import MlpSites, mlp_sites
from neuronmap.service.stats import (
    adjust_pvalues,
    chi2_uniformity_pvalue,
    effect_factor,
    empirical_pvalues,
    fisher_combined_pvalue,
    range_statistic,
)


class TransformerImportanceConfig(BaseModel):
    """How to run the ablation test; the taxonomy's thresholds are in loss (nats) instead of accuracy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = "two-task"  # the --data spec the contexts came from (recorded)
    ablation: AblationMethod = "mean"  # mean: each neuron's mean over the training contexts; zero: 0
    n_null: int = Field(default=100, ge=1)
    random_state: int = 0
    device: str = "auto"
    ties: Ties = "conservative"
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    small_size: int = Field(default=12, ge=0)  # the taxonomy's "small"
    min_increase: float = Field(default=0.01, ge=0.0)  # the taxonomy's "diff": loss rises by at least this (nats)
    batch_size: int = Field(default=64, ge=1)  # contexts per batch
    max_rows: int = Field(default=0, ge=0)  # rows per pass after the site, ablations × contexts (0: by device)


class SubClusterAblation(BaseModel):
    """One sub-cluster's ablation against its random sets. ``p_value`` is the loss percentile (higher is extreme)."""

    cluster: int
    layer: int
    layer_name: str
    size: int
    pool_size: int
    block: int
    loss: float  # mean next-token cross-entropy (nats) on the held-out contexts, ablated
    delta_loss: float
    accuracy: float  # top-1 next-token accuracy, ablated
    delta_accuracy: float
    task_delta_loss: list[float] = []  # per task of the data set
    null_delta_loss_mean: float | None = None
    null_delta_loss_sd: float | None = None
    null_delta_mean: float | None = None  # mean Δ accuracy of the random sets (as the MLPs' column)
    z: float | None = None  # of Δ loss against the random sets
    p_loss: float | None = None  # (#{random loss ≥ loss} + 1)/(N + 1)
    p_accuracy: float | None = None  # (#{random accuracy ≤ accuracy} + 1)/(N + 1)
    p_value: float | None = None  # = p_loss
    p_adjusted: float | None = None  # BH over the tested sub-clusters
    p_task: list[float] = []  # per task: the loss percentile on that task's contexts
    p_task_adjusted: list[float] = []  # per task: BH over the tested sub-clusters
    range_statistic: float | None = None  # R of the per-task Δ loss
    null_range_mean: float | None = None
    p_range: float | None = None
    p_range_adjusted: float | None = None
    effect_mean: float | None = None  # Δ loss / mean Δ loss of the random sets (> 1: it hurts more)
    category: Category

    def stored_properties(self) -> dict[str, Any]:
        return self.model_dump(exclude={"cluster", "layer", "layer_name", "size"})


class TransformerImportanceResult(BriefRepr, SubclusterTable, BaseModel):
    """An ablation test of every MLP sub-cluster of a transformer's partition."""

    _brief_fields = ("assessment", "model", "partition", "ablation", "n_null", "loss", "n_tested", "n_important")

    assessment: str | None = None
    model: str = ""
    partition: str = ""
    kind: str = "transformer"
    dataset: str
    ablation: str
    n_contexts: int
    context: int
    n_null: int
    seed: int
    device: str
    ties: str
    loss: float  # intact
    accuracy: float
    task_names: list[str]
    task_loss: list[float]
    subclusters: list[SubClusterAblation]
    n_tested: int
    n_important: int
    n_important_task: list[int]  # per task: sub-clusters whose p_task_adjusted is below alpha
    fisher_p: float | None
    chi2_p: float | None
    fisher_p_range: float | None
    chi2_p_range: float | None
    effect_means: float | None
    seconds: float

    def stored_properties(self) -> dict[str, Any]:
        return self.model_dump(exclude={"assessment", "model", "partition", "subclusters"})


def plan_ablations(
    subclusters: Sequence[SubClusterRef],
    blocks: Sequence[int],
    pools: Mapping[int, np.ndarray],
    n_null: int,
    seed: int,
) -> tuple[list[Ablation], list[tuple[int, int]]]:
    """Every ablation, and per sub-cluster its rows: the real set, then its random ones (none when complete)."""
    ablations: list[Ablation] = []
    spans = []
    for sub, block, rng in zip(subclusters, blocks, subcluster_generators(seed, len(subclusters))):
        first = len(ablations)
        ablations.append((block, np.asarray(sub.units, dtype=np.int64)))
        if not sub.complete:
            ablations.extend((block, row) for row in draw_random_sets(pools[sub.layer], sub.size, n_null, rng))
        spans.append((first, len(ablations)))
    return ablations, spans


def _task_means(values: np.ndarray, task: np.ndarray | None, n_tasks: int) -> np.ndarray:
    """(rows, n_tasks) mean over each task's contexts of (rows, n_contexts) values; (rows, 0) without tasks."""
    if task is None or n_tasks == 0:
        return np.zeros((values.shape[0], 0))
    return np.stack([values[:, task == t].mean(axis=1) for t in range(n_tasks)], axis=1)


def _row(
    sub: SubClusterRef,
    block: int,
    span: tuple[int, int],
    loss: np.ndarray,
    acc: np.ndarray,
    tasks: np.ndarray,
    intact: tuple[float, float, np.ndarray],
    ties: Ties,
) -> dict[str, Any]:
    """One sub-cluster's statistics: its ablation (row ``lo``) against its random sets (rows ``lo + 1 … hi − 1``)."""
    lo, hi = span
    loss0, acc0, tasks0 = intact
    task_delta = tasks - tasks0[None, :]
    ranges = range_statistic(task_delta) if task_delta.shape[1] > 1 else np.full(len(loss), np.nan)
    row: dict[str, Any] = {
        "cluster": sub.cluster,
        "layer": sub.layer,
        "layer_name": sub.layer_name,
        "size": sub.size,
        "pool_size": sub.pool_size,
        "block": block,
        "loss": float(loss[lo]),
        "delta_loss": float(loss[lo] - loss0),
        "accuracy": float(acc[lo]),
        "delta_accuracy": float(acc[lo] - acc0),
        "task_delta_loss": task_delta[lo].tolist(),
        "range_statistic": none_if_nan(float(ranges[lo])),
    }
    if hi - lo <= 1:
        return row
    null = loss[lo + 1 : hi] - loss0
    sd = float(null.std())
    p_task = [
        float(empirical_pvalues([tasks[lo, t]], [tasks[lo + 1 : hi, t]], "greater", ties)[0])
        for t in range(tasks.shape[1])
    ]
    r_true = -np.inf if np.isnan(ranges[lo]) else ranges[lo]
    null_ranges = ranges[lo + 1 : hi]
    row.update(
        null_delta_loss_mean=float(null.mean()),
        null_delta_loss_sd=sd,
        null_delta_mean=float((acc[lo + 1 : hi] - acc0).mean()),
        z=(row["delta_loss"] - float(null.mean())) / sd if sd > 0 else None,
        p_loss=float(empirical_pvalues([loss[lo]], [loss[lo + 1 : hi]], "greater", ties)[0]),
        p_accuracy=float(empirical_pvalues([acc[lo]], [acc[lo + 1 : hi]], "less", ties)[0]),
        p_task=p_task,
        null_range_mean=float(np.nanmean(null_ranges)) if np.isfinite(null_ranges).any() else None,
        p_range=float(empirical_pvalues([r_true], [np.nan_to_num(null_ranges, nan=-np.inf)], "greater", ties)[0])
        if task_delta.shape[1] > 1
        else None,
        effect_mean=none_if_nan(float(effect_factor(row["delta_loss"], float(null.mean())))),
    )
    row["p_value"] = row["p_loss"]
    return row


def classify(
    subclusters: Sequence[SubClusterRef], rows: list[dict[str, Any]], config: TransformerImportanceConfig
) -> list[SubClusterAblation]:
    """BH adjustments over the tested sub-clusters (in place) and the taxonomy with a loss threshold.

    The MLPs' ``taxonomy`` is reused: "differs" is Δ loss ≥ ``min_increase`` (passed as a fall of −Δ loss), and
    "prunable" is a p_loss of 1 (no random set hurts less).
    """
    tested = [i for i, row in enumerate(rows) if row.get("p_value") is not None]
    adjusted = adjust_pvalues(np.array([rows[i]["p_value"] for i in tested]), "bh") if tested else np.zeros(0)
    ranged = [i for i in tested if rows[i].get("p_range") is not None]
    adjusted_range = adjust_pvalues(np.array([rows[i]["p_range"] for i in ranged]), "bh") if ranged else np.zeros(0)
    for j, i in enumerate(tested):
        rows[i]["p_adjusted"] = float(adjusted[j])
    for j, i in enumerate(ranged):
        rows[i]["p_range_adjusted"] = float(adjusted_range[j])
    n_tasks = len(rows[tested[0]]["p_task"]) if tested else 0
    per_task = [adjust_pvalues(np.array([rows[i]["p_task"][t] for i in tested]), "bh") for t in range(n_tasks)]
    for j, i in enumerate(tested):
        rows[i]["p_task_adjusted"] = [float(per_task[t][j]) for t in range(n_tasks)]
    rule = ImportanceConfig(
        n_null=config.n_null, alpha=config.alpha, small_size=config.small_size, min_drop=config.min_increase
    )
    return [
        SubClusterAblation(
            **row, category=taxonomy(sub, row.get("p_value"), row.get("p_adjusted"), -row["delta_loss"], rule)
        )
        for sub, row in zip(subclusters, rows)
    ]


def network_tests(results: Sequence[SubClusterAblation], n_null: int, alpha: float) -> dict[str, Any]:
    """Fisher's and the reference's χ² test over the tested sub-clusters' p_value and p_range."""
    p = np.array([r.p_value for r in results if r.p_value is not None])
    n_tasks = max((len(r.p_task_adjusted) for r in results), default=0)
    pr = np.array([r.p_range for r in results if r.p_range is not None])
    return {
        "n_tested": int(p.size),
        "n_important": sum(r.category == "important" for r in results),
        "n_important_task": [
            sum(len(r.p_task_adjusted) > t and r.p_task_adjusted[t] < alpha for r in results) for t in range(n_tasks)
        ],
        "fisher_p": none_if_nan(fisher_combined_pvalue(p, n_null)) if p.size else None,
        "chi2_p": none_if_nan(chi2_uniformity_pvalue(p, n_null)) if p.size else None,
        "fisher_p_range": none_if_nan(fisher_combined_pvalue(pr, n_null)) if pr.size else None,
        "chi2_p_range": none_if_nan(chi2_uniformity_pvalue(pr, n_null)) if pr.size else None,
        "effect_means": finite_mean([r.effect_mean for r in results]),
    }


def run_ablations(
    model: nn.Module,
    sites: MlpSites,
    train: torch.Tensor,
    test: torch.Tensor,
    ablations: Sequence[AnyAblation],
    config: TransformerImportanceConfig,
    on_progress: Progress,
    stage: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every ablation's and the intact model's (loss, accuracy) per held-out context, with the fill values (the
    training contexts' means for mean ablation) and progress under ``stage``: what single and double ablations share."""
    means = mean_activations(model, sites, train, batch_size=config.batch_size) if config.ablation == "mean" else None
    on_progress(stage, 0, len(ablations))

    def advance(done: int, total: int) -> None:
        on_progress(stage, done * len(ablations) // total, len(ablations))

    return scores_with_intact(
        model,
        sites,
        test,
        ablations,
        means=means,
        batch_size=config.batch_size,
        max_rows=config.max_rows,
        on_work=advance,
    )


def assess_transformer_importance(
    model: nn.Module,
    train: torch.Tensor,
    test: torch.Tensor,
    subclusters: Sequence[SubClusterRef],
    pools: Mapping[int, np.ndarray],
    config: TransformerImportanceConfig | None = None,
    *,
    task_test: torch.Tensor | None = None,
    task_names: Sequence[str] = (),
    sites: MlpSites | None = None,
    on_progress: Progress = no_progress,
) -> TransformerImportanceResult:
    """Ablate every sub-cluster and N random same-size sets of its block; the statistics of methods.md §11.2.

    Parameters
    ----------
    model : nn.Module
        The causal LM (GPT-2, GPT-NeoX or Llama with its head), in eval mode on the device to use.
    train : torch.Tensor of shape (n, L)
        Contexts the mean-ablation values are averaged over.
    test : torch.Tensor of shape (m, L)
        Held-out contexts the loss and accuracy are measured on.
    subclusters : sequence of SubClusterRef
        MLP sub-clusters; a sub-cluster's ``layer_name`` names its block's MLP.
    pools : mapping of int to numpy.ndarray
        Per layer index, the units random sets are drawn from.
    task_test, task_names : optional
        Task labels of the held-out contexts: the per-task Δ loss, its percentiles and the range statistic.
    """
    config = config or TransformerImportanceConfig()
    start = time.perf_counter()
    sites = sites or mlp_sites(model)
    blocks = [sites.block_of(sub.layer_name) for sub in subclusters]
    ablations, spans = plan_ablations(subclusters, blocks, pools, config.n_null, config.random_state)
    loss, acc, loss0, acc0 = run_ablations(model, sites, train, test, ablations, config, on_progress, "ablations")
    task = None if task_test is None else task_test.cpu().numpy()
    n_tasks = len(task_names) if task is not None else 0
    tasks, tasks0 = _task_means(loss, task, n_tasks), _task_means(loss0[None, :], task, n_tasks)[0]
    intact = (float(loss0.mean()), float(acc0.mean()), tasks0)
    rows = [
        _row(sub, block, span, loss.mean(axis=1), acc.mean(axis=1), tasks, intact, config.ties)
        for sub, block, span in zip(subclusters, blocks, spans)
    ]
    results = classify(subclusters, rows, config)
    return TransformerImportanceResult(
        dataset=config.dataset,
        ablation=config.ablation,
        n_contexts=int(test.shape[0]),
        context=int(test.shape[1]),
        n_null=config.n_null,
        seed=config.random_state,
        device=str(next(model.parameters()).device),
        ties=config.ties,
        loss=intact[0],
        accuracy=intact[1],
        task_names=list(task_names) if n_tasks else [],
        task_loss=tasks0.tolist(),
        subclusters=results,
        **network_tests(results, config.n_null, config.alpha),
        seconds=time.perf_counter() - start,
    )
