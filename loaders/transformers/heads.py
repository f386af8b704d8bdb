"""Attention heads as units (``heads=True``, methods.md §10.6): the virtual graph gains one node per head.

Beside each block's MLP layer, a layer of n_head units named after the attention module (role ``attention``).
Layer 2b is block b's heads and layer 2b + 1 its MLP neurons. With the norm in front of the reader folded in, and
the writer's rows centred over d_model when that norm is a LayerNorm (GPT-2, NeoX; not for RMSNorm, Llama):

    MLP(l1, i) → head(l2, h):  ‖ W_out[l1][i, :] · diag(γ_attn[l2]) · W_V[l2][h] ‖₂        (a d_head vector)
    head(l1, h) → MLP(l2, j):  ‖ W_O[l1][h] · diag(γ[l2]) · W_in[l2][:, j] ‖₂             (a d_head vector)

W_V[l2][h] is the value projection (d_model × d_head) of the KV head that query head h reads (h // (n_head /
n_kv_head) with grouped-query attention); W_O[l1][h] is head h's rows (d_head × d_model) of the output projection.
A gated MLP reads a head twice: the edge weighs sqrt(‖·W_gate‖² + ‖·W_up‖²) and keeps both norms as ``v_gate``
and ``v_up``; an edge into a head has one reader, and carries 0 for both so that every block shares its parts.

Pairs: MLP(l1) → head(l2) for l2 > l1; head(l1) → MLP(l2) for l2 ≥ l1 in sequential blocks (the MLP reads the
stream after its own block's attention), l2 > l1 with GPT-NeoX's parallel residual. Heads are not joined to heads.
The products stay factored (d_mlp × d_model times d_model × d_head, never a d_model × d_model matrix), a chunk of
source rows at a time, with the top-k per (source unit, downstream layer) of ``virtual``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from neuronmap.loaders.records import LayerRecord, ModelGraph, ModelMeta
from neuronmap.loaders.transformers.errors import TransformerOptionError
from neuronmap.loaders.transformers.families import AttentionBlock, TransformerWeights
from neuronmap.loaders.transformers.virtual import (
    CHUNK_BYTES,
    PairEdges,
    edge_block,
    keep_edges,
    pair_edges,
    readers,
    writer_rows,
)

# One chunk's weights (rows × n_dst) and, for a gated reader, its parts by name, starting at source row ``start``.
Chunk = tuple[int, torch.Tensor, dict[str, torch.Tensor]]


def attention_layer(block: int) -> int:
    """The layer index of block ``block``'s heads in a graph with heads (its MLP is the next one)."""
    return 2 * block


def mlp_layer(block: int) -> int:
    return 2 * block + 1


def head_writer_rows(attn: AttentionBlock, centre: bool) -> torch.Tensor:
    """W_O (n_head · d_head × d_model), each row centred over d_model for a LayerNorm reader."""
    return attn.w_o - attn.w_o.mean(dim=1, keepdim=True) if centre else attn.w_o


def value_reader(attn: AttentionBlock) -> torch.Tensor:
    """γ_attn ⊙ W_V (d_model × n_kv_head · d_head)."""
    return attn.gamma[:, None] * attn.w_v


def _collect(
    chunks: Iterator[Chunk], *, top_k: int, min_weight: float, src: int, dst: int, n: tuple[int, int]
) -> PairEdges:
    """The kept edges of one layer pair from its chunks of source rows (top-k per row, then |w| ≥ min_weight)."""
    rows, cols, weights = [], [], []
    parts: dict[str, list[torch.Tensor]] = {}
    for start, weight, values in chunks:
        r, c = keep_edges(weight, top_k, min_weight)
        rows.append(r + start)
        cols.append(c)
        weights.append(weight[r, c])
        for name, value in values.items():
            parts.setdefault(name, []).append(value[r, c])
    return PairEdges(
        src=src,
        dst=dst,
        rows=torch.cat(rows).numpy().astype(np.int64),
        cols=torch.cat(cols).numpy().astype(np.int64),
        weight=torch.cat(weights).numpy(),
        parts={name: torch.cat(chunks).numpy() for name, chunks in parts.items()},
        n_candidates=n[0] * n[1],
    )


def mlp_to_heads(
    src: torch.Tensor,
    attn: AttentionBlock,
    *,
    top_k: int,
    min_weight: float,
    src_layer: int = 0,
    dst_layer: int = 0,
    zero_parts: tuple[str, ...] = (),
    chunk_bytes: int = CHUNK_BYTES,
) -> PairEdges:
    """MLP neurons (writer rows, n_src × d_model) → the heads of ``attn``: the norm of each head's value vector.

    ``zero_parts`` names parts that every edge carries as 0 (a gated model's ``v_gate`` and ``v_up``).
    """
    reader = value_reader(attn)
    kv_of_head = torch.arange(attn.n_head) // attn.group
    n_src = int(src.shape[0])
    chunk = max(1, chunk_bytes // (8 * int(reader.shape[1])))

    def chunks() -> Iterator[Chunk]:
        for start in range(0, n_src, chunk):
            values = (src[start : start + chunk] @ reader).view(-1, attn.n_kv_head, attn.d_head)
            weight = torch.linalg.vector_norm(values, dim=2)[:, kv_of_head]  # (rows, n_head)
            yield start, weight, {name: torch.zeros_like(weight) for name in zero_parts}

    return _collect(chunks(), top_k=top_k, min_weight=min_weight, src=src_layer, dst=dst_layer, n=(n_src, attn.n_head))


def heads_to_mlp(
    src: torch.Tensor,
    n_head: int,
    dst_readers: dict[str, torch.Tensor],
    *,
    top_k: int,
    min_weight: float,
    src_layer: int = 0,
    dst_layer: int = 0,
    chunk_bytes: int = CHUNK_BYTES,
) -> PairEdges:
    """Heads (their W_O rows, n_head · d_head × d_model) → MLP neurons (γ ⊙ W_in per reader, d_model × d_mlp each).

    The edge is the norm over d_head of head h's rows times the reader's column; over both readers of a gated MLP.
    """
    d_head = int(src.shape[0]) // n_head
    n_dst = int(next(iter(dst_readers.values())).shape[1])
    gated = len(dst_readers) > 1
    chunk = max(1, chunk_bytes // (4 * d_head * n_dst * (len(dst_readers) + 1)))

    def chunks() -> Iterator[Chunk]:
        for start in range(0, n_head, chunk):
            rows = src[start * d_head : (start + chunk) * d_head]
            norms = {
                name: torch.linalg.vector_norm((rows @ reader).view(-1, d_head, n_dst), dim=1)
                for name, reader in dst_readers.items()
            }
            if gated:
                yield start, torch.hypot(*norms.values()), {f"v_{name}": value for name, value in norms.items()}
            else:
                (weight,) = norms.values()
                yield start, weight, {}

    return _collect(chunks(), top_k=top_k, min_weight=min_weight, src=src_layer, dst=dst_layer, n=(n_head, n_dst))


def head_edges(
    weights: TransformerWeights, *, top_k: int = 32, min_weight: float = 0.0, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[PairEdges]:
    """Every layer pair of the graph with heads, in order of (source layer, target layer), one pair at a time.

    ``src``/``dst`` of each ``PairEdges`` are layer indices (``attention_layer``, ``mlp_layer``), not blocks.
    """
    if len(weights.attention) != len(weights.blocks):
        raise TransformerOptionError("heads=True needs the attention weights: read them with attention=True.")
    centre = weights.norm == "layernorm"
    zero_parts = tuple(f"v_{name}" for name, _ in weights.family.readers) if weights.gated else ()
    first_reader = 1 if weights.parallel_residual else 0  # a parallel block's MLP does not read its own heads
    n = len(weights.blocks)
    for l1, (attn, block) in enumerate(zip(weights.attention, weights.blocks)):
        heads = head_writer_rows(attn, centre)
        for l2 in range(l1 + first_reader, n):
            yield heads_to_mlp(
                heads,
                attn.n_head,
                readers(weights.blocks[l2]),
                src_layer=attention_layer(l1),
                dst_layer=mlp_layer(l2),
                top_k=top_k,
                min_weight=min_weight,
                chunk_bytes=chunk_bytes,
            )
        neurons = writer_rows(block, centre)
        for l2 in range(l1 + 1, n):
            yield mlp_to_heads(
                neurons,
                weights.attention[l2],
                src_layer=mlp_layer(l1),
                dst_layer=attention_layer(l2),
                zero_parts=zero_parts,
                top_k=top_k,
                min_weight=min_weight,
                chunk_bytes=chunk_bytes,
            )
            yield pair_edges(
                neurons,
                readers(weights.blocks[l2]),
                src_block=mlp_layer(l1),
                dst_block=mlp_layer(l2),
                top_k=top_k,
                min_weight=min_weight,
                chunk_bytes=chunk_bytes,
            )


def head_layers(weights: TransformerWeights) -> list[LayerRecord]:
    """Per block, its heads (role ``attention``, named after the attention module) and then its MLP neurons."""
    layers = []
    for attn, block in zip(weights.attention, weights.blocks):
        layers.append(
            LayerRecord(
                index=attention_layer(attn.index),
                name=attn.path,
                kind="attention",
                role="attention",
                size=attn.n_head,
                shape=[attn.n_head],
            )
        )
        layers.append(
            LayerRecord(
                index=mlp_layer(block.index),
                name=block.path,
                kind="linear",
                role="hidden",
                size=block.d_mlp,
                shape=[block.d_mlp],
            )
        )
    return layers


def heads_graph(
    weights: TransformerWeights,
    *,
    top_k: int = 32,
    min_weight: float = 0.0,
    meta: ModelMeta | None = None,
    sparse: bool | None = None,
) -> ModelGraph:
    """The virtual graph with heads as units: MLP → MLP edges as ``virtual_graph`` gives them, plus MLP → head and
    head → MLP. ``sparse`` as ``virtual_graph``; heads carry no bias."""
    layers = head_layers(weights)
    blocks = [
        edge_block(edges, (layers[edges.src].size, layers[edges.dst].size), sparse)
        for edges in head_edges(weights, top_k=top_k, min_weight=min_weight)
    ]
    biases: list[np.ndarray | None] = []
    for block in weights.blocks:
        biases += [None, None if block.bias is None else block.bias.double().numpy()]
    return ModelGraph(layers=layers, blocks=blocks, biases=biases, meta=meta or ModelMeta())
