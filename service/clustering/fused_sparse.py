"""All sparse weight blocks of a layered graph as ONE symmetric sparse matrix, so that M x is one product.

A transformer's virtual graph has a block for every pair of blocks (66 for GPT-2 small), each a thin sparse matrix.
Applied block by block, every product pays a slice of the vectors, a copy, and an add into the output, each a
separate pass over (n × b) with its own thread team; measured on 6 GPT-2-sized blocks (15 pairs), those passes took
50 of the 60 s of a clustering and the sparse products 3 s. Here the blocks and their transposes are put into one
CSR matrix A (S·n × S·n, block diagonal over the S samples) once, and ``A @ x`` is a single pass over the edges: on
the CPU scipy's product, split by rows over a few threads (scipy's sparse kernels release the GIL); on a GPU one
cuSPARSE product.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch

from neuronmap.service.clustering.sparse_blocks import SparseStack, _csr, is_sparse_block

ROWS_PER_TASK = 4096  # the smallest row strip given to a thread: below that, the hand-off costs more than it saves


class FusedAdjacency:
    """The symmetric adjacency A of S graphs that share a layer layout, from their sparse (S, n_src, n_dst) blocks.

    Parameters
    ----------
    offsets : sequence of int
        Each layer's first node (layer ``l`` is ``offsets[l]:offsets[l + 1]``), length n_layers + 1.
    blocks : sequence of (src_layer, dst_layer, SparseStack)
        Every stack batched, all with the same S, in the compute dtype.
    threads : int, optional
        CPU threads for a product (None: 1).
    """

    def __init__(
        self, offsets: Sequence[int], blocks: Sequence[tuple[int, int, SparseStack]], threads: int | None = None
    ) -> None:
        first = blocks[0][2]
        self.S, self.n = first.n_samples, int(offsets[-1])
        self.device, self.dtype = first.device, first.dtype
        self.threads = max(1, threads or 1)
        rows, cols, values = [], [], []
        for src, dst, w in blocks:
            base = w.sample * self.n
            r, c = base + offsets[src] + w.rows, base + offsets[dst] + w.cols
            rows += [r, c]  # the block and its transpose
            cols += [c, r]
            values += [w.values, w.values]
        size = self.S * self.n
        r, c, v = torch.cat(rows), torch.cat(cols), torch.cat(values)
        if self.device.type == "cpu":
            # Blocks never overlap, so no entry repeats: scipy's COO → CSR conversion only sorts.
            self.matrix: sp.csr_matrix | torch.Tensor = sp.csr_matrix(
                (v.numpy(), (r.numpy(), c.numpy())), shape=(size, size)
            )
            self._strips = self._row_strips()
            # One pool for the problem's life (its idle threads end with it): a pool per product cost more
            # in thread starts than the products' own hand-offs.
            self._pool = ThreadPoolExecutor(len(self._strips)) if len(self._strips) > 1 else None
        else:
            order = torch.argsort(r * size + c)
            self.matrix = _csr(r[order], c[order], v[order], (size, size))
            self._strips = []
            self._pool = None

    @classmethod
    def from_layered(
        cls, offsets: Sequence[int], blocks: Sequence[tuple[int, int, torch.Tensor]], threads: int | None
    ) -> FusedAdjacency | None:
        """The fused matrix when every block is a sparse stack, else None (dense blocks keep their GEMMs)."""
        stacks = [(s, d, w) for s, d, w in blocks if is_sparse_block(w)]
        if not blocks or len(stacks) < len(blocks):
            return None
        return cls(offsets, stacks, threads)

    def _row_strips(self) -> list[sp.csr_matrix]:
        """The matrix cut into one strip of rows per thread, with about the same number of entries each."""
        matrix = self.matrix
        assert isinstance(matrix, sp.csr_matrix)
        n_strips = min(self.threads, max(1, matrix.shape[0] // ROWS_PER_TASK))
        if n_strips <= 1:
            return [matrix]
        targets = np.linspace(0, matrix.nnz, n_strips + 1)[1:-1]
        cuts = [0, *np.searchsorted(matrix.indptr, targets).tolist(), matrix.shape[0]]
        return [matrix[a:b] for a, b in zip(cuts[:-1], cuts[1:]) if b > a]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """A x for vectors x of shape (S, n, b); returns (S, n, b) in x's dtype."""
        b = x.shape[-1]
        flat = x.reshape(self.S * self.n, b).to(self.dtype)
        if isinstance(self.matrix, torch.Tensor):
            return (self.matrix @ flat).reshape(self.S, self.n, b).to(x.dtype)
        dense = np.ascontiguousarray(flat.numpy())
        if self._pool is None:
            out = self.matrix @ dense
        else:
            out = np.concatenate(list(self._pool.map(lambda strip: strip @ dense, self._strips)))
        return torch.from_numpy(np.asarray(out)).reshape(self.S, self.n, b).to(x.dtype)
