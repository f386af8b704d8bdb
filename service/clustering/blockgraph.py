"""A layered weight graph held as dense non-negative blocks, one per pair of connected layers.

Feed-forward graphs are unions of dense bipartite blocks, so a block matmul applies the adjacency without the
index arrays a CSR matrix would carry (methods.md §9.1). The adjacency is

    A = [[0, B01, B02 …], [B01ᵀ, 0, B12 …], …]

with one block ``B_ij`` per stored ``(src_layer, dst_layer, weight)``. A block with ``src == dst`` (edges inside a
layer) contributes ``W + Wᵀ``, as ``ModelGraph.adjacency`` builds it. A large, mostly empty block (a transformer's
top-k edges, methods.md §10.4) is held as a ``SparseStack`` (CSR) instead of a dense tensor; every method here, the
operator, the n-cut and the nulls take either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch

from neuronmap.loaders.records import prefer_sparse
from neuronmap.service.clustering.sparse_blocks import SparseStack, is_sparse_block
from neuronmap.service.errors import ClusteringInputError

if TYPE_CHECKING:
    from neuronmap.loaders.records import ModelGraph

Block = tuple[int, int, torch.Tensor]  # the weight may also be a SparseStack, which answers the same calls


class BlockGraph:
    """Neurons in ordinal order, grouped by layer, with the |weight| blocks between layers.

    Parameters
    ----------
    sizes : sequence of int
        Neurons per layer, in ordinal order; layer ``l`` holds ordinals ``offsets[l] .. offsets[l+1]-1``.
    blocks : sequence of (int, int, torch.Tensor)
        ``(src_layer, dst_layer, weight)`` with ``weight`` of shape ``(sizes[src], sizes[dst])``, finite and
        non-negative. Several blocks may join the same pair of layers (they add up); residual edges
        (``dst > src + 1``) and within-layer blocks (``src == dst``) are allowed.
    validate : bool, default True
        Check shapes, finiteness and signs. Internal callers that built the blocks themselves skip it.
    """

    def __init__(self, sizes: Sequence[int], blocks: Sequence[Block], *, validate: bool = True) -> None:
        self.sizes = [int(s) for s in sizes]
        self.blocks: list[Block] = [(int(s), int(d), w) for s, d, w in blocks]
        self.offsets = [0]
        for size in self.sizes:
            self.offsets.append(self.offsets[-1] + size)
        if validate:
            self._validate()

    def _validate(self) -> None:
        if any(size < 0 for size in self.sizes):
            raise ClusteringInputError(f"Layer sizes must be non-negative, got {self.sizes}.")
        devices = {w.device for _, _, w in self.blocks}
        if len(devices) > 1:
            raise ClusteringInputError(f"All blocks must live on one device, got {sorted(map(str, devices))}.")
        for src, dst, w in self.blocks:
            if not (0 <= src < len(self.sizes) and 0 <= dst < len(self.sizes)):
                raise ClusteringInputError(f"Block {src}->{dst} names a layer outside 0..{len(self.sizes) - 1}.")
            if tuple(w.shape) != (self.sizes[src], self.sizes[dst]):
                raise ClusteringInputError(
                    f"Block {src}->{dst} has shape {tuple(w.shape)}, expected "
                    f"{(self.sizes[src], self.sizes[dst])} from the layer sizes."
                )
            if not w.is_floating_point():
                raise ClusteringInputError(f"Block {src}->{dst} holds {w.dtype}; weights must be floating point.")
            if is_sparse_block(w):
                w = w.values
            if w.numel():
                if not bool(torch.isfinite(w).all()):
                    bad = int((~torch.isfinite(w)).sum())
                    raise ClusteringInputError(
                        f"Block {src}->{dst} has {bad:,} non-finite weights (NaN or inf) "
                        f"out of {w.numel():,}. Clean the weights before clustering."
                    )
                if bool((w < 0).any()):
                    raise ClusteringInputError(
                        f"Block {src}->{dst} has negative weights; a BlockGraph holds |W|. "
                        "Use BlockGraph.from_model_graph or from_edges, which take |w|."
                    )

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_model_graph(
        cls, graph: ModelGraph, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
    ) -> BlockGraph:
        """|W| of every edge block of a loaded model (methods.md §1.1: absolute values, no biases)."""
        sizes = [layer.size for layer in graph.layers]
        blocks = [
            (
                b.src_layer,
                b.dst_layer,
                SparseStack.from_scipy(abs(b.weight), dtype=dtype).to(device).as_block()
                if b.is_sparse
                else torch.as_tensor(np.abs(b.weight), dtype=dtype, device=device),
            )
            for b in graph.blocks
        ]
        return cls(sizes, blocks)

    @classmethod
    def from_edges(
        cls,
        sizes: Sequence[int],
        src_ordinals: np.ndarray | torch.Tensor,
        dst_ordinals: np.ndarray | torch.Tensor,
        weights: np.ndarray | torch.Tensor,
        *,
        absolute: bool = True,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        sparse: bool | None = None,
    ) -> BlockGraph:
        """Build the blocks from an edge list, as the store's pull returns it.

        Parameters
        ----------
        sizes : sequence of int
            Neurons per layer in ordinal order.
        src_ordinals, dst_ordinals : array of shape (n_edges,)
            Global ordinals of the two endpoints; the layer of each is read off ``sizes``.
        weights : array of shape (n_edges,)
            Edge weights; ``absolute=True`` takes ``|w|`` (signed Linear weights), otherwise they must be
            non-negative. Repeated edges add up.
        sparse : bool, optional
            Hold every block as a ``SparseStack`` (True) or dense (False); by default sparse where a block has at
            least 65,536 entries and is at most 1/8 full (``records.prefer_sparse``), such as a transformer's
            top-k blocks, so that they are never densified.

        Notes
        -----
        An edge whose source lies in a later layer than its target is stored in the block of the reversed pair;
        the adjacency is symmetric, so this changes nothing.
        """
        src = torch.as_tensor(np.asarray(src_ordinals) if not torch.is_tensor(src_ordinals) else src_ordinals)
        dst = torch.as_tensor(np.asarray(dst_ordinals) if not torch.is_tensor(dst_ordinals) else dst_ordinals)
        w = torch.as_tensor(np.asarray(weights) if not torch.is_tensor(weights) else weights)
        src, dst = src.to("cpu", torch.int64).reshape(-1), dst.to("cpu", torch.int64).reshape(-1)
        w = w.to("cpu", torch.float64).reshape(-1)
        if not (src.numel() == dst.numel() == w.numel()):
            raise ClusteringInputError(
                f"Edge arrays differ in length: {src.numel():,} sources, "
                f"{dst.numel():,} targets, {w.numel():,} weights."
            )
        sizes = [int(s) for s in sizes]
        offsets = torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.int64)
        n = int(offsets[-1])
        for name, ords in (("source", src), ("target", dst)):
            if ords.numel() and (int(ords.min()) < 0 or int(ords.max()) >= n):
                raise ClusteringInputError(
                    f"An edge {name} ordinal lies outside 0..{n - 1} "
                    f"(min {int(ords.min())}, max {int(ords.max())}); check the layer sizes."
                )
        if not bool(torch.isfinite(w).all()):
            raise ClusteringInputError(f"{int((~torch.isfinite(w)).sum()):,} edge weights are not finite.")
        if absolute:
            w = w.abs()
        elif bool((w < 0).any()):
            raise ClusteringInputError("Negative edge weights with absolute=False; pass absolute=True to use |w|.")
        src_layer = torch.searchsorted(offsets, src, right=True) - 1
        dst_layer = torch.searchsorted(offsets, dst, right=True) - 1
        swap = src_layer > dst_layer
        src, dst = torch.where(swap, dst, src), torch.where(swap, src, dst)
        src_layer, dst_layer = torch.where(swap, dst_layer, src_layer), torch.where(swap, src_layer, dst_layer)
        n_layers = len(sizes)
        pair = src_layer * n_layers + dst_layer
        # One sort by layer pair, then a slice per pair: a mask per pair was a pass over all edges for each of a
        # GPT-2-small graph's 66 pairs.
        order = torch.argsort(pair, stable=True)
        src, dst, w, pair = src[order], dst[order], w[order], pair[order]
        keys, counts = torch.unique_consecutive(pair, return_counts=True)
        blocks: list[Block] = []
        start = 0
        for key, count in zip(keys.tolist(), counts.tolist()):
            s, d = divmod(int(key), n_layers)
            sel = slice(start, start + count)
            start += count
            rows, cols = src[sel] - offsets[s], dst[sel] - offsets[d]
            if sparse or (sparse is None and prefer_sparse(count, (sizes[s], sizes[d]))):
                block = SparseStack.from_coo(rows.numpy(), cols.numpy(), w[sel].numpy(), (sizes[s], sizes[d]))
                blocks.append((s, d, block.to(device=device, dtype=dtype).as_block()))
                continue
            weight = torch.zeros(sizes[s], sizes[d], dtype=torch.float64)
            weight.index_put_((rows, cols), w[sel], accumulate=True)
            blocks.append((s, d, weight.to(device=device, dtype=dtype)))
        return cls(sizes, blocks)

    # ------------------------------------------------------------------ shape and placement

    @property
    def n_nodes(self) -> int:
        return self.offsets[-1]

    @property
    def n_layers(self) -> int:
        return len(self.sizes)

    @property
    def n_edges(self) -> int:
        """Number of stored non-zero weights (an edge inside a layer counts once)."""
        return sum(int(torch.count_nonzero(w.values if is_sparse_block(w) else w)) for _, _, w in self.blocks)

    @property
    def device(self) -> torch.device:
        return self.blocks[0][2].device if self.blocks else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return self.blocks[0][2].dtype if self.blocks else torch.float64

    def layer_slice(self, layer: int) -> slice:
        return slice(self.offsets[layer], self.offsets[layer + 1])

    def layer_of_node(self) -> torch.Tensor:
        """(n_nodes,) layer index of every neuron, by ordinal."""
        return torch.repeat_interleave(torch.arange(self.n_layers), torch.tensor(self.sizes, dtype=torch.int64))

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> BlockGraph:
        """A copy with every block moved (and cast); the same object when nothing changes."""
        blocks = [(s, d, w.to(device=device, dtype=dtype)) for s, d, w in self.blocks]
        if all(a[2] is b[2] for a, b in zip(blocks, self.blocks)):
            return self
        return BlockGraph(self.sizes, blocks, validate=False)

    def __repr__(self) -> str:
        pairs = ", ".join(f"{s}->{d}" for s, d, _ in self.blocks)
        return f"BlockGraph(sizes={self.sizes}, blocks=[{pairs}], dtype={self.dtype}, device={self.device})"

    # ------------------------------------------------------------------ linear algebra

    def degrees(self) -> torch.Tensor:
        """(n_nodes,) weighted degree d_i = Σ_j A_ij."""
        deg = torch.zeros(self.n_nodes, dtype=self.dtype, device=self.device)
        for src, dst, w in self.blocks:
            deg[self.layer_slice(src)] += w.sum(1)
            deg[self.layer_slice(dst)] += w.sum(0)
        return deg

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """A @ x for x of shape (n_nodes,) or (n_nodes, m), one block matmul per stored block."""
        if x.shape[0] != self.n_nodes:
            raise ClusteringInputError(f"matvec needs {self.n_nodes} rows, got shape {tuple(x.shape)}.")
        vec = x.dim() == 1
        xm = x.unsqueeze(1) if vec else x
        y = torch.zeros_like(xm, dtype=torch.promote_types(xm.dtype, self.dtype))
        for src, dst, w in self.blocks:
            s, d = self.layer_slice(src), self.layer_slice(dst)
            w = w.to(y.dtype)
            y[s] += w @ xm[d].to(y.dtype)
            y[d] += w.T @ xm[s].to(y.dtype)
        return y.squeeze(1) if vec else y

    def to_dense(self) -> torch.Tensor:
        """(n_nodes, n_nodes) symmetric dense adjacency."""
        a = torch.zeros(self.n_nodes, self.n_nodes, dtype=self.dtype, device=self.device)
        for src, dst, w in self.blocks:
            s, d = self.layer_slice(src), self.layer_slice(dst)
            w = w.to_dense() if is_sparse_block(w) else w
            a[s, d] += w
            a[d, s] += w.T
        return a

    def _coo(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows, cols, vals = [], [], []
        for src, dst, w in self.blocks:
            if is_sparse_block(w):
                keep = w.values != 0
                i, j, v = w.rows[keep], w.cols[keep], w.values[keep]
            else:
                i, j = torch.nonzero(w, as_tuple=True)
                v = w[i, j]
            i, j = i + self.offsets[src], j + self.offsets[dst]
            rows += [i, j]
            cols += [j, i]
            vals += [v, v]
        if not rows:
            empty = torch.zeros(0, dtype=torch.int64, device=self.device)
            return empty, empty, torch.zeros(0, dtype=self.dtype, device=self.device)
        return torch.cat(rows), torch.cat(cols), torch.cat(vals)

    def to_sparse(self) -> torch.Tensor:
        """(n_nodes, n_nodes) symmetric adjacency as a coalesced torch sparse COO tensor."""
        i, j, v = self._coo()
        shape = (self.n_nodes, self.n_nodes)
        return torch.sparse_coo_tensor(torch.stack([i, j]), v, shape, check_invariants=False).coalesce()

    def to_scipy(self) -> sp.csr_matrix:
        """(n_nodes, n_nodes) symmetric adjacency as a scipy CSR matrix (for sklearn baselines)."""
        i, j, v = self._coo()
        return sp.csr_matrix((v.cpu().numpy(), (i.cpu().numpy(), j.cpu().numpy())), shape=(self.n_nodes,) * 2)

    # ------------------------------------------------------------------ structure

    def drop_isolated(self) -> tuple[BlockGraph, torch.Tensor]:
        """Remove every neuron of degree 0 (methods.md §1.1).

        Returns
        -------
        graph : BlockGraph
            The reduced graph; a layer that loses every neuron stays, with size 0.
        keep : torch.Tensor of shape (n_nodes,), bool
            True for the neurons kept, in ordinal order; ``labels_full[keep] = labels_reduced``.
        """
        keep = self.degrees() > 0
        if bool(keep.all()):
            return self, keep
        keeps = [keep[self.layer_slice(layer)] for layer in range(self.n_layers)]
        sizes = [int(k.sum()) for k in keeps]
        blocks = [
            (s, d, w.select(keeps[s], keeps[d]).as_block() if is_sparse_block(w) else w[keeps[s]][:, keeps[d]])
            for s, d, w in self.blocks
        ]
        return BlockGraph(sizes, blocks, validate=False), keep

    def layer_sides(self) -> list[int] | None:
        """A 2-colouring of the layers (0/1 per layer) under which every block joins the two sides, or None.

        A feed-forward net with consecutive-layer blocks is bipartite (even against odd layers); a residual block
        spanning an even number of layers, or a within-layer block, breaks this. Layers joined by no block get
        side 0.
        """
        side = [-1] * self.n_layers  # -1: not reached yet
        neighbours: list[list[int]] = [[] for _ in self.sizes]
        for src, dst, w in self.blocks:
            if w.numel() == 0:
                continue
            if src == dst:
                return None
            neighbours[src].append(dst)
            neighbours[dst].append(src)
        for start in range(self.n_layers):
            if side[start] >= 0:
                continue
            side[start] = 0
            stack = [start]
            while stack:
                layer = stack.pop()
                for other in neighbours[layer]:
                    if side[other] < 0:
                        side[other] = 1 - side[layer]
                        stack.append(other)
                    elif side[other] == side[layer]:
                        return None
        return side
