"""What crosses from the loaders into the store: layers, neurons and weighted edges as arrays.

A ``ModelGraph`` is pure data (numpy), built without any database, so the clustering code can use it directly
and ``ingest`` can write it in batches. Neurons are numbered densely in layer order (the *ordinal*), so an edge
list indexes a tensor without a lookup.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from neuronmap.options import KernelNorm

LayerKind = Literal["input", "linear", "conv", "residual", "attention"]
# "residual": a transformer's residual dims; "attention": its attention heads, one unit per head (methods.md §10)
Role = Literal["input", "hidden", "output", "residual", "attention"]


class LayerRecord(BaseModel):
    """One layer of neurons: a Linear's output units, a Conv's output channels, or the network's input."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0)  # topological order; 0 is the input
    name: str  # module path ("features.0"), or "input"
    kind: LayerKind
    role: Role
    size: int = Field(ge=1)  # number of neurons
    shape: list[int]  # the activation's shape without the batch dim, e.g. [64, 14, 14] or [256]


class ModelMeta(BaseModel):
    """Where a graph came from and how it was built; stored on the (:Model) node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    arch: str = ""  # "examples.nets:mlp_4x256", "torch.export", "nn.Module:MyNet"
    source: str = ""  # the file it was read from, or a description
    sha256: str = ""  # of the source file; "" for in-process modules
    kernel_norm: KernelNorm = "entry_l1"
    fold_batchnorm: bool = True
    # Transformers only (loaders/transformers, methods.md §10). None elsewhere, and the store sets no property for
    # a None, so other models' (:Model) nodes are unchanged.
    family: str | None = None  # "gpt2", "gpt_neox" or "llama"
    config: str | None = None  # the model's config as JSON text
    dtype: str | None = None  # the stored dtype of the weights; the graph is computed in float32 anyway
    weight_files: list[str] | None = None  # the safetensors files read, by name
    weight_sha256: list[str] | None = None  # the SHA-256 of each, in the same order
    graph: str | None = None  # "virtual" or "mlp-in"
    top_k: int | None = None  # edges kept per (source neuron, downstream block); 0 keeps all
    min_weight: float | None = None  # edges with |w| below this were dropped
    fold_norm: bool | None = None  # mlp-in: the norm's scale γ folded into W_in
    heads: bool | None = None  # virtual: attention heads are units of the graph (methods.md §10.6)


# Blocks at least this big and at most this full are kept sparse (CSR) by the transformer loader and by
# BlockGraph.from_edges: a GPT-2-small virtual graph is 66 blocks of 3072 × 3072 with 32 edges a row (1%).
SPARSE_MIN_ENTRIES = 1 << 16
SPARSE_MAX_DENSITY = 1 / 8


def prefer_sparse(n_edges: int, shape: tuple[int, int]) -> bool:
    """Whether a block of ``shape`` with ``n_edges`` edges is better held sparse than dense."""
    entries = int(shape[0]) * int(shape[1])
    return entries >= SPARSE_MIN_ENTRIES and n_edges <= SPARSE_MAX_DENSITY * entries


@dataclass
class EdgeBlock:
    """All edges from one layer to another: weight[i, j] is the edge src unit i → dst unit j.

    ``weight`` is a dense matrix, zeros being absent edges, or a scipy CSR matrix for sparse blocks (a
    transformer's top-k edges, methods.md §10); ``EdgeBlock.sparse`` builds one from coordinates. Linear layers
    give signed weights (|w| is what clustering uses); conv channel edges and conv→linear edges through Flatten
    give non-negative norms.
    """

    src_layer: int
    dst_layer: int
    weight: np.ndarray | sp.csr_matrix  # (n_src, n_dst), float64
    # Named components of each edge, aligned with ``weight`` (same shape; read where weight is nonzero; a sparse
    # block's parts share its CSR structure), e.g. a gated MLP's "v_gate" and "v_up" (methods.md §10). Empty for
    # every other model.
    parts: dict[str, np.ndarray | sp.csr_matrix] = field(default_factory=dict)

    @classmethod
    def sparse(
        cls,
        src_layer: int,
        dst_layer: int,
        shape: tuple[int, int],
        rows: np.ndarray,
        cols: np.ndarray,
        weight: np.ndarray,
        parts: dict[str, np.ndarray] | None = None,
    ) -> EdgeBlock:
        """A CSR block from coordinate arrays (no repeats), rows sorted and columns sorted within a row; zeros go."""
        weight = np.asarray(weight, dtype=np.float64)
        keep = weight != 0
        rows, cols = np.asarray(rows, dtype=np.int64)[keep], np.asarray(cols, dtype=np.int64)[keep]
        order = np.lexsort((cols, rows))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))]).astype(np.int64)
        indices = cols[order]

        def csr(values: np.ndarray) -> sp.csr_matrix:
            data = np.asarray(values, dtype=np.float64)[keep][order]
            return sp.csr_matrix((data, indices, indptr), shape=shape)

        return cls(src_layer, dst_layer, csr(weight), {name: csr(v) for name, v in (parts or {}).items()})

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.weight)

    def _csr(self) -> Any:
        """The weight as the CSR matrix it is (sparse blocks only)."""
        return self.weight

    @property
    def n_edges(self) -> int:
        if self.is_sparse:
            return int(np.count_nonzero(self.weight.data))
        return int(np.count_nonzero(self.weight))

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """The nonzero edges in row-major order: (rows, cols, w, parts), parts' values aligned with w."""
        if self.is_sparse:
            w = self._csr()
            rows = np.repeat(np.arange(w.shape[0], dtype=np.int64), np.diff(w.indptr))
            keep = w.data != 0
            parts = {name: np.asarray(p.data)[keep] for name, p in self.parts.items()}
            return rows[keep], np.asarray(w.indices, dtype=np.int64)[keep], w.data[keep], parts
        dense = np.asarray(self.weight)
        i, j = np.nonzero(dense)
        return i, j, dense[i, j], {name: np.asarray(p)[i, j] for name, p in self.parts.items()}

    def row_entries(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
        """(source unit, target units, weights, parts) for each source unit with edges, in order."""
        if self.is_sparse:
            w = self._csr()
            for row in np.flatnonzero(np.diff(w.indptr)).tolist():
                lo, hi = int(w.indptr[row]), int(w.indptr[row + 1])
                data = w.data[lo:hi]
                keep = data != 0
                yield (
                    row,
                    w.indices[lo:hi][keep],
                    data[keep],
                    {name: p.data[lo:hi][keep] for name, p in self.parts.items()},
                )
            return
        for i, row in enumerate(np.asarray(self.weight)):
            nonzero = np.flatnonzero(row)
            if nonzero.size:
                yield i, nonzero, row[nonzero], {name: np.asarray(p)[i, nonzero] for name, p in self.parts.items()}

    def sources(self) -> np.ndarray:
        """Indices of the source units that have at least one edge."""
        if self.is_sparse:
            w = self._csr()
            rows = np.repeat(np.arange(w.shape[0], dtype=np.int64), np.diff(w.indptr))
            return np.unique(rows[w.data != 0])
        return np.flatnonzero(np.any(np.asarray(self.weight) != 0, axis=1))


@dataclass
class ModelGraph:
    """A network as neurons and weighted edges, ready for the store or for clustering."""

    layers: list[LayerRecord]
    blocks: list[EdgeBlock]
    biases: list[np.ndarray | None]  # per layer, (size,) after BatchNorm folding; None for the input
    meta: ModelMeta = field(default_factory=ModelMeta)

    def __post_init__(self) -> None:
        sizes = [layer.size for layer in self.layers]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # ordinal of unit 0 per layer
        for block in self.blocks:
            expected = (sizes[block.src_layer], sizes[block.dst_layer])
            if block.weight.shape != expected:
                raise ValueError(
                    f"Edge block {block.src_layer}->{block.dst_layer} has shape {block.weight.shape}, "
                    f"expected {expected}."
                )

    @property
    def n_neurons(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_edges(self) -> int:
        return sum(block.n_edges for block in self.blocks)

    def layer_of_ordinal(self) -> np.ndarray:
        """(n_neurons,) layer index of every neuron, by ordinal."""
        return np.repeat(np.arange(len(self.layers)), [layer.size for layer in self.layers])

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All nonzero edges as (src ordinal, dst ordinal, w) arrays."""
        srcs, dsts, ws = [], [], []
        for block in self.blocks:
            i, j, w, _ = block.entries()
            srcs.append(i + self.offsets[block.src_layer])
            dsts.append(j + self.offsets[block.dst_layer])
            ws.append(w)
        if not srcs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(srcs), np.concatenate(dsts), np.concatenate(ws)

    def adjacency(self, absolute: bool = True) -> sp.csr_matrix:
        """Symmetric (n_neurons, n_neurons) adjacency with |w| (or w), as methods.md §1.1 builds it."""
        src, dst, w = self.edges()
        if absolute:
            w = np.abs(w)
        n = self.n_neurons
        upper = sp.coo_matrix((w, (src, dst)), shape=(n, n))
        return (upper + upper.T).tocsr()

    def iter_blocks_by_source(self) -> Iterator[tuple[EdgeBlock, np.ndarray]]:
        """Each block with the indices of its source units that have at least one edge."""
        for block in self.blocks:
            yield block, block.sources()
