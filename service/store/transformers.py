"""Transformer models in the store (methods.md §10): block references for ``--layers``, and the within-cluster
fraction C that a transformer partition carries beside its no-structure level 1/k.

- ``block_layers``: ``--layers 3`` (a block's number), ``--layers transformer.h.3`` (its module path) or a range
  ``2:5`` names blocks; on a virtual graph that is their MLP layers (with heads, each block's heads and its MLP),
  on an mlp-in graph each block's residual layer and its MLP layer, so ``cluster MODEL --layers BLOCK`` clusters
  one block as Golechha et al. do.
- ``record_within_fraction``: C = Σ_c ‖W[rows_c, cols_c]‖²_F / ‖W‖²_F over the partition's edges, stored on the
  (:Partition) as ``within_fraction`` and ``within_fraction_no_structure`` (1/k).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from neuronmap.cypher import Store
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.clustering.sparse_blocks import is_sparse_block
from neuronmap.service.errors import ClusteringInputError
from neuronmap.service.store.pull import pull_subgraph

TRANSFORMER_ARCH = "transformers:"  # ModelMeta.arch of every transformer graph (loaders/transformers)


class WithinFraction(BaseModel):
    """C of a partition and its no-structure level."""

    model_config = ConfigDict(frozen=True)

    fraction: float
    no_structure: float  # 1/k
    n_clusters: int


def is_transformer(store: Store, model: str) -> bool:
    rows = store.run("transformers.model_graph", model=model)
    return bool(rows) and str(rows[0]["arch"] or "").startswith(TRANSFORMER_ARCH)


def _blocks(layers: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(block path, the block's layer names in order) for each block: its residual layer (mlp-in) or its heads
    (virtual with heads), then its MLP."""
    blocks: list[tuple[str, list[str]]] = []
    pending: list[str] = []
    for layer in sorted(layers, key=lambda row: int(row["index"])):
        name = str(layer["name"])
        if layer.get("role") in ("residual", "attention"):
            pending.append(name)
        elif name.endswith(".mlp"):
            blocks.append((name.removesuffix(".mlp"), [*pending, name]))
            pending = []
    return blocks


def block_layers(layers: list[dict[str, Any]], spec: str | None) -> str | None:
    """The ``first:last`` layer-name range that block references mean, or ``spec`` unchanged when it names none.

    A side is a block's number (0 first) or its module path (``transformer.h.3``); layer names pass through.

    >>> names = [("h.0.ln_2", "residual"), ("h.0.mlp", "hidden"), ("h.1.ln_2", "residual"), ("h.1.mlp", "hidden")]
    >>> layers = [{"index": i, "name": name, "role": role} for i, (name, role) in enumerate(names)]
    >>> block_layers(layers, "1"), block_layers(layers, "h.0:h.1"), block_layers(layers, "h.0.mlp")
    ('h.1.ln_2:h.1.mlp', 'h.0.ln_2:h.1.mlp', 'h.0.mlp')
    """
    if not spec:
        return spec
    blocks = _blocks(layers)
    by_key = {str(i): names for i, (_, names) in enumerate(blocks)} | {path: names for path, names in blocks}
    names = {str(layer["name"]) for layer in layers}
    sides = spec.split(":", 1) if ":" in spec else [spec, spec]
    if not any(side.strip() in by_key and side.strip() not in names for side in sides):
        return spec
    first, last = (side.strip() for side in sides)
    first = by_key[first][0] if first in by_key and first not in names else first
    last = by_key[last][-1] if last in by_key and last not in names else last
    return f"{first}:{last}"


def resolve_block_spec(store: Store, model: str, spec: str | None) -> str | None:
    """``block_layers`` for a stored transformer; any other model's ``spec`` is returned unchanged."""
    if not spec or not is_transformer(store, model):
        return spec
    return block_layers(store.run("admin.model_layers", model=model), spec)


def within_fraction(graph: BlockGraph, labels: torch.Tensor) -> WithinFraction:
    """C of a graph's |W| blocks under one labelling of its nodes (−1: in no cluster)."""
    labels = torch.as_tensor(labels).to("cpu", torch.int64)
    inside = total = 0.0
    for src, dst, w in graph.blocks:
        a, b = labels[graph.layer_slice(src)], labels[graph.layer_slice(dst)]
        if is_sparse_block(w):
            squared = w.values.to("cpu", torch.float64) ** 2
            same = (a[w.rows.cpu()] == b[w.cols.cpu()]) & (a[w.rows.cpu()] >= 0)
        else:
            squared = w.to("cpu", torch.float64) ** 2
            same = (a[:, None] == b[None, :]) & (a[:, None] >= 0)
        total += float(squared.sum())
        inside += float(squared[same].sum())
    k = int(np.unique(labels[labels >= 0].numpy()).size)
    if total == 0 or k == 0:
        raise ClusteringInputError("C is undefined for a graph without edges or a partition without clusters.")
    return WithinFraction(fraction=inside / total, no_structure=1.0 / k, n_clusters=k)


def record_within_fraction(store: Store, model: str, partition: str) -> WithinFraction:
    """Compute C of a stored partition over the edges it was cut from, and store it on the partition."""
    rows = store.run("transformers.partition_layers", partition=partition)
    if not rows:
        raise ClusteringInputError(f"There is no partition {partition!r}; `neuronmap partitions MODEL` lists them.")
    span = rows[0]["layers"]
    sub = pull_subgraph(store, model, layers=None if span in (None, "", "all") else span)  # "all": every layer
    labels = torch.full((sub.ordinals.size,), -1, dtype=torch.int64)
    members = store.run("admin.partition_labels", partition=partition)
    ordinals = np.array([row["ordinal"] for row in members], dtype=np.int64) - int(sub.ordinals[0])
    labels[torch.from_numpy(ordinals)] = torch.tensor([row["cluster"] for row in members], dtype=torch.int64)
    result = within_fraction(sub.graph, labels)
    store.run(
        "transformers.set_within_fraction",
        partition=partition,
        fraction=result.fraction,
        no_structure=result.no_structure,
    )
    return result
