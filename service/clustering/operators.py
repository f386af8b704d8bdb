"""The eigenproblems of spectral clustering (methods.md §3.1): M = D^-½AD^-½ with the products the eigensolvers use.

:class:`LayeredProblem` holds S graphs that share one layer layout as stacks of weight blocks, with the bipartite
(Gram) form BᵀB when the layers 2-colour; :class:`MatrixProblem` holds one graph as a torch adjacency. Both satisfy
:class:`EigenProblem`, what :mod:`.eigensolvers` and :mod:`.spectral` need of a problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from neuronmap.service.clustering.fused_sparse import FusedAdjacency
from neuronmap.service.clustering.sparse_blocks import is_sparse_block
from neuronmap.service.clustering.threads import intra_op_threads

ISOLATED_SHIFT = -2.0  # masked (isolated) nodes of a batch get this eigenvalue: below M's spectrum [-1, 1]


def _dense(w: torch.Tensor) -> torch.Tensor:
    return w.to_dense() if is_sparse_block(w) else w


def _transposed_copy(w: torch.Tensor) -> torch.Tensor:
    """A contiguous (S, b, a) copy of w (S, a, b)ᵀ, by strips of rows (the whole transpose at once runs
    single-threaded and cache-unfriendly)."""
    if is_sparse_block(w):
        return w.mT.as_block()  # a SparseStack keeps the CSR of its transpose
    out = w.new_empty(w.shape[0], w.shape[2], w.shape[1])
    for lo in range(0, w.shape[1], 256):
        out[:, :, lo : lo + 256].copy_(w[:, lo : lo + 256].mT)
    return out


class EigenProblem(Protocol):
    """S graphs' M = D^-½AD^-½, batched: what the eigensolvers and the pipeline need of a problem."""

    S: int  # graphs in the batch
    n: int  # neurons per graph (isolated ones included, masked)
    device: torch.device
    dtype: torch.dtype  # of the operator products
    threads: int | None  # intra-op threads for the big products (threads.cpu_thread_budget)
    valid: torch.Tensor  # (S, n) bool: neurons with a non-zero degree
    sqrt_deg: torch.Tensor  # (S, n) float64, √d: the top eigenvector of M
    dinv: torch.Tensor  # (S, n) float64, D^-½ (0 on isolated neurons)

    def gram_form(self, n_eig: int) -> GramProblem | None:
        """The problem's bipartite form when it gives the top ``n_eig`` pairs, else None."""
        ...

    def m_apply(self, x: torch.Tensor) -> torch.Tensor:
        """M x for a block of vectors (S, n, b)."""
        ...

    def m_dense(self) -> torch.Tensor:
        """M as a dense (S, n, n) stack."""
        ...

    def prepare_products(self) -> None:
        """Get ready for many products (a no-op where nothing pays)."""
        ...

    def subset(self, idx: torch.Tensor) -> EigenProblem:
        """The samples ``idx`` of the batch."""
        ...

    def astype(self, dtype: torch.dtype) -> EigenProblem:
        """The same problem with products in ``dtype``."""
        ...

    def n_components(self, s: int) -> int:
        """Connected components of sample ``s`` among its non-isolated neurons."""
        ...


class GramProblem(EigenProblem, Protocol):
    """A bipartite problem solved on the Gram matrix BᵀB of its smaller side (methods.md §3.1)."""

    n_small: int
    small_idx: torch.Tensor  # (n_small,) the smaller side's neurons, in side order

    def gram_apply(self, v: torch.Tensor) -> torch.Tensor:
        """BᵀB v for small-side vectors (S, n_small, b)."""
        ...

    def gram_dense(self) -> torch.Tensor:
        """BᵀB as a dense (S, n_small, n_small) stack."""
        ...

    def lift(self, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Eigenvectors of M, (S, n, k), from Gram eigenvectors v (S, n_small, k) and σ (S, k)."""
        ...

    def subset(self, idx: torch.Tensor) -> GramProblem: ...

    def astype(self, dtype: torch.dtype) -> GramProblem: ...


class LayeredProblem:
    """S graphs sharing one layer layout, with M = D^-½AD^-½ applied through their stacked |W| blocks.

    Isolated (degree-0) neurons are not removed: D^-½ is 0 there and M gets ``ISOLATED_SHIFT`` on their diagonal,
    so their eigenvalues sit below everything wanted, and the embedding is 0 on them (masked in k-means).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        raw: Sequence[tuple[int, int, torch.Tensor]],
        dtype: torch.dtype,
        sides: list[int] | None,
        threads: int | None = None,
    ) -> None:
        self.threads = threads  # intra-op threads for the block products (see threads.cpu_thread_budget)
        self.sizes = list(sizes)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int).tolist()
        self.raw = list(raw)
        self.dtype = dtype
        self.sides = sides
        w0 = self.raw[0][2]
        self.device = w0.device
        self.S = w0.shape[0]
        self.n = self.offsets[-1]
        # The operator keeps the raw |W| blocks (in the compute dtype: a no-op for float32 input) and applies D^-½
        # to the vectors instead: M x = D^-½ A (D^-½ x). Normalising the blocks would cost two passes over every
        # weight, about as much as two operator products; only the dense paths build normalised blocks.
        self.weights = [(src, dst, w.to(dtype)) for src, dst, w in self.raw]
        # Degrees summed in the compute dtype (torch's cascade sums: relative error ~1e-7 in float32), held in float64.
        deg = torch.zeros(self.S, self.n, dtype=torch.float64, device=self.device)
        for src, dst, w in self.weights:
            deg[:, self._sl(src)] += w.sum(2)
            deg[:, self._sl(dst)] += w.sum(1)
        self.valid = deg > 0
        self.sqrt_deg = deg.sqrt()
        self.dinv = torch.where(self.valid, deg.clamp_min(1e-300).rsqrt(), torch.zeros_like(deg))
        self.dinv_c = self.dinv.to(dtype).unsqueeze(-1)  # (S, n, 1)
        self.weights_t: list[torch.Tensor] | None = None  # see prepare_products
        self._fused: FusedAdjacency | None = None  # see _fused_adjacency
        self._fused_tried = False
        self.shift = (~self.valid).to(dtype) * ISOLATED_SHIFT  # (S, n)
        self._setup_gram()

    def _normalised(self) -> list[tuple[int, int, torch.Tensor]]:
        """The blocks of M, D^-½ W D^-½ (for the dense paths)."""
        dinv = self.dinv_c[..., 0]
        return [  # a sparse block is densified here: the dense paths run only on small problems
            (src, dst, (dinv[:, self._sl(src), None] * _dense(w)) * dinv[:, None, self._sl(dst)])
            for src, dst, w in self.weights
        ]

    def _sl(self, layer: int) -> slice:
        return slice(self.offsets[layer], self.offsets[layer + 1])

    def _setup_gram(self) -> None:
        self.gram_side: int | None = None
        if self.sides is None:
            return
        count = [sum(s for s, side in zip(self.sizes, self.sides) if side == c) for c in (0, 1)]
        small = 0 if count[0] <= count[1] else 1
        if count[small] == 0:
            return
        self.gram_side = small
        self.small_layers = [l for l, side in enumerate(self.sides) if side == small]
        self.large_layers = [l for l, side in enumerate(self.sides) if side != small]
        self.side_off: dict[int, int] = {}
        for group in (self.small_layers, self.large_layers):
            pos = 0
            for layer in group:
                self.side_off[layer] = pos
                pos += self.sizes[layer]
        self.n_small, self.n_large = count[small], count[1 - small]
        self.small_idx = torch.cat([torch.arange(self.offsets[l], self.offsets[l + 1]) for l in self.small_layers]).to(
            self.device
        )
        self.large_idx = (
            torch.cat([torch.arange(self.offsets[l], self.offsets[l + 1]) for l in self.large_layers]).to(self.device)
            if self.large_layers
            else torch.zeros(0, dtype=torch.int64, device=self.device)
        )
        self.small_shift = self.shift[:, self.small_idx].unsqueeze(-1)  # (S, n_small, 1)
        self.dinv_small = self.dinv_c[:, self.small_idx]  # (S, n_small, 1), side order
        self.dinv_large = self.dinv_c[:, self.large_idx]  # (S, n_large, 1)
        self.dinv2_large = self.dinv_large**2

    def _side_sl(self, layer: int) -> slice:
        return slice(self.side_off[layer], self.side_off[layer] + self.sizes[layer])

    def prepare_products(self) -> None:
        """Before many operator products on a CPU: keep a contiguous copy of every block's transpose.

        MKL's GEMM against a transposed (column-major) weight block with a thin right-hand side runs at about
        half the speed of the plain one, and the operator needs each block both ways; a copy costs about one
        product. GPUs' GEMMs take either layout at the same speed.
        """
        if self.gram_side is None and self._fused_adjacency() is not None:
            return  # M's products run on the fused matrix, which holds both orientations already
        if self.weights_t is None and self.device.type == "cpu":
            with intra_op_threads(self.threads):
                self.weights_t = [_transposed_copy(w) for _, _, w in self.weights]

    def _pairs(self) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """(src, dst, W, Wᵀ) per block, Wᵀ contiguous after ``prepare_products``."""
        wts = self.weights_t or [w.mT for _, _, w in self.weights]
        return [(src, dst, w, wt) for (src, dst, w), wt in zip(self.weights, wts)]

    # oriented blocks: (small layer, large layer, W oriented (S, n_large_layer, n_small_layer), its transpose)
    def _oriented(self) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
        out = []
        for src, dst, w, wt in self._pairs():
            if src in self.small_layers:
                out.append((src, dst, wt, w))
            else:
                out.append((dst, src, w, wt))
        return out

    def _fused_adjacency(self) -> FusedAdjacency | None:
        """Sparse blocks fused into one matrix (built on the first product), or None for dense blocks."""
        if not self._fused_tried:
            self._fused_tried = True
            self._fused = FusedAdjacency.from_layered(self.offsets, self.weights, self.threads)
        return self._fused

    # --- the full operator M
    def m_apply(self, x: torch.Tensor) -> torch.Tensor:
        fused = self._fused_adjacency()
        if fused is not None:  # one pass over all the edges; the threads go to the sparse product's row strips
            return fused.apply(x * self.dinv_c).mul_(self.dinv_c).addcmul_(x, self.shift.unsqueeze(-1))
        with intra_op_threads(self.threads):
            xs = x * self.dinv_c
            y = torch.zeros_like(x)
            for src, dst, w, wt in self._pairs():
                s, d = self._sl(src), self._sl(dst)
                y[:, s].baddbmm_(w, xs[:, d])
                y[:, d].baddbmm_(wt, xs[:, s])
            return y.mul_(self.dinv_c).addcmul_(x, self.shift.unsqueeze(-1))

    def m_dense(self) -> torch.Tensor:
        with intra_op_threads(self.threads):
            m = torch.diag_embed(self.shift)
            for src, dst, w in self._normalised():
                s, d = self._sl(src), self._sl(dst)
                m[:, s, d] += w
                m[:, d, s] += w.mT
            return m

    # --- the Gram operator BᵀB on the small side, B = D_large^-½ W D_small^-½
    def gram_form(self, n_eig: int) -> LayeredProblem | None:
        return self if self.gram_ok(n_eig) else None

    def gram_ok(self, n_eig: int) -> bool:
        return self.gram_side is not None and int(self.valid[:, self.small_idx].sum(1).min()) >= n_eig

    def _w_apply(self, v: torch.Tensor) -> torch.Tensor:
        """W v: small-side vectors (S, n_small, b) → large-side vectors (S, n_large, b), raw weights."""
        y = v.new_zeros(v.shape[0], self.n_large, v.shape[2])
        for small, large, w, _ in self._oriented():
            y[:, self._side_sl(large)].baddbmm_(w, v[:, self._side_sl(small)])
        return y

    def _wt_apply(self, u: torch.Tensor) -> torch.Tensor:
        z = u.new_zeros(u.shape[0], self.n_small, u.shape[2])
        for small, large, _, wt in self._oriented():
            z[:, self._side_sl(small)].baddbmm_(wt, u[:, self._side_sl(large)])
        return z

    def b_apply(self, v: torch.Tensor) -> torch.Tensor:
        """B v: small-side vectors (S, n_small, b) → large-side vectors (S, n_large, b)."""
        return self._w_apply(v * self.dinv_small).mul_(self.dinv_large)

    def gram_apply(self, v: torch.Tensor) -> torch.Tensor:
        with intra_op_threads(self.threads):
            u = self._w_apply(v * self.dinv_small).mul_(self.dinv2_large)
            return self._wt_apply(u).mul_(self.dinv_small).addcmul_(v, self.small_shift)

    def gram_dense(self) -> torch.Tensor:
        with intra_op_threads(self.threads):
            return self._gram_dense()

    def _gram_dense(self) -> torch.Tensor:
        g = torch.diag_embed(self.small_shift[..., 0])
        per_large: dict[int, list[tuple[int, torch.Tensor]]] = {}
        for src, dst, w in self._normalised():
            if src in self.small_layers:
                per_large.setdefault(dst, []).append((src, w.mT))
            else:
                per_large.setdefault(src, []).append((dst, w))
        for large, parts in per_large.items():
            layers = sorted({small for small, _ in parts})
            pos = {layer: i for i, layer in enumerate(layers)}
            widths = [self.sizes[layer] for layer in layers]
            starts = np.concatenate([[0], np.cumsum(widths)]).astype(int).tolist()
            bl = parts[0][1].new_zeros(self.S, self.sizes[large], starts[-1])  # (S, n_large_layer, Σ n_nbr)
            for small, w in parts:
                i = pos[small]
                bl[:, :, starts[i] : starts[i + 1]] += w
            gl = bl.mT @ bl
            for a, la in enumerate(layers):
                for b, lb in enumerate(layers):
                    piece = gl[:, starts[a] : starts[a + 1], starts[b] : starts[b + 1]]
                    g[:, self._side_sl(la), self._side_sl(lb)] += piece
        return g

    def lift(self, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Eigenvectors of M, (S, n, k), from Gram eigenvectors v (S, n_small, k) and σ (S, k)."""
        with intra_op_threads(self.threads):
            u = self.b_apply(v) / sigma.unsqueeze(1)
        full = v.new_zeros(v.shape[0], self.n, v.shape[2])
        full[:, self.small_idx] = v
        full[:, self.large_idx] = u
        return full / full.norm(dim=1, keepdim=True).clamp_min(1e-30)

    # --- batch plumbing
    def subset(self, idx: torch.Tensor) -> LayeredProblem:
        raw = [(s, d, w.index_select(0, idx)) for s, d, w in self.raw]
        sub = LayeredProblem(self.sizes, raw, self.dtype, self.sides, self.threads)
        if self.weights_t is not None:
            sub.weights_t = [wt.index_select(0, idx) for wt in self.weights_t]
        return sub

    def astype(self, dtype: torch.dtype) -> LayeredProblem:
        return self if dtype == self.dtype else LayeredProblem(self.sizes, self.raw, dtype, self.sides, self.threads)

    def n_components(self, s: int) -> int:
        """Connected components of sample s among its non-isolated neurons (scipy, on the CPU)."""
        rows, cols = [], []
        for src, dst, w in self.raw:
            i, j = w[s].nonzero() if is_sparse_block(w) else torch.nonzero(w[s], as_tuple=True)
            rows.append((i + self.offsets[src]).cpu().numpy())
            cols.append((j + self.offsets[dst]).cpu().numpy())
        r, c = np.concatenate(rows), np.concatenate(cols)
        pattern = sp.coo_matrix((np.ones(r.size, np.int8), (r, c)), shape=(self.n, self.n)).tocsr()
        n_comp = connected_components(pattern, directed=False)[0]
        return int(n_comp) - int((~self.valid[s]).sum())


class MatrixProblem:
    """One graph given as a symmetric torch adjacency (dense or sparse), already without isolated neurons."""

    gram_side = None

    def __init__(self, adjacency: torch.Tensor, dtype: torch.dtype, threads: int | None = None) -> None:
        self.threads = threads
        self.adjacency = adjacency
        self.dtype = dtype
        self.device = adjacency.device
        self.S, self.n = 1, adjacency.shape[0]
        if adjacency.is_sparse:
            deg = torch.sparse.sum(adjacency, 1).to_dense().to(torch.float64)
        else:
            deg = adjacency.sum(1, dtype=torch.float64)
        self.valid = (deg > 0).unsqueeze(0)
        self.sqrt_deg = deg.sqrt().unsqueeze(0)
        self.dinv = torch.where(deg > 0, deg.clamp_min(1e-300).rsqrt(), torch.zeros_like(deg)).unsqueeze(0)
        dinv = self.dinv[0].to(dtype)
        if adjacency.is_sparse:
            a = adjacency.coalesce()
            i, j = a.indices()
            vals = a.values().to(dtype) * dinv[i] * dinv[j]
            self.m = torch.sparse_coo_tensor(a.indices(), vals, a.shape, check_invariants=False).coalesce()
        else:
            self.m = dinv[:, None] * adjacency.to(dtype) * dinv[None, :]

    def gram_form(self, n_eig: int) -> None:
        return None

    def prepare_products(self) -> None:
        pass

    def m_apply(self, x: torch.Tensor) -> torch.Tensor:
        with intra_op_threads(self.threads):
            return (self.m @ x[0]).unsqueeze(0)

    def m_dense(self) -> torch.Tensor:
        with intra_op_threads(self.threads):
            return (self.m.to_dense() if self.m.layout != torch.strided else self.m).unsqueeze(0)

    def subset(self, idx: torch.Tensor) -> MatrixProblem:
        return self

    def astype(self, dtype: torch.dtype) -> MatrixProblem:
        return self if dtype == self.dtype else MatrixProblem(self.adjacency, dtype, self.threads)

    def n_components(self, s: int) -> int:
        a = self.adjacency
        if a.is_sparse:
            i, j = a.coalesce().indices().cpu().numpy()
        else:
            i, j = torch.nonzero(a, as_tuple=True)
            i, j = i.cpu().numpy(), j.cpu().numpy()
        pattern = sp.coo_matrix((np.ones(i.size, np.int8), (i, j)), shape=(self.n, self.n)).tocsr()
        return int(connected_components(pattern, directed=False)[0])
