"""The virtual neuron graph: MLP neuron → MLP neuron of a later block, through the residual stream (methods.md §10.2).

For blocks l1 < l2, neuron i of l1 and neuron j of l2, with the norm's γ in front of block l2's MLP folded in:

    LayerNorm reader (GPT-2, NeoX):  v = Σ_d (W_out[l1][i,d] − mean_d' W_out[l1][i,d']) · γ[l2][d] · W_in[l2][d,j]
    RMSNorm reader (Llama):          v = Σ_d  W_out[l1][i,d] · γ[l2][d] · W_in[l2][d,j]

A gated MLP has two readers, W_gate and W_up; the edge keeps v_gate and v_up and weighs sqrt(v_gate² + v_up²).
Otherwise the edge's w is the signed v. The edges are built one block pair at a time and, within a pair, a chunk of
source neurons at a time, keeping only the top-k per (source neuron, downstream block): memory stays bounded by
one block pair's kept edges plus one chunk, never the whole dense graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from neuronmap.loaders.records import EdgeBlock, LayerRecord, ModelGraph, ModelMeta, prefer_sparse
from neuronmap.loaders.transformers.families import MlpBlock, TransformerWeights

CHUNK_BYTES = 64 << 20  # float32 working memory for one chunk of source neurons against one downstream block


@dataclass
class PairEdges:
    """The kept edges from block ``src`` to block ``dst`` as coordinate arrays (one block pair, sparse)."""

    src: int
    dst: int
    rows: np.ndarray  # (n,) int64, source neuron in block src
    cols: np.ndarray  # (n,) int64, target neuron in block dst
    weight: np.ndarray  # (n,) float32: v, or sqrt(v_gate² + v_up²)
    parts: dict[str, np.ndarray] = field(default_factory=dict)  # gated: "v_gate", "v_up", aligned with weight
    n_candidates: int = 0  # n_src · n_dst, the edges before sparsification

    @property
    def n_edges(self) -> int:
        return int(self.rows.size)


def writer_rows(block: MlpBlock, centre: bool) -> torch.Tensor:
    """W_out (d_mlp × d_model), each row centred over d_model for a LayerNorm reader."""
    return block.w_out - block.w_out.mean(dim=1, keepdim=True) if centre else block.w_out


def readers(block: MlpBlock) -> dict[str, torch.Tensor]:
    """γ ⊙ W_in for each of the block's readers, (d_model × d_mlp)."""
    return {name: block.gamma[:, None] * w for name, w in block.w_in.items()}


def keep_edges(weight: torch.Tensor, top_k: int, min_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) within the chunk of the kept edges: the top_k largest |w| per row, then |w| ≥ min_weight."""
    magnitude = weight.abs()
    if 0 < top_k < weight.shape[1]:
        cols = torch.topk(magnitude, top_k, dim=1, sorted=False).indices
        rows = torch.arange(weight.shape[0]).repeat_interleave(top_k)
        cols = cols.reshape(-1)
    else:
        rows = torch.arange(weight.shape[0]).repeat_interleave(weight.shape[1])
        cols = torch.arange(weight.shape[1]).repeat(weight.shape[0])
    if min_weight > 0:
        kept = magnitude[rows, cols] >= min_weight
        rows, cols = rows[kept], cols[kept]
    return rows, cols


def pair_edges(
    src: torch.Tensor,
    dst_readers: dict[str, torch.Tensor],
    *,
    top_k: int,
    min_weight: float,
    src_block: int = 0,
    dst_block: int = 0,
    chunk_bytes: int = CHUNK_BYTES,
) -> PairEdges:
    """The kept edges of one block pair from its writer rows (n_src × d_model) and readers (d_model × n_dst each)."""
    n_src = int(src.shape[0])
    n_dst = int(next(iter(dst_readers.values())).shape[1])
    gated = len(dst_readers) > 1
    chunk = max(1, chunk_bytes // (4 * n_dst * (len(dst_readers) + 1)))
    rows, cols, weights = [], [], []
    parts: dict[str, list[torch.Tensor]] = {f"v_{name}": [] for name in dst_readers} if gated else {}
    for start in range(0, n_src, chunk):
        values = {name: src[start : start + chunk] @ reader for name, reader in dst_readers.items()}
        if gated:
            weight = torch.hypot(*values.values())
        else:
            (weight,) = values.values()
        r, c = keep_edges(weight, top_k, min_weight)
        rows.append(r + start)
        cols.append(c)
        weights.append(weight[r, c])
        for name, value in values.items():
            if gated:
                parts[f"v_{name}"].append(value[r, c])
    return PairEdges(
        src=src_block,
        dst=dst_block,
        rows=torch.cat(rows).numpy().astype(np.int64),
        cols=torch.cat(cols).numpy().astype(np.int64),
        weight=torch.cat(weights).numpy(),
        parts={name: torch.cat(chunks).numpy() for name, chunks in parts.items()},
        n_candidates=n_src * n_dst,
    )


def virtual_edges(
    weights: TransformerWeights, *, top_k: int = 32, min_weight: float = 0.0, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[PairEdges]:
    """The kept edges of every block pair l1 < l2, in order (0→1, 0→2, …, 1→2, …), one pair at a time.

    Parameters
    ----------
    weights : TransformerWeights
    top_k : int, default=32
        For every source neuron and every downstream block, keep the ``top_k`` largest |w|; 0 keeps all.
    min_weight : float, default=0.0
        Then keep only |w| ≥ ``min_weight``.
    chunk_bytes : int
        Working memory for the source neurons computed at once against one downstream block.
    """
    centre = weights.norm == "layernorm"
    for l1, source in enumerate(weights.blocks):
        src = writer_rows(source, centre)
        for l2 in range(l1 + 1, len(weights.blocks)):
            yield pair_edges(
                src,
                readers(weights.blocks[l2]),
                top_k=top_k,
                min_weight=min_weight,
                src_block=l1,
                dst_block=l2,
                chunk_bytes=chunk_bytes,
            )


def edge_block(edges: PairEdges, shape: tuple[int, int], sparse: bool | None = None) -> EdgeBlock:
    """One block pair's kept edges as an ``EdgeBlock``: CSR when ``sparse`` (None: when few enough), else dense."""
    if sparse is None:
        sparse = prefer_sparse(edges.n_edges, shape)
    if sparse:
        return EdgeBlock.sparse(
            edges.src, edges.dst, shape, edges.rows, edges.cols, edges.weight.astype(np.float64), edges.parts
        )
    weight = np.zeros(shape)
    weight[edges.rows, edges.cols] = edges.weight
    parts = {}
    for name, values in edges.parts.items():
        parts[name] = np.zeros(shape)
        parts[name][edges.rows, edges.cols] = values
    return EdgeBlock(src_layer=edges.src, dst_layer=edges.dst, weight=weight, parts=parts)


def mlp_layers(weights: TransformerWeights) -> list[LayerRecord]:
    """One layer per block's MLP, named after its module path; no input layer (methods.md §10.2)."""
    return [
        LayerRecord(
            index=block.index, name=block.path, kind="linear", role="hidden", size=block.d_mlp, shape=[block.d_mlp]
        )
        for block in weights.blocks
    ]


def virtual_graph(
    weights: TransformerWeights,
    *,
    top_k: int = 32,
    min_weight: float = 0.0,
    meta: ModelMeta | None = None,
    sparse: bool | None = None,
) -> ModelGraph:
    """The virtual neuron graph as a ``ModelGraph``: a layer per block's MLP, an edge block per pair l1 < l2.

    The edges are computed sparsely (``virtual_edges``), one block pair at a time, and each pair is stored as a
    CSR ``EdgeBlock`` (``sparse=True``), a dense one (``False``), or, by default, CSR where the pair is large and
    at most 1/8 full (``records.prefer_sparse``): a GPT-2-small graph at top-32 never exists densely. Gated MLPs
    keep ``v_gate`` and ``v_up`` in ``EdgeBlock.parts``.
    """
    layers = mlp_layers(weights)
    blocks = [
        edge_block(edges, (layers[edges.src].size, layers[edges.dst].size), sparse)
        for edges in virtual_edges(weights, top_k=top_k, min_weight=min_weight)
    ]
    biases = [None if block.bias is None else block.bias.double().numpy() for block in weights.blocks]
    return ModelGraph(layers=layers, blocks=blocks, biases=list(biases), meta=meta or ModelMeta())
