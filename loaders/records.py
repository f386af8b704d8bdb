"""What crosses from the loaders into the store: layers, neurons and weighted edges as arrays.

A ``ModelGraph`` is pure data (numpy), built without any database, so the clustering code can use it directly
and ``ingest`` can write it in batches. Neurons are numbered densely in layer order (the *ordinal*), so an edge
list indexes a tensor without a lookup.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from neuronmap.options import KernelNorm

LayerKind = Literal["input", "linear", "conv", "residual"]
Role = Literal["input", "hidden", "output", "residual"]  # "residual": a transformer's residual dims (methods.md §10)


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


@dataclass
class EdgeBlock:
    """All edges from one layer to another as a dense matrix: weight[i, j] is the edge src unit i → dst unit j.

    Zeros are absent edges. Linear layers give signed weights (|w| is what clustering uses); conv channel edges and
    conv→linear edges through Flatten give non-negative norms.
    """

    src_layer: int
    dst_layer: int
    weight: np.ndarray  # (n_src, n_dst), float64
    # Named components of each edge, aligned with ``weight`` (same shape; read where weight is nonzero), e.g. a
    # gated MLP's "v_gate" and "v_up" (methods.md §10). Empty for every other model.
    parts: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_edges(self) -> int:
        return int(np.count_nonzero(self.weight))


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
            i, j = np.nonzero(block.weight)
            srcs.append(i + self.offsets[block.src_layer])
            dsts.append(j + self.offsets[block.dst_layer])
            ws.append(block.weight[i, j])
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
            yield block, np.flatnonzero(np.any(block.weight != 0, axis=1))
