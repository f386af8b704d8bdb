"""Data-set-example coherence (methods.md §6; not in the reference code): the k inputs of a data set that drive a set
of units most, scored by their label entropy, mean activation and mean pairwise cosine similarity against those of
random same-size sets."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from neuronmap.service.assessment.coherence.results import (
    CoherenceResult,
    ExamplesConfig,
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
from neuronmap.service.assessment.network import LesionNetwork, prepare_inputs
from neuronmap.service.errors import AssessmentInputError
from neuronmap.service.stats import entropy_nats


def layer_activations(net: LesionNetwork, x: torch.Tensor, layer: LayerPoint, batch_size: int = 1000) -> torch.Tensor:
    """(N, C) post-activation values of a layer over a data set (channels: spatial means), on the network's device."""
    x = prepare_inputs(net, x)
    with torch.no_grad():
        return torch.cat(
            [net.activations(x[lo : lo + batch_size].to(net.device), layer) for lo in range(0, x.shape[0], batch_size)]
        )


def top_examples(activations: torch.Tensor, sets: Sequence[np.ndarray], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k inputs with the highest mean activation of each set: (values (M, k), indices (M, k)), best first."""
    selection = selection_weights(sets, activations.shape[1], activations.device)  # (M, C)
    scores = activations @ selection.t()  # (N, M)
    values, indices = torch.topk(scores, k, dim=0)  # ties: torch's order, the same on every run of one device
    return values.t(), indices.t()


def mean_pairwise_cosine(unit_inputs: torch.Tensor, indices: torch.Tensor, max_elements: int = 2**24) -> torch.Tensor:
    """(M,) mean cosine similarity over the k(k−1) ordered pairs of each row's inputs.

    ``unit_inputs`` (N, D) are the inputs scaled to norm 1: the sum of all k² cosines is |Σ x_i|², so the mean over
    the pairs is (|Σ x_i|² − k)/(k(k − 1)) without forming a k×k matrix.
    """
    m, k = indices.shape
    per = max(1, max_elements // (k * unit_inputs.shape[1]))
    out = []
    for lo in range(0, m, per):
        summed = unit_inputs[indices[lo : lo + per]].sum(dim=1)  # (m', D)
        out.append(((summed * summed).sum(dim=1) - k) / (k * (k - 1)))
    return torch.cat(out)


def _layer_rows(
    net: LesionNetwork,
    x: torch.Tensor,
    labels: torch.Tensor,
    unit: torch.Tensor,
    n_classes: int,
    subs: Sequence[SubClusterRef],
    sets: Sequence[Sequence[np.ndarray]],
    config: ExamplesConfig,
    image_dir: Path | None,
) -> list[dict[str, Any]]:
    """The rows of one layer's sub-clusters ``subs``, each with its own set then its random ones in ``sets``."""
    acts = layer_activations(net, x, net.layer(subs[0].layer), config.batch_size)
    values, indices = top_examples(acts, [units for block in sets for units in block], config.k)  # (M, k)
    counts = F.one_hot(labels[indices], n_classes).sum(dim=1)  # (M, n_classes)
    label_entropy = entropy_nats(counts.cpu().numpy())
    activation = values.mean(dim=1).cpu().numpy()
    similarity = mean_pairwise_cosine(unit, indices, config.max_elements).cpu().numpy()
    m = config.n_null + 1
    rows = []
    for j, sub in enumerate(subs):
        block = slice(j * m, (j + 1) * m)
        ent = label_entropy[block]
        top = indices[j * m].cpu().tolist()
        top_labels = labels[indices[j * m]].cpu().tolist()
        row = {
            "cluster": sub.cluster,
            "layer": sub.layer,
            "layer_name": sub.layer_name,
            "size": sub.size,
            **against_random("entropy", ent, "less", config.ties),
            "effect_entropy": effect(float(ent[1:].mean()), float(ent[0])),
            **against_random("activation", activation[block], "greater", config.ties),
            **against_random("similarity", similarity[block], "greater", config.ties),
            "top_inputs": top,
            "top_labels": top_labels,
        }
        if image_dir is not None:
            path = image_dir / f"{slug(sub.layer_name)}_c{sub.cluster}.png"
            title = (
                f"{sub.layer_name} cluster {sub.cluster}: top {config.k} inputs, labels "
                f"{' '.join(str(v) for v in top_labels)}"
            )
            row["image"] = save_sheet(path, [x[t].numpy() for t in top], title, columns=8)
        rows.append(row)
    return rows


def assess_examples(
    net: LesionNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    subclusters: Sequence[SubClusterRef],
    pools: Mapping[int, np.ndarray],
    config: ExamplesConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    on_progress: Progress = no_progress,
) -> CoherenceResult:
    """Data-set-example coherence of sub-clusters against random same-size sets (methods.md §6).

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
    all_sets = subcluster_sets(subs, pools, config.n_null, config.random_state)
    flat = prepare_inputs(net, x).reshape(x.shape[0], -1).to(net.device, torch.float32)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    labels = y.to(net.device)
    layers = sorted({sub.layer for sub in subs})
    on_progress("examples", 0, len(layers))
    rows: list[dict[str, Any]] = []
    image_dir = Path(out_dir) / "examples" if out_dir is not None else None
    for done, layer_index in enumerate(layers, start=1):
        members = [i for i, sub in enumerate(subs) if sub.layer == layer_index]
        rows.extend(
            _layer_rows(
                net,
                x,
                labels,
                unit,
                n_classes,
                [subs[i] for i in members],
                [all_sets[i] for i in members],
                config,
                image_dir,
            )
        )
        on_progress("examples", done, len(layers))
    rows.sort(key=lambda row: (row["layer"], row["cluster"]))
    network = summarise(rows, ("entropy", "activation", "similarity"), config.n_null, config.alpha)
    return CoherenceResult(
        method="coherence_examples",
        dataset=config.dataset,
        split=config.split,
        n_inputs=int(x.shape[0]),
        n_null=config.n_null,
        seed=config.random_state,
        device=str(net.device),
        subclusters=[SubClusterCoherence(**row) for row in rows],
        skipped=skipped,
        **network,
        image_dir=str(image_dir) if image_dir is not None else None,
        seconds=time.perf_counter() - start,
    )
