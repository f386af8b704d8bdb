"""Double lesions: pairs of sub-clusters silenced together, against the sum of their single lesions (methods.md §5).

``assess_double_lesion`` works on a network and tensors; ``neuronmap.service.runs`` reads its inputs from the store
and writes its results back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from neuronmap.options import Ties
from neuronmap.service.assessment.common import Progress, no_progress, none_if_nan, subcluster_generators
from neuronmap.service.assessment.importance import ImportanceConfig, Lesion, count_correct
from neuronmap.service.assessment.layout import SubClusterRef
from neuronmap.service.assessment.lesion import draw_random_sets
from neuronmap.service.assessment.network import LesionNetwork
from neuronmap.service.stats import adjust_pvalues, chi2_uniformity_pvalue, empirical_pvalues, fisher_combined_pvalue


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


_PairRows = tuple[SubClusterRef, SubClusterRef, int, int]  # a, b, the joint lesion's row, its first random triple


def _pair_lesions(
    candidates: Sequence[SubClusterRef],
    pairs: Sequence[tuple[SubClusterRef, SubClusterRef]],
    pools: Mapping[int, np.ndarray],
    config: ImportanceConfig,
) -> tuple[list[Lesion], dict[tuple[int, int], int], list[_PairRows]]:
    """Every lesion to run: each candidate alone, then per pair the joint lesion and N random (a, b, a ∪ b) triples.

    Returns the lesions, the row of each candidate's single lesion by (cluster, layer), and the rows of each pair.
    """
    n = config.n_null
    lesions: list[Lesion] = []
    single_row: dict[tuple[int, int], int] = {}
    for sub in candidates:
        single_row[(sub.cluster, sub.layer)] = len(lesions)
        lesions.append({sub.layer: np.asarray(sub.units, dtype=np.int64)})
    layouts: list[_PairRows] = []
    for (a, b), rng in zip(pairs, subcluster_generators(config.random_state, len(pairs))):
        joint = len(lesions)
        lesions.append(_union({a.layer: np.asarray(a.units)}, {b.layer: np.asarray(b.units)}))
        if a.layer == b.layer:
            drawn = draw_random_sets(pools[a.layer], a.size + b.size, n, rng)
            ra, rb = drawn[:, : a.size], drawn[:, a.size :]
        else:
            ra = draw_random_sets(pools[a.layer], a.size, n, rng)
            rb = draw_random_sets(pools[b.layer], b.size, n, rng)
        first = len(lesions)
        for k in range(n):
            lesions.extend([{a.layer: ra[k]}, {b.layer: rb[k]}, _union({a.layer: ra[k]}, {b.layer: rb[k]})])
        layouts.append((a, b, joint, first))
    return lesions, single_row, layouts


def _union(a: Lesion, b: Lesion) -> Lesion:
    out = dict(a)
    for layer, units in b.items():
        out[layer] = np.union1d(out[layer], units) if layer in out else np.asarray(units)
    return out


def pair_row(
    a: SubClusterRef,
    b: SubClusterRef,
    single: tuple[int, int],
    rows: tuple[int, int],
    delta: np.ndarray,
    n: int,
    ties: Ties,
) -> dict[str, float | int]:
    """One pair's interaction Δ_ab − Δ_a − Δ_b against its N random triples: ``single`` are the rows of ``delta``
    holding a's and b's own changes, ``rows`` the joint row and the first of the triples (``first … first + 3N − 1``,
    each triple: random a, random b, both). Shared by double lesions (accuracy) and double ablations (loss)."""
    (ia, ib), (joint, first) = single, rows
    da, db = delta[ia], delta[ib]
    real = delta[joint] - da - db
    triple = delta[first : first + 3 * n].reshape(n, 3)
    null = triple[:, 2] - triple[:, 0] - triple[:, 1]
    p_less = float(empirical_pvalues([real], [null], "less", ties)[0])
    p_greater = float(empirical_pvalues([real], [null], "greater", ties)[0])
    return {
        "cluster_a": a.cluster,
        "layer_a": a.layer,
        "cluster_b": b.cluster,
        "layer_b": b.layer,
        "delta_a": float(da),
        "delta_b": float(db),
        "delta_ab": float(delta[joint]),
        "interaction": float(real),
        "null_mean": float(null.mean()),
        "null_sd": float(null.std()),
        "p_less": p_less,
        "p_greater": p_greater,
        "p_two_sided": min(1.0, 2 * min(p_less, p_greater)),
    }


def assess_double_lesion(
    net: LesionNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    subclusters: Sequence[SubClusterRef],
    pools: Mapping[int, np.ndarray],
    config: ImportanceConfig | None = None,
    *,
    same_layer: bool = True,
    on_progress: Progress = no_progress,
) -> DoubleLesionResult:
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
    pairs = [(a, b) for i, a in enumerate(candidates) for b in candidates[i + 1 :] if same_layer or a.layer != b.layer]
    lesions, single_row, layouts = _pair_lesions(candidates, pairs, pools, config)
    intact, counts = count_correct(net, x, y, n_classes, lesions, config, "double lesions", on_progress)
    n_inputs = int(x.shape[0])
    acc0 = float(intact.sum() / n_inputs)
    delta = counts.sum(axis=1) / n_inputs - acc0
    rows = [
        pair_row(
            a,
            b,
            (single_row[(a.cluster, a.layer)], single_row[(b.cluster, b.layer)]),
            (joint, first),
            delta,
            n,
            config.ties,
        )
        for a, b, joint, first in layouts
    ]
    adjusted = adjust_pvalues([r["p_two_sided"] for r in rows], "bh") if rows else np.zeros(0)
    results = [PairInteraction(**row, p_adjusted=float(p)) for row, p in zip(rows, adjusted)]
    p_less_all = np.array([r.p_less for r in results])
    return DoubleLesionResult(
        dataset=config.dataset,
        split=config.split,
        n_inputs=n_inputs,
        n_null=n,
        seed=config.random_state,
        device=str(net.device),
        accuracy=acc0,
        pairs=results,
        fisher_p=none_if_nan(fisher_combined_pvalue(p_less_all, n)) if results else None,
        chi2_p=none_if_nan(chi2_uniformity_pvalue(p_less_all, n)) if results else None,
        seconds=time.perf_counter() - start,
    )
