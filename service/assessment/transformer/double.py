"""Double ablations of a transformer's sub-clusters: pairs ablated together against the sum of their single
ablations (methods.md §5.8, §11.2), in next-token loss.

The design is the MLPs' ``double_lesion``: for a pair (i, j) of sub-clusters that are not complete, the
interaction is I_ij = ΔL_ij − ΔL_i − ΔL_j, with ΔL the change in mean next-token loss on the held-out contexts. The
null draws, per sample, a random set of i's size from i's block and one of j's size from j's block (disjoint when
they share a block) and computes the same interaction from those three ablations. A positive I_ij means the joint
ablation hurts more than the two single ones added together (the sign is the opposite of the MLPs' accuracy).
Pairs in two blocks are ablated jointly: the later block's δ is computed from its hidden activations as they are
after the earlier ablation.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from neuronmap.service.assessment.common import Progress, no_progress, none_if_nan, subcluster_generators
from neuronmap.service.assessment.double_lesion import PairInteraction, pair_row
from neuronmap.service.assessment.layout import SubClusterRef
from neuronmap.service.assessment.lesion import draw_random_sets
from neuronmap.service.assessment.transformer.ablation import AnyAblation
from neuronmap.service.assessment.transformer.importance import TransformerImportanceConfig, run_ablations
from neuronmap.service.assessment.transformer.sites import MlpSites, mlp_sites
from neuronmap.service.stats import adjust_pvalues, chi2_uniformity_pvalue, fisher_combined_pvalue


class TransformerDoubleResult(BaseModel):
    """The double-ablation test over all pairs of a transformer partition's sub-clusters. Each pair's ``delta_*``
    and ``interaction`` are in loss (nats); ``fisher_p`` and ``chi2_p`` combine ``p_greater`` (super-additive
    damage)."""

    assessment: str | None = None
    model: str = ""
    partition: str = ""
    kind: str = "transformer"
    metric: str = "delta_loss"
    dataset: str
    ablation: str
    n_contexts: int
    context: int
    n_null: int
    seed: int
    device: str
    loss: float  # intact
    pairs: list[PairInteraction]
    fisher_p: float | None
    chi2_p: float | None
    seconds: float

    def stored_properties(self) -> dict[str, object]:
        return self.model_dump(exclude={"assessment", "model", "partition", "pairs"})


_PairRows = tuple[SubClusterRef, SubClusterRef, int, int]  # a, b, the joint ablation's row, its first random triple


def plan_pairs(
    candidates: Sequence[SubClusterRef],
    blocks: Mapping[tuple[int, int], int],
    pairs: Sequence[tuple[SubClusterRef, SubClusterRef]],
    pools: Mapping[int, np.ndarray],
    n_null: int,
    seed: int,
) -> tuple[list[AnyAblation], dict[tuple[int, int], int], list[_PairRows]]:
    """Every ablation: each candidate alone, then per pair the joint one and N random (a, b, a ∪ b) triples.
    ``blocks`` maps (cluster, layer) to the sub-cluster's block. Returns the ablations, each candidate's row by
    (cluster, layer), and each pair's rows."""
    ablations: list[AnyAblation] = []
    single: dict[tuple[int, int], int] = {}
    for sub in candidates:
        single[(sub.cluster, sub.layer)] = len(ablations)
        ablations.append((blocks[(sub.cluster, sub.layer)], np.asarray(sub.units, dtype=np.int64)))
    layouts: list[_PairRows] = []
    for (a, b), rng in zip(pairs, subcluster_generators(seed, len(pairs))):
        ba, bb = blocks[(a.cluster, a.layer)], blocks[(b.cluster, b.layer)]
        joint = len(ablations)
        ablations.append(((ba, np.asarray(a.units, dtype=np.int64)), (bb, np.asarray(b.units, dtype=np.int64))))
        if a.layer == b.layer:
            drawn = draw_random_sets(pools[a.layer], a.size + b.size, n_null, rng)
            ra, rb = drawn[:, : a.size], drawn[:, a.size :]
        else:
            ra = draw_random_sets(pools[a.layer], a.size, n_null, rng)
            rb = draw_random_sets(pools[b.layer], b.size, n_null, rng)
        first = len(ablations)
        for k in range(n_null):
            ablations.extend([(ba, ra[k]), (bb, rb[k]), ((ba, ra[k]), (bb, rb[k]))])
        layouts.append((a, b, joint, first))
    return ablations, single, layouts


def assess_transformer_double(
    model: nn.Module,
    train: torch.Tensor,
    test: torch.Tensor,
    subclusters: Sequence[SubClusterRef],
    pools: Mapping[int, np.ndarray],
    config: TransformerImportanceConfig | None = None,
    *,
    same_block: bool = True,
    sites: MlpSites | None = None,
    on_progress: Progress = no_progress,
) -> TransformerDoubleResult:
    """Ablate every pair (i < j) of sub-clusters together, against random pairs of the same sizes and blocks.

    Parameters are ``assess_transformer_importance``'s (``config.n_null`` random triples per pair; the MLPs' default
    is 50), plus ``same_block``: also test pairs within one block.
    """
    config = config or TransformerImportanceConfig(n_null=50)
    start = time.perf_counter()
    sites = sites or mlp_sites(model)
    candidates = [s for s in subclusters if not s.complete]
    blocks = {(s.cluster, s.layer): sites.block_of(s.layer_name) for s in candidates}
    pairs = [(a, b) for i, a in enumerate(candidates) for b in candidates[i + 1 :] if same_block or a.layer != b.layer]
    ablations, single, layouts = plan_pairs(candidates, blocks, pairs, pools, config.n_null, config.random_state)
    loss, _, loss0, _ = run_ablations(model, sites, train, test, ablations, config, on_progress, "double ablations")
    delta = loss.mean(axis=1) - loss0.mean()
    rows = [
        pair_row(
            a,
            b,
            (single[(a.cluster, a.layer)], single[(b.cluster, b.layer)]),
            (j, f),
            delta,
            config.n_null,
            config.ties,
        )
        for a, b, j, f in layouts
    ]
    adjusted = adjust_pvalues(np.array([r["p_two_sided"] for r in rows]), "bh") if rows else np.zeros(0)
    results = [PairInteraction(**row, p_adjusted=float(p)) for row, p in zip(rows, adjusted)]
    p_greater = np.array([r.p_greater for r in results])
    return TransformerDoubleResult(
        dataset=config.dataset,
        ablation=config.ablation,
        n_contexts=int(test.shape[0]),
        context=int(test.shape[1]),
        n_null=config.n_null,
        seed=config.random_state,
        device=str(next(model.parameters()).device),
        loss=float(loss0.mean()),
        pairs=results,
        fisher_p=none_if_nan(fisher_combined_pvalue(p_greater, config.n_null)) if results else None,
        chi2_p=none_if_nan(chi2_uniformity_pvalue(p_greater, config.n_null)) if results else None,
        seconds=time.perf_counter() - start,
    )
