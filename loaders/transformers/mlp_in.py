"""The per-block baseline (``graph="mlp-in"``, methods.md §10.3) and its clusterability statistic.

Following Golechha et al. (2025), each block is a bipartite graph of its own: the residual dimensions its MLP
reads (a layer of d_model nodes, role ``residual``, named after the norm in front of the MLP) and the MLP's
neurons, joined by W_in. Blocks are not joined to each other, so each is clustered alone (``--layers`` the
block's two layers). Their statistic is the share of squared weight that falls inside the clusters' blocks:

    C = Σ_c ‖W[rows_c, cols_c]‖²_F / ‖W‖²_F,

which is 1 for a block-diagonal W and about 1/k for k equal clusters that W does not favour.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from neuronmap.loaders.records import EdgeBlock, LayerRecord, ModelGraph, ModelMeta
from neuronmap.loaders.transformers.errors import TransformerOptionError
from neuronmap.loaders.transformers.families import TransformerWeights


def mlp_in_graph(
    weights: TransformerWeights, *, fold_norm: bool = False, min_weight: float = 0.0, meta: ModelMeta | None = None
) -> ModelGraph:
    """Per block, layers ``residual`` (d_model) → ``hidden`` (d_mlp) with one edge per entry of W_in.

    The edge is the signed W_in[d, j] (γ[d] · W_in[d, j] with ``fold_norm``); a gated MLP's edge weighs
    sqrt(W_gate² + W_up²) and keeps both in ``EdgeBlock.parts`` as ``w_gate`` and ``w_up``. Edges with
    |w| < ``min_weight`` are dropped. Layer 2b is block b's residual dims, layer 2b + 1 its MLP neurons.
    """
    layers: list[LayerRecord] = []
    blocks: list[EdgeBlock] = []
    biases: list[np.ndarray | None] = []
    d_model = weights.d_model
    for block in weights.blocks:
        residual, neurons = 2 * block.index, 2 * block.index + 1
        layers.append(
            LayerRecord(
                index=residual, name=block.norm_path, kind="residual", role="residual", size=d_model, shape=[d_model]
            )
        )
        layers.append(
            LayerRecord(
                index=neurons, name=block.path, kind="linear", role="hidden", size=block.d_mlp, shape=[block.d_mlp]
            )
        )
        biases += [None, None if block.bias is None else block.bias.double().numpy()]
        scale = block.gamma[:, None] if fold_norm else torch.ones(d_model, 1)
        values = {name: (scale * w).double().numpy() for name, w in block.w_in.items()}
        if weights.gated:
            weight = np.hypot(*values.values())
            parts = {f"w_{name}": value for name, value in values.items()}
        else:
            (weight,) = values.values()
            parts = {}
        if min_weight > 0:
            dropped = np.abs(weight) < min_weight
            weight = np.where(dropped, 0.0, weight)
            parts = {name: np.where(dropped, 0.0, value) for name, value in parts.items()}
        blocks.append(EdgeBlock(src_layer=residual, dst_layer=neurons, weight=weight, parts=parts))
    return ModelGraph(layers=layers, blocks=blocks, biases=biases, meta=meta or ModelMeta())


class BlockFraction(BaseModel):
    """Golechha et al.'s clusterability of one weight matrix under a partition of its rows and columns."""

    model_config = ConfigDict(frozen=True)

    fraction: float  # C = Σ_c ‖W[rows_c, cols_c]‖²_F / ‖W‖²_F
    no_structure: float  # 1/k, C's level when the clusters and W are unrelated (k equal clusters)
    n_clusters: int  # k: the distinct labels ≥ 0 among rows and columns


def within_cluster_fraction(weight: np.ndarray, row_labels: np.ndarray, col_labels: np.ndarray) -> BlockFraction:
    """C of ``weight`` (n_rows × n_cols) for cluster labels of its rows and of its columns (methods.md §10.3).

    Labels are integers; −1 (an isolated node) belongs to no cluster, so its weight counts only in ‖W‖²_F.

    >>> w = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> within_cluster_fraction(w, np.array([0, 1]), np.array([0, 1])).fraction
    1.0
    >>> within_cluster_fraction(np.ones((2, 2)), np.array([0, 1]), np.array([0, 1])).fraction
    0.5
    """
    weight = np.asarray(weight, dtype=np.float64)
    rows, cols = np.asarray(row_labels), np.asarray(col_labels)
    if weight.ndim != 2 or rows.shape != (weight.shape[0],) or cols.shape != (weight.shape[1],):
        raise TransformerOptionError(
            f"Labels of lengths {rows.size} and {cols.size} do not fit a weight matrix of shape {weight.shape}."
        )
    squared = weight**2
    total = float(squared.sum())
    clusters = np.union1d(rows[rows >= 0], cols[cols >= 0])
    if total == 0 or clusters.size == 0:
        raise TransformerOptionError("C is undefined for an all-zero weight matrix or a partition with no clusters.")
    inside = sum(float(squared[np.ix_(rows == c, cols == c)].sum()) for c in clusters)
    return BlockFraction(fraction=inside / total, no_structure=1.0 / clusters.size, n_clusters=int(clusters.size))


def fraction_of_partition(graph: ModelGraph, block: int, labels: np.ndarray) -> BlockFraction:
    """C of mlp-in block ``block`` from the labels of its two layers (residual dims first, then neurons).

    ``labels`` is what clustering that block alone gives (``spectral_clustering(...).labels``), in the order of
    the two layers' ordinals.
    """
    edge_block = next((b for b in graph.blocks if b.src_layer == 2 * block), None)
    if edge_block is None:
        raise TransformerOptionError(f"Block {block} is not a block of this mlp-in graph.")
    labels = np.asarray(labels)
    n_rows = edge_block.weight.shape[0]
    if labels.shape != (n_rows + edge_block.weight.shape[1],):
        raise TransformerOptionError(
            f"Block {block} has {n_rows} + {edge_block.weight.shape[1]} nodes, but {labels.size} labels were given."
        )
    return within_cluster_fraction(edge_block.weight, labels[:n_rows], labels[n_rows:])
