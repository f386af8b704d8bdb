"""Spectral clustering of neuron graphs on CPU or GPU (methods.md §3), one graph or a batch of nulls at once.

The pipeline is sklearn's ``SpectralClustering(affinity="precomputed", assign_labels="kmeans")`` as the reference
calls it, rebuilt in torch so that it runs on a GPU and batches over many graphs that share one layer layout:

1. drop the isolated neurons (degree 0; they get label −1);
2. the k smallest eigenpairs of L = I − D^-½AD^-½, i.e. the k largest *algebraic* eigenpairs of
   M = D^-½AD^-½, by a dense ``eigh`` for small problems or restarted block Lanczos / LOBPCG on the block
   matvec for large ones, in float32 with a float64 retry when the residual ‖MV − VΛ‖ is poor;
3. the embedding U_i/√d_i (rows not normalised, the trivial vector kept, as the reference does);
4. k-means++ (greedy, 2 + ⌊ln k⌋ trials) and Lloyd with ``n_init`` restarts, all restarts batched.

A layered graph whose layers 2-colour (every feed-forward net without skip connections over an even number of
layers) is bipartite: M = [[0, B], [Bᵀ, 0]] up to a permutation, its spectrum is ±σ(B), and the top eigenvectors
of M are (Bv/σ, v)/√2 for the top eigenpairs (σ², v) of the Gram matrix BᵀB of the *smaller* side. The solvers
work on that Gram matrix when they can: a problem of half the size whose wanted end is the only end.

On a CPU the many small ops run with one intra-op thread; the caller's torch thread count goes to the big block
products and to independent work (the k-means restarts of different graphs, per-null eigenproblems), see
``_cpu_thread_budget``.
Randomness is drawn on the CPU from per-graph generators, so one seed gives the same draws on every device.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from threadpoolctl import threadpool_limits

from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.errors import ClusteringInputError, DeviceError, DisconnectedGraphWarning
from neuronmap.service.clustering.shuffles import seed_sequence, torch_generator

EigenSolver = Literal["auto", "dense", "lobpcg", "lanczos"]
EIGEN_SOLVERS: tuple[str, ...] = ("auto", "dense", "lobpcg", "lanczos")

# "auto" solves densely when the eigenproblem (the Gram side, or the whole graph) is at most this big; the
# measured crossover with Lanczos on 2 CPU cores lies between 800 and 1200.
DENSE_MAX_SIZE = 1000
FALLBACK_RESIDUAL = 1e-3  # a float32 eigen-residual above this is recomputed in float64
DEFAULT_TOL = {torch.float32: 1e-4, torch.float64: 1e-7}  # iterative solvers stop at this residual
CONNECTIVITY_GAP = 1e-3  # μ₂ ≥ 1 − gap → count the connected components exactly
ISOLATED_SHIFT = -2.0  # masked (isolated) nodes of a batch get this eigenvalue: below M's spectrum [-1, 1]
GRAM_MIN_SIGMA = 1e-3  # the Gram reduction needs σ_k clearly above 0
ORTHO_CANCELLATION = 1e-2  # a column that keeps less of its norm than this after projection is projected again


# ----------------------------------------------------------------------------------------------- small helpers

def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" → CUDA when available, else CPU; "cuda" without CUDA raises DeviceError."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise DeviceError(str(device), "not a device name; use 'auto', 'cpu' or 'cuda'.") from error
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(str(device), "this torch build sees no CUDA device. Use device='cpu' or 'auto'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(str(device), f"only {torch.cuda.device_count()} CUDA device(s) are visible.")
    elif dev.type != "cpu":
        raise DeviceError(str(device), "neuronmap runs on 'cpu' or 'cuda'.")
    return dev


def _check_dtype(dtype: torch.dtype | None) -> None:
    if dtype not in (None, torch.float32, torch.float64):
        raise ClusteringInputError(f"dtype must be None, torch.float32 or torch.float64, got {dtype}.")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _randn(generators: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device,
           dtype: torch.dtype) -> torch.Tensor:
    """One draw per generator (on the CPU, so a seed gives the same numbers on every device), stacked."""
    out = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in generators])
    return out.to(device=device, dtype=dtype)


def _rand(generators: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    out = torch.stack([torch.rand(shape, generator=g, dtype=torch.float64) for g in generators])
    return out.to(device=device)


def _orthonormalize(x: torch.Tensor, against: torch.Tensor | None = None) -> torch.Tensor:
    """Columns of x (S, n, b) made orthonormal, and orthogonal to ``against`` (S, n, m) (two passes of CGS)."""
    if against is None:
        return torch.linalg.qr(x).Q
    norms = x.norm(dim=1)  # (S, b)
    for _ in range(2):  # "twice is enough" (Kahan–Parlett)
        x = x - against @ (against.mT @ x)
    q, r = torch.linalg.qr(x)
    # A column that (nearly) lay in span(against) comes out of QR as a rescaled rounding error, no longer
    # orthogonal to it: one more pass cleans it. Only then, as it costs a third of the work.
    if bool((r.diagonal(dim1=-2, dim2=-1).abs() < ORTHO_CANCELLATION * norms).any()):
        q = q - against @ (against.mT @ q)
        q = torch.linalg.qr(q).Q
    return q


def _transposed_copy(w: torch.Tensor) -> torch.Tensor:
    """A contiguous (S, b, a) copy of w (S, a, b)ᵀ, by strips of rows (the whole transpose at once runs
    single-threaded and cache-unfriendly, at about a third of the speed)."""
    out = w.new_empty(w.shape[0], w.shape[2], w.shape[1])
    for lo in range(0, w.shape[1], 256):
        out[:, :, lo:lo + 256].copy_(w[:, lo:lo + 256].mT)
    return out


# Per-thread intra-op settings are an OpenMP property; other ATen backends share one pool (and warn when resized).
_OPENMP = "parallel backend: OpenMP" in torch.__config__.parallel_info()


@contextlib.contextmanager
def _intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave them as they are), then restore them."""
    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _map_independent(fn: Callable[[Any], Any], items: Sequence[Any], device: torch.device,
                     workers: int | None = None) -> list[Any]:
    """``[fn(item) for item in items]``; on a CPU, spread over ``workers`` threads that each run single-threaded.

    Many small independent problems (k-means groups, one small eigenproblem per null) parallelise better across
    problems than inside each op: an op-level thread team waits at a barrier after every one of thousands of tiny
    ops, and when another process (Neo4j, say) holds a core, each wait costs a scheduler slice; that made k-means
    10–20× slower on a busy 2-core machine. Torch and BLAS run one thread per worker during the map.
    """
    workers = min(workers or torch.get_num_threads(), len(items))
    if device.type != "cpu" or workers <= 1 or not _OPENMP:
        return [fn(item) for item in items]
    previous = torch.get_num_threads()

    def run(item: Any) -> Any:
        torch.set_num_threads(1)  # this thread's OpenMP team, and MKL
        return fn(item)

    try:
        with threadpool_limits(limits=1), ThreadPoolExecutor(workers) as pool:  # scipy's BLAS/LAPACK too
            return list(pool.map(run, items))
    finally:
        torch.set_num_threads(previous)


def _cpu_thread_budget(device: torch.device) -> int | None:
    """On a CPU, the caller's torch thread count, which the pipeline spends where it pays; None on a GPU.

    The pipeline runs its many small ops (orthogonalisation, Rayleigh–Ritz, k-means steps) with one intra-op
    thread, and spends the budget on the big block products (intra-op) and on independent work (k-means restart
    groups and per-null eigenproblems, one thread each). On a quiet machine this costs little; on a busy one (a
    Neo4j on the same cores) it avoids the 10–100× stalls of thread teams waiting at every small op's barrier.
    """
    return torch.get_num_threads() if device.type == "cpu" else None


# ----------------------------------------------------------------------------------------------- problems

class _Layered:
    """S graphs sharing one layer layout, with M = D^-½AD^-½ held as normalised block stacks.

    Isolated (degree-0) neurons are not removed: D^-½ is 0 there and M gets ``ISOLATED_SHIFT`` on their diagonal,
    so their eigenvalues sit below everything wanted, and the embedding is 0 on them (masked in k-means).
    """

    def __init__(self, sizes: Sequence[int], raw: Sequence[tuple[int, int, torch.Tensor]], dtype: torch.dtype,
                 sides: list[int] | None, threads: int | None = None) -> None:
        self.threads = threads  # intra-op threads for the block products (see _cpu_thread_budget)
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
        self.shift = (~self.valid).to(dtype) * ISOLATED_SHIFT  # (S, n)
        self._setup_gram()

    def _normalised(self) -> list[tuple[int, int, torch.Tensor]]:
        """The blocks of M, D^-½ W D^-½ (for the dense paths)."""
        dinv = self.dinv_c[..., 0]
        return [(src, dst, (dinv[:, self._sl(src), None] * w) * dinv[:, None, self._sl(dst)])
                for src, dst, w in self.weights]

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
        self.small_idx = torch.cat([torch.arange(self.offsets[l], self.offsets[l + 1]) for l in self.small_layers]
                                   ).to(self.device)
        self.large_idx = (torch.cat([torch.arange(self.offsets[l], self.offsets[l + 1]) for l in self.large_layers])
                          .to(self.device) if self.large_layers else torch.zeros(0, dtype=torch.int64,
                                                                                  device=self.device))
        self.small_shift = self.shift[:, self.small_idx].unsqueeze(-1)  # (S, n_small, 1)
        self.dinv_small = self.dinv_c[:, self.small_idx]  # (S, n_small, 1), side order
        self.dinv_large = self.dinv_c[:, self.large_idx]  # (S, n_large, 1)
        self.dinv2_large = self.dinv_large ** 2

    def _side_sl(self, layer: int) -> slice:
        return slice(self.side_off[layer], self.side_off[layer] + self.sizes[layer])

    def prepare_products(self) -> None:
        """Before many operator products on a CPU: keep a contiguous copy of every block's transpose.

        MKL's GEMM against a transposed (column-major) weight block with a thin right-hand side runs at about
        half the speed of the plain one, and the operator needs each block both ways; a copy costs about one
        product. GPUs' GEMMs take either layout at the same speed.
        """
        if self.weights_t is None and self.device.type == "cpu":
            with _intra_op_threads(self.threads):
                self.weights_t = [_transposed_copy(w) for _, _, w in self.weights]

    def _pairs(self) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """(src, dst, W, Wᵀ) per block, Wᵀ contiguous after ``prepare_products``."""
        wts = self.weights_t or [w.mT for _, _, w in self.weights]
        return [(src, dst, w, wt) for (src, dst, w), wt in zip(self.weights, wts)]

    # oriented blocks: (small layer, large layer, W oriented (S, n_large_layer, n_small_layer), its transpose)
    def _oriented(self) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
        out = []
        for src, dst, w, wt in self._pairs():
            if self.sides[src] == self.gram_side:  # type: ignore[index]
                out.append((src, dst, wt, w))
            else:
                out.append((dst, src, w, wt))
        return out

    # --- the full operator M
    def m_apply(self, x: torch.Tensor) -> torch.Tensor:
        with _intra_op_threads(self.threads):
            xs = x * self.dinv_c
            y = torch.zeros_like(x)
            for src, dst, w, wt in self._pairs():
                s, d = self._sl(src), self._sl(dst)
                y[:, s].baddbmm_(w, xs[:, d])
                y[:, d].baddbmm_(wt, xs[:, s])
            return y.mul_(self.dinv_c).addcmul_(x, self.shift.unsqueeze(-1))

    def m_dense(self) -> torch.Tensor:
        with _intra_op_threads(self.threads):
            m = torch.diag_embed(self.shift)
            for src, dst, w in self._normalised():
                s, d = self._sl(src), self._sl(dst)
                m[:, s, d] += w
                m[:, d, s] += w.mT
            return m

    # --- the Gram operator BᵀB on the small side, B = D_large^-½ W D_small^-½
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
        with _intra_op_threads(self.threads):
            u = self._w_apply(v * self.dinv_small).mul_(self.dinv2_large)
            return self._wt_apply(u).mul_(self.dinv_small).addcmul_(v, self.small_shift)

    def gram_dense(self) -> torch.Tensor:
        with _intra_op_threads(self.threads):
            return self._gram_dense()

    def _gram_dense(self) -> torch.Tensor:
        g = torch.diag_embed(self.small_shift[..., 0])
        per_large: dict[int, list[tuple[int, torch.Tensor]]] = {}
        for src, dst, w in self._normalised():
            if self.sides[src] == self.gram_side:  # type: ignore[index]
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
                bl[:, :, starts[i]:starts[i + 1]] += w
            gl = bl.mT @ bl
            for a, la in enumerate(layers):
                for b, lb in enumerate(layers):
                    piece = gl[:, starts[a]:starts[a + 1], starts[b]:starts[b + 1]]
                    g[:, self._side_sl(la), self._side_sl(lb)] += piece
        return g

    def lift(self, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Eigenvectors of M, (S, n, k), from Gram eigenvectors v (S, n_small, k) and σ (S, k)."""
        with _intra_op_threads(self.threads):
            u = self.b_apply(v) / sigma.unsqueeze(1)
        full = v.new_zeros(v.shape[0], self.n, v.shape[2])
        full[:, self.small_idx] = v
        full[:, self.large_idx] = u
        return full / full.norm(dim=1, keepdim=True).clamp_min(1e-30)

    # --- batch plumbing
    def subset(self, idx: torch.Tensor) -> _Layered:
        sub = _Layered(self.sizes, [(s, d, w.index_select(0, idx)) for s, d, w in self.raw], self.dtype, self.sides,
                       self.threads)
        if self.weights_t is not None:
            sub.weights_t = [wt.index_select(0, idx) for wt in self.weights_t]
        return sub

    def astype(self, dtype: torch.dtype) -> _Layered:
        return self if dtype == self.dtype else _Layered(self.sizes, self.raw, dtype, self.sides, self.threads)

    def n_components(self, s: int) -> int:
        """Connected components of sample s among its non-isolated neurons (scipy, on the CPU)."""
        rows, cols = [], []
        for src, dst, w in self.raw:
            i, j = torch.nonzero(w[s], as_tuple=True)
            rows.append((i + self.offsets[src]).cpu().numpy())
            cols.append((j + self.offsets[dst]).cpu().numpy())
        r, c = np.concatenate(rows), np.concatenate(cols)
        pattern = sp.coo_matrix((np.ones(r.size, np.int8), (r, c)), shape=(self.n, self.n)).tocsr()
        n_comp = connected_components(pattern, directed=False)[0]
        return int(n_comp) - int((~self.valid[s]).sum())


class _Matrix:
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

    def gram_ok(self, n_eig: int) -> bool:
        return False

    def prepare_products(self) -> None:
        pass

    def m_apply(self, x: torch.Tensor) -> torch.Tensor:
        with _intra_op_threads(self.threads):
            return (self.m @ x[0]).unsqueeze(0)

    def m_dense(self) -> torch.Tensor:
        with _intra_op_threads(self.threads):
            return (self.m.to_dense() if self.m.layout != torch.strided else self.m).unsqueeze(0)

    def subset(self, idx: torch.Tensor) -> _Matrix:
        return self

    def astype(self, dtype: torch.dtype) -> _Matrix:
        return self if dtype == self.dtype else _Matrix(self.adjacency, dtype, self.threads)

    def n_components(self, s: int) -> int:
        a = self.adjacency
        if a.is_sparse:
            i, j = a.coalesce().indices().cpu().numpy()
        else:
            i, j = torch.nonzero(a, as_tuple=True)
            i, j = i.cpu().numpy(), j.cpu().numpy()
        pattern = sp.coo_matrix((np.ones(i.size, np.int8), (i, j)), shape=(self.n, self.n)).tocsr()
        return int(connected_components(pattern, directed=False)[0])


# ----------------------------------------------------------------------------------------------- eigensolvers

def _rayleigh_ritz(basis: torch.Tensor, abasis: torch.Tensor, b: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-b Ritz pairs on an orthonormal basis (S, n, m) with its products; returns x, ax, theta, coefficients."""
    t = basis.mT @ abasis
    t = ((t + t.mT) / 2).to(torch.float64)  # the small problem in float64: it is cheap, and ties are common
    evals, evecs = torch.linalg.eigh(t)
    top = evecs[:, :, -b:].flip(-1).to(basis.dtype)  # (S, m, b), descending
    theta = evals[:, -b:].flip(-1).to(basis.dtype)
    return basis @ top, abasis @ top, theta, top


def _block_krylov(make_apply: Callable[[torch.Tensor | None], Callable[[torch.Tensor], torch.Tensor]],
                  x0: torch.Tensor, n_want: int, *, method: str, tol: float, max_applies: int,
                  depth: int, gram: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The top-``b`` algebraic eigenpairs of a batch of symmetric operators, ``b = x0.shape[2]``.

    ``method="lanczos"``: restarted block Lanczos with full reorthogonalisation (a block Krylov basis of depth
    ``depth`` grown from the current Ritz block, then Rayleigh–Ritz on all of it), restarted thick: up to ``b``
    further Ritz vectors stay in the next basis. ``method="lobpcg"``:
    Rayleigh–Ritz on [X, R, P] each step (Knyazev's LOBPCG, orthonormalised basis). Every operator product is
    computed explicitly, so Rayleigh–Ritz is exact on the basis. A sample stops once its first ``n_want``
    residual norms are ≤ tol (or the product budget is spent); finished samples are compacted out of the batch.
    With ``gram=True`` the operator is BᵀB and the test is on the residual of M that its pairs lift to,
    ‖BᵀBv − σ²v‖ / (σ√2).

    Returns
    -------
    theta : (S, b) Ritz values, descending; vectors : (S, n, b); residual : (S, b); applies : block products.
    """
    n_samples, size, b = x0.shape
    theta_out = x0.new_zeros(n_samples, b)
    v_out = x0.clone()
    res_out = x0.new_full((n_samples, b), math.inf)
    active = torch.arange(n_samples, device=x0.device)
    apply = make_apply(None)
    x = _orthonormalize(x0)
    x, ax, theta, _ = _rayleigh_ritz(x, apply(x), b)
    applies = 1
    p: torch.Tensor | None = None
    # Lanczos restarts thick: the Ritz vectors just past the block stay in the next basis, with their products
    # (free: combinations of the products already made), so the last wanted pairs do not lose their head start.
    keep = b + max(0, min(b, size // 3 - (depth + 1) * b)) if method == "lanczos" else b
    finished = torch.zeros(n_samples, dtype=torch.bool, device=x0.device)  # by position in the active batch
    n_since_compaction = 0
    while True:
        res = (ax[:, :, :b] - x[:, :, :b] * theta[:, None, :b]).norm(dim=1)  # (S_active, b)
        if gram:
            res = res / (2 * theta[:, :b].clamp_min(1e-12)).sqrt()
        newly = ((res[:, :n_want] <= tol).all(1) | (applies >= max_applies)) & ~finished
        if bool(newly.any()):
            sel = active[newly]
            theta_out[sel], v_out[sel], res_out[sel] = theta[newly, :b], x[newly, :, :b], res[newly]
            finished |= newly
            n_since_compaction += int(newly.sum())
        if bool(finished.all()):
            break
        if n_since_compaction >= max(1, finished.numel() // 4):  # drop finished samples from the batch
            alive = ~finished
            active, x, ax, theta, finished = active[alive], x[alive], ax[alive], theta[alive], finished[alive]
            p = p[alive] if p is not None else None
            apply = make_apply(active)
            n_since_compaction = 0
        if method == "lanczos":
            # [kept Ritz vectors | K blocks grown from A·X_block], written into one buffer (no growing concatenation)
            width = x.shape[2]
            basis = x.new_empty(x.shape[0], size, width + depth * b)
            abasis = torch.empty_like(basis)
            basis[:, :, :width], abasis[:, :, :width] = x, ax
            grow, cols = ax[:, :, :b], width
            for _ in range(depth):
                q = _orthonormalize(grow, basis[:, :, :cols])
                grow = apply(q)
                basis[:, :, cols:cols + b], abasis[:, :, cols:cols + b] = q, grow
                cols += b
                applies += 1
        else:
            rq = _orthonormalize(ax - x * theta.unsqueeze(1), x)
            parts, aparts = [x, rq], [ax, apply(rq)]
            applies += 1
            if p is not None:
                pq = _orthonormalize(p, torch.cat(parts, 2))
                parts.append(pq)
                aparts.append(apply(pq))
                applies += 1
            basis, abasis = torch.cat(parts, 2), torch.cat(aparts, 2)
        x, ax, theta, top = _rayleigh_ritz(basis, abasis, keep)
        if method == "lobpcg":
            p = basis[:, :, b:] @ top[:, b:, :]  # the step taken outside span(X): LOBPCG's search direction
    return theta_out, v_out, res_out, applies


@dataclass
class _Eigen:
    mu: torch.Tensor  # (S, n_eig) eigenvalues of M, descending
    vectors: torch.Tensor  # (S, n, n_eig) unit eigenvectors of M
    residual: torch.Tensor  # (S,) max_j ‖M v_j − μ_j v_j‖
    solver: str
    operator: str  # "gram" or "adjacency"
    applies: int = 0


def _krylov_depth(size: int, block: int) -> int:
    """Blocks added per Lanczos cycle: about 96 columns in all, and the basis at most a third of the space."""
    return min(8, 96 // block, size // (3 * block) - 1)


def _resolve_solver(solver: str, size: int, block: int) -> str:
    if solver == "auto":
        solver = "dense" if size <= DENSE_MAX_SIZE else "lanczos"
    if solver != "dense" and _krylov_depth(size, block) < 2:  # too small for a Krylov basis to make sense
        solver = "dense"
    return solver


def _block_size(n_eig: int) -> int:
    """Ritz block: the wanted vectors and a few guards, which speed up the last wanted ones."""
    return n_eig + max(4, n_eig // 3)


def _dense_top(mat: torch.Tensor, n_eig: int, workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``n_eig`` eigenpairs (descending) of a batch of dense symmetric matrices (S, m, m).

    On the CPU, LAPACK's MRRR (``?syevr``) computes only the wanted eigenvectors, about twice as fast as the
    full ``eigh`` for the sizes used here; on a GPU, the batched full ``eigh`` is the fast path.
    """
    size = mat.shape[-1]
    if mat.device.type == "cpu" and n_eig < size // 4:
        def top(one: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            w, v = scipy.linalg.eigh(one, subset_by_index=[size - n_eig, size - 1], driver="evr",
                                     overwrite_a=True, check_finite=False)
            return w[::-1].copy(), v[:, ::-1].copy()

        if mat.shape[0] > 1:
            pairs = _map_independent(top, list(mat.numpy()), mat.device, workers)
        else:
            with threadpool_limits(limits=1):  # LAPACK's many small BLAS-2 steps: one thread is as fast, and robust
                pairs = [top(mat[0].numpy())]
        return torch.from_numpy(np.stack([w for w, _ in pairs])), torch.from_numpy(np.stack([v for _, v in pairs]))
    evals, evecs = torch.linalg.eigh(mat)
    return evals[:, -n_eig:].flip(-1), evecs[:, :, -n_eig:].flip(-1)


def _eigenpairs(problem: Any, n_eig: int, solver: str, generators: Sequence[torch.Generator], tol: float,
                *, allow_gram: bool = True, warm: torch.Tensor | None = None) -> _Eigen:
    """The top ``n_eig`` algebraic eigenpairs of M for every sample of ``problem``."""
    use_gram = allow_gram and problem.gram_ok(n_eig)
    size = problem.n_small if use_gram else problem.n
    b = min(_block_size(n_eig), size)
    how = _resolve_solver(solver, size, b)
    applies = 0
    if how == "dense":
        lam, vec = _dense_top(problem.gram_dense() if use_gram else problem.m_dense(), n_eig, problem.threads)
    else:
        depth = _krylov_depth(size, b)
        if warm is not None:
            x0 = warm[:, problem.small_idx] if use_gram else warm
            x0 = x0.to(problem.dtype)
            if x0.shape[2] < b:
                extra = _randn(generators, (size, b - x0.shape[2]), problem.device, problem.dtype)
                x0 = torch.cat([x0, extra], 2)
        else:
            x0 = _randn(generators, (size, b), problem.device, problem.dtype)
            # Start from the known top eigenvector √d (eigenvalue 1 of M and of BᵀB).
            sd = problem.sqrt_deg[:, problem.small_idx] if use_gram else problem.sqrt_deg
            x0[:, :, 0] = sd.to(problem.dtype)

        problem.prepare_products()

        def make_apply(idx: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
            sub = problem if idx is None else problem.subset(idx)
            return sub.gram_apply if use_gram else sub.m_apply

        max_applies = 60 * (depth + 1) if how == "lanczos" else 600
        theta, vec, res, applies = _block_krylov(make_apply, x0, n_eig, method=how, tol=tol,
                                                 max_applies=max_applies, depth=depth, gram=use_gram)
        lam, vec = theta[:, :n_eig], vec[:, :, :n_eig]
        # The solvers' own residuals are those of M (for the Gram operator, of the lifted pairs), from products
        # made explicitly: no need to spend another product on checking them.
        krylov_residual = res[:, :n_eig].amax(1)
    if use_gram:
        sigma = lam.clamp_min(0).sqrt()
        if float(sigma[:, -1].min()) < GRAM_MIN_SIGMA:  # σ_k ≈ 0: the Gram side cannot give k vectors
            return _eigenpairs(problem, n_eig, solver, generators, tol, allow_gram=False, warm=warm)
        vectors, mu = problem.lift(vec, sigma), sigma
    else:
        vectors, mu = vec, lam
    if how == "dense":
        residual = (problem.m_apply(vectors) - vectors * mu.unsqueeze(1)).norm(dim=1).amax(1)
    else:
        residual = krylov_residual
    return _Eigen(mu, vectors, residual, how, "gram" if use_gram else "adjacency", applies)


# ----------------------------------------------------------------------------------------------- k-means

KMEANS_GROUP_ELEMENTS = {"cpu": 1 << 21, "cuda": 1 << 28}  # distance entries per k-means group
KMEANS_CHUNK_ELEMENTS = 1 << 17  # distance entries per slice of a Lloyd step on a CPU (512 kB in float32)


def kmeans_batched(x: torch.Tensor, valid: torch.Tensor | None, n_clusters: int, n_init: int,
                   generators: Sequence[torch.Generator], *, max_iter: int = 300, tol: float = 1e-4,
                   workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """k-means++ and Lloyd on G point sets at once, ``n_init`` restarts each, all restarts batched.

    Parameters
    ----------
    x : torch.Tensor of shape (G, n, d)
        Points; rows where ``valid`` is False are ignored.
    valid : torch.Tensor of shape (G, n), bool, or None
    n_clusters : int
    n_init : int
        Restarts per point set; the one with the lowest inertia wins (sklearn's rule).
    generators : sequence of G torch.Generator
        Random draws per point set (on the CPU), so a set's result does not depend on its batch.
    max_iter, tol : as sklearn's KMeans (tol is relative to the mean per-feature variance).
    workers : int, optional
        CPU threads for independent groups of restarts (default: torch's intra-op thread count).

    Returns
    -------
    labels : (G, n) int64, −1 on invalid rows; inertia : (G,) float64; n_iter : (G,) iterations of the winner.

    Notes
    -----
    Same algorithm as ``sklearn.cluster.KMeans(init="k-means++", algorithm="lloyd")``: greedy k-means++ with
    2 + ⌊ln k⌋ local trials, centred data, stop on unchanged labels or a centre shift ≤ tol, a last E-step, and
    empty clusters moved to the points farthest from their centres.
    """
    g_count, n, d = x.shape
    if len(generators) != g_count:
        raise ClusteringInputError(f"Need one generator per point set: {len(generators)} for {g_count}.")
    k = n_clusters
    trials = 2 + int(np.log(k))
    # Every random number up front, per point set: the result does not depend on how the work is split below.
    u = 1.0 - _rand(generators, (n_init, 1 + (k - 1) * trials), x.device)  # (G, R, ·) in (0, 1]
    # Units of work small enough to stay in cache on a CPU (big fresh tensors every Lloyd step cost page faults
    # there), and at least one per worker thread: whole point sets when several fit, else slices of the restarts.
    cap = KMEANS_GROUP_ELEMENTS["cuda" if x.device.type == "cuda" else "cpu"]
    runs_per_unit = max(1, cap // max(1, n * max(k, d)))
    workers = workers or torch.get_num_threads()
    # Several point sets: feed every worker. One point set: its restarts stay in one unit while they fit, as
    # splitting them over threads made k-means slower (measured 1.3× on 2 cores): the per-step ops are small, and
    # two threads issuing them contend for the interpreter lock more than they gain.
    if x.device.type == "cpu" and g_count > 1 and g_count * n_init < 2 * runs_per_unit * workers:
        runs_per_unit = max(1, min(runs_per_unit, -(-g_count * n_init // workers)))
    units = []
    if n_init <= runs_per_unit:
        per = max(1, runs_per_unit // n_init)
        units = [(lo, min(g_count, lo + per), 0, n_init) for lo in range(0, g_count, per)]
    else:
        units = [(g, g + 1, lo, min(n_init, lo + runs_per_unit)) for g in range(g_count)
                 for lo in range(0, n_init, runs_per_unit)]
    # Cache-sized slices pay on a CPU when one unit runs alone (1.4× on k-means of 5k points); with units on
    # several threads the extra small ops cost more than they save (measured), so those take whole point sets.
    chunk = KMEANS_CHUNK_ELEMENTS if x.device.type == "cpu" and len(units) == 1 else None
    parts = _map_independent(
        lambda unit: _kmeans_group(x[unit[0]:unit[1]], None if valid is None else valid[unit[0]:unit[1]], k,
                                   u[unit[0]:unit[1], unit[2]:unit[3]], max_iter=max_iter, tol=tol,
                                   chunk_elements=chunk),
        units, x.device, workers)
    labels = torch.empty(g_count, n, dtype=torch.int64, device=x.device)
    inertia = torch.full((g_count,), math.inf, dtype=torch.float64, device=x.device)
    n_iter = torch.zeros(g_count, dtype=torch.int64, device=x.device)
    for (lo, hi, _, _), (lab, ine, nit) in zip(units, parts):  # the lowest inertia wins; the first on ties
        better = ine < inertia[lo:hi]
        labels[lo:hi] = torch.where(better.unsqueeze(1), lab, labels[lo:hi])
        inertia[lo:hi] = torch.where(better, ine, inertia[lo:hi])
        n_iter[lo:hi] = torch.where(better, nit, n_iter[lo:hi])
    return labels, inertia, n_iter


def _kmeans_group(x: torch.Tensor, valid: torch.Tensor | None, n_clusters: int, u: torch.Tensor, *, max_iter: int,
                  tol: float, chunk_elements: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """k-means for G point sets with R restarts each, ``u`` (G, R, ·) holding the k-means++ draws.

    ``chunk_elements``: the Lloyd steps go through the points in slices of about this many distances (None: whole
    point sets at once). The result does not depend on it.
    """
    g_count, n, d = x.shape
    k, r_count = n_clusters, u.shape[1]
    device, dtype = x.device, x.dtype
    valid = torch.ones(g_count, n, dtype=torch.bool, device=device) if valid is None else valid
    w = valid.to(dtype)
    count = w.sum(1).clamp_min(1)
    mean = (x * w.unsqueeze(-1)).sum(1) / count.unsqueeze(-1)
    x = (x - mean.unsqueeze(1)) * w.unsqueeze(-1)  # sklearn centres the data first; invalid rows become 0
    xsq = (x * x).sum(-1)  # (G, n)
    tol_g = ((x * x).sum(1) / count.unsqueeze(-1)).mean(1) * tol  # (G,)
    if k == 1:
        labels = torch.where(valid, 0, -1)
        return labels, xsq.sum(1, dtype=torch.float64), torch.ones(g_count, dtype=torch.int64, device=device)
    ones = torch.ones(g_count, 1, n, dtype=dtype, device=device)
    # Squared distances as one GEMM each: [-2c, ‖c‖², 1]·[x; 1; ‖x‖²] (k-means++ needs the true distance).
    xt_full = torch.cat([x.mT, ones, xsq.unsqueeze(1)], 1)  # (G, d + 2, n)

    def lift_centres(c: torch.Tensor, with_norm: bool) -> torch.Tensor:  # (G, m, d) → (G, m, d + 1|2)
        parts = [-2 * c, (c * c).sum(-1, keepdim=True)]
        if with_norm:
            parts.append(torch.ones_like(parts[1]))
        return torch.cat(parts, -1)

    # --- greedy k-means++, batched over (G, R)
    trials = 2 + int(np.log(k))
    first_valid = valid.to(torch.int64).argmax(1)  # a fallback index when every point is already a centre

    def pick(cum: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
        total = cum[..., -1:]
        idx = torch.searchsorted(cum, (fraction * total).contiguous()).clamp_max(n - 1)
        empty = (total <= 0).expand_as(idx)
        return torch.where(empty, first_valid.view(-1, *([1] * (idx.dim() - 1))).expand_as(idx), idx)

    def gather_points(idx: torch.Tensor) -> torch.Tensor:  # (G, m) → (G, m, d)
        return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, d))

    cum_valid = torch.cumsum(w.to(torch.float64), 1).unsqueeze(1).expand(g_count, r_count, n).contiguous()
    idx0 = pick(cum_valid, u[:, :, :1])[:, :, 0]  # (G, R)
    centers_idx = torch.empty(g_count, r_count, k, dtype=torch.int64, device=device)
    centers_idx[:, :, 0] = idx0
    closest = torch.bmm(lift_centres(gather_points(idx0), True), xt_full).clamp_min_(0).mul_(w.unsqueeze(1))
    for c in range(1, k):
        cum = torch.cumsum(closest, 2, dtype=torch.float64)
        cand = pick(cum, u[:, :, 1 + (c - 1) * trials: 1 + c * trials])  # (G, R, T)
        dist = torch.bmm(lift_centres(gather_points(cand.reshape(g_count, -1)), True), xt_full)
        new = dist.view(g_count, r_count, trials, n).clamp_min_(0)
        torch.minimum(new, closest.unsqueeze(2), out=new)
        best = new.sum(-1).argmin(-1)  # (G, R): the trial that lowers the potential most
        closest = torch.gather(new, 2, best[:, :, None, None].expand(-1, -1, 1, n)).squeeze(2)
        centers_idx[:, :, c] = torch.gather(cand, 2, best.unsqueeze(-1)).squeeze(-1)
    centers = gather_points(centers_idx.view(g_count, -1)).view(g_count * r_count, k, d)

    # --- Lloyd, one row per run, converged runs compacted away. Distances are laid out (run, k, n) so that the
    # reduction over k vectorises along n; the one-hot is that tensor compared in place with its minimum; the
    # sums and the sizes come out of one GEMM against [x, 1], whose rows are 0 for invalid points. The runs of
    # one point set stay contiguous, so each set needs one (runs·k, d+1) × (d+1, n) GEMM, not one per run.
    runs = g_count * r_count
    owner = torch.arange(g_count, device=device).repeat_interleave(r_count)
    final = centers.clone()
    n_iter = torch.zeros(runs, dtype=torch.int64, device=device)
    active = torch.arange(runs, device=device)
    xs = torch.cat([x, w.unsqueeze(-1)], -1)  # (G, n, d + 1)
    xts = xt_full[:, :d + 1].contiguous()  # (G, d + 1, n)
    tola, owner_a = tol_g[owner], owner
    counted = float(count[owner].sum())  # valid points over the active runs: each is in exactly one cluster
    ca = centers

    def spans(owners: torch.Tensor) -> list[tuple[int, int, int]]:  # (point set, first row, end row)
        sets, counts = torch.unique_consecutive(owners, return_counts=True)
        ends = np.cumsum(counts.tolist())
        return [(g, int(e - c), int(e)) for g, c, e in zip(sets.tolist(), counts.tolist(), ends)]

    groups = spans(owner_a)
    # The E- and M-steps may go through the points in slices whose distance block stays in the cache: distances,
    # their minimum over the centres, the one-hot and its GEMM against [x, 1] then touch the block while it is hot.
    chunk_elements = chunk_elements or n * runs * k
    dist_buffer = x.new_empty(max(1, min(runs * k * n, chunk_elements + 256 * k * runs)))
    for it in range(1, max_iter + 1):
        cz = lift_centres(ca, False)  # (A, k, d + 1)
        agg = cz.new_zeros(ca.shape[0], k, d + 1)
        for g, lo, hi in groups:
            rows = (hi - lo) * k
            czg, aggg = cz[lo:hi].reshape(rows, d + 1), agg[lo:hi].view(rows, d + 1)
            step = min(n, max(256, chunk_elements // rows))
            for start in range(0, n, step):
                stop_ = min(n, start + step)
                dist = dist_buffer[:rows * (stop_ - start)].view(rows, stop_ - start)
                torch.mm(czg, xts[g, :, start:stop_], out=dist)  # ‖c‖² − 2c·x, ‖x‖² left out
                per_run = dist.view(hi - lo, k, stop_ - start)
                per_run.eq_(per_run.amin(1, keepdim=True))  # in place: 1.0 where a centre is nearest
                aggg.addmm_(dist, xs[g, start:stop_])
        sizes = agg[:, :, d]
        total, smallest = torch.stack([sizes.sum(), sizes.amin()]).tolist()  # one sync for both rare cases
        if total > counted + 0.5:  # a point equidistant from two (coincident) centres was counted twice
            for row in torch.nonzero(sizes.sum(1) > count[owner_a] + 0.5).flatten().tolist():
                g = int(owner_a[row])
                exact = cz[row] @ xts[g]
                onehot = torch.zeros_like(exact).scatter_(0, exact.argmin(0, keepdim=True), 1.0)
                agg[row] = onehot @ xs[g]
            sizes = agg[:, :, d]
            smallest = float(sizes.amin())
        new = agg[:, :, :d] / sizes.clamp_min(1e-30).unsqueeze(-1)
        if smallest <= 0:  # sklearn: move each empty centre to the points farthest from theirs
            empty = sizes <= 0
            for row in torch.nonzero(empty.any(1)).flatten().tolist():
                g = int(owner_a[row])
                mind = (cz[row] @ xts[g]).amin(0)  # (n,)
                far = torch.where(valid[g], mind + xsq[g], torch.full_like(xsq[g], -math.inf))
                holes = torch.nonzero(empty[row]).flatten()
                new[row, holes] = x[g, torch.topk(far, holes.numel()).indices]
        # Unchanged labels give bit-identical centres (shift 0), so the shift test covers sklearn's strict test.
        stop = (new - ca).square_().sum((1, 2)) <= tola
        if it == max_iter:
            stop.fill_(True)
        ca = new
        if bool(stop.any()):  # record the runs that stopped and drop them from the batch
            sel = active[stop]
            final[sel], n_iter[sel] = ca[stop], it
            alive = ~stop
            if not bool(alive.any()):
                break
            active, tola, owner_a, ca = active[alive], tola[alive], owner_a[alive], ca[alive]
            counted = float(count[owner_a].sum())
            groups = spans(owner_a)

    # --- a last E-step for every run, then the run with the lowest inertia of every point set
    cf = lift_centres(final.view(g_count, r_count * k, d), False)
    dist = torch.bmm(cf, xt_full[:, :d + 1]).view(g_count, r_count, k, n)
    inertia = ((dist.amin(2) + xsq.unsqueeze(1)).clamp_min(0) * w.unsqueeze(1)).sum(2, dtype=torch.float64)  # (G, R)
    best = inertia.argmin(1)
    winner = torch.gather(dist, 1, best.view(g_count, 1, 1, 1).expand(-1, 1, k, n)).squeeze(1)  # (G, k, n)
    labels = torch.where(valid, winner.argmin(1), -1)
    return labels, inertia.gather(1, best.unsqueeze(1)).squeeze(1), n_iter.view(g_count, r_count).gather(
        1, best.unsqueeze(1)).squeeze(1)


# ----------------------------------------------------------------------------------------------- the pipeline

@dataclass(frozen=True)
class SpectralResult:
    """One spectral clustering, with what it took to get it.

    Attributes
    ----------
    labels : torch.Tensor of shape (n_nodes,), int64, CPU
        Cluster per neuron in the input's ordinal order; −1 for isolated neurons.
    eigenvalues : torch.Tensor of shape (n_clusters,), float64, CPU
        The smallest eigenvalues of L = I − D^-½AD^-½, ascending (1 − μ for the top eigenvalues μ of M).
    eigen_residual : float
        max_j ‖M v_j − μ_j v_j‖ of the eigenvectors used (unit vectors).
    eigen_solver : str
        "dense", "lanczos" or "lobpcg", as resolved from "auto".
    operator : str
        "gram" (the bipartite reduction BᵀB) or "adjacency" (M itself).
    dtype : str
        "float32" or "float64": the precision the eigenvectors were finally computed in.
    n_components : int
        Connected components among the kept neurons (1 unless the spectrum shows a second eigenvalue at 1).
    """

    labels: torch.Tensor
    n_clusters: int
    eigenvalues: torch.Tensor
    eigen_residual: float
    eigen_solver: str
    operator: str
    dtype: str
    device: str
    n_components: int
    n_isolated: int
    n_init: int
    inertia: float
    n_matvecs: int
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchOutcome:
    """What :func:`cluster_batch` returns for S graphs: labels and per-sample diagnostics."""

    labels: torch.Tensor  # (S, n) int64 on the device, −1 for isolated neurons
    eigenvalues: torch.Tensor  # (S, k) Laplacian eigenvalues, ascending
    residual: torch.Tensor  # (S,)
    n_components: list[int]
    inertia: torch.Tensor  # (S,)
    eigen_solver: str
    operator: str
    dtype: torch.dtype
    n_matvecs: int
    timings: dict[str, float]


def reference_n_init(n_nodes: int) -> int:
    """The reference's restarts: 100 above 2000 neurons, else 25 (methods.md §3)."""
    return 100 if n_nodes > 2000 else 25


def _solve(problem: Any, n_clusters: int, *, eigen_solver: str, n_init: int, generators: Sequence[torch.Generator],
           dtype: torch.dtype | None, tol: float | None, check_connectivity: bool) -> BatchOutcome:
    device = problem.device
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    n_valid = problem.valid.sum(1)
    if int(n_valid.min()) < n_clusters:
        raise ClusteringInputError(f"n_clusters={n_clusters} is more than the {int(n_valid.min())} neurons left "
                                   "after dropping isolated ones. Ask for fewer clusters.")
    n_eig = min(max(n_clusters, 2), int(n_valid.min()))  # μ₂ tells whether the graph is connected
    first_dtype = dtype or torch.float32
    eig = _eigenpairs(problem, n_eig, eigen_solver, generators, tol or DEFAULT_TOL[first_dtype])
    used_dtype = first_dtype
    applies = eig.applies
    if dtype is None and bool((eig.residual > FALLBACK_RESIDUAL).any()):
        redo = torch.nonzero(eig.residual > FALLBACK_RESIDUAL).flatten()
        sub = problem.subset(redo).astype(torch.float64) if problem.S > 1 else problem.astype(torch.float64)
        gens = [generators[i] for i in redo.tolist()]
        eig64 = _eigenpairs(sub, n_eig, eigen_solver, gens, tol or DEFAULT_TOL[torch.float64],
                            warm=eig.vectors[redo].to(torch.float64))
        vectors = eig.vectors.to(torch.float64)
        vectors[redo] = eig64.vectors
        mu = eig.mu.to(torch.float64)
        mu[redo] = eig64.mu
        residual = eig.residual.to(torch.float64)
        residual[redo] = eig64.residual
        eig = _Eigen(mu, vectors, residual, eig64.solver, eig64.operator, applies + eig64.applies)
        applies = eig.applies
        used_dtype = torch.float64
    _sync(device)
    timings["eigen"] = time.perf_counter() - t0

    n_components = [1] * problem.S
    if check_connectivity:
        mu2 = eig.mu[:, 1] if eig.mu.shape[1] > 1 else torch.zeros(problem.S, device=device)
        suspect = (mu2 >= 1 - CONNECTIVITY_GAP) | (eig.residual > FALLBACK_RESIDUAL)
        for s in torch.nonzero(suspect).flatten().tolist():
            n_components[s] = problem.n_components(s)

    t1 = time.perf_counter()
    kdtype = torch.float64 if dtype == torch.float64 else torch.float32
    embedding = (eig.vectors[:, :, :n_clusters] * problem.dinv.to(eig.vectors.dtype).unsqueeze(-1)).to(kdtype)
    labels, inertia, _ = kmeans_batched(embedding, problem.valid, n_clusters, n_init, generators,
                                        workers=problem.threads)
    _sync(device)
    timings["kmeans"] = time.perf_counter() - t1
    eigenvalues = (1 - eig.mu[:, :n_clusters].to(torch.float64)).clamp_min(0)
    return BatchOutcome(labels, eigenvalues, eig.residual.to(torch.float64), n_components, inertia, eig.solver,
                        eig.operator, used_dtype, applies, timings)


def _check_common(n_clusters: int, eigen_solver: str, n_init: int | None) -> None:
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
        raise ClusteringInputError(f"n_clusters must be a positive int, got {n_clusters!r}.")
    if eigen_solver not in EIGEN_SOLVERS:
        raise ClusteringInputError(f"Unknown eigen_solver {eigen_solver!r}; choose one of {', '.join(EIGEN_SOLVERS)}.")
    if n_init is not None and (not isinstance(n_init, (int, np.integer)) or n_init < 1):
        raise ClusteringInputError(f"n_init must be a positive int, got {n_init!r}.")


def cluster_batch(sizes: Sequence[int], blocks: Sequence[tuple[int, int, torch.Tensor]], n_clusters: int, *,
                  generators: Sequence[torch.Generator], eigen_solver: str = "auto", n_init: int = 10,
                  dtype: torch.dtype | None = None, tol: float | None = None,
                  check_connectivity: bool = True) -> BatchOutcome:
    """Spectral clustering of S graphs that share a layer layout, in one batched pass.

    Parameters
    ----------
    sizes : sequence of int
        Neurons per layer.
    blocks : sequence of (int, int, torch.Tensor of shape (S, n_src, n_dst))
        Non-negative weight stacks on the compute device; sample ``s`` of every stack is graph ``s``.
    n_clusters : int
    generators : sequence of S torch.Generator
        The randomness of each sample (eigensolver start, k-means++), drawn on the CPU.

    Returns
    -------
    BatchOutcome
        Labels (S, n) with −1 for each sample's own isolated neurons.

    Notes
    -----
    Isolated neurons are masked rather than removed, so the samples keep one shape; the result equals clustering
    each sample after its own isolated-neuron removal.
    """
    _check_common(n_clusters, eigen_solver, n_init)
    _check_dtype(dtype)
    blocks = list(blocks)
    if not blocks:
        raise ClusteringInputError("The graph has no edges, so every neuron is isolated; nothing to cluster.")
    if len(generators) != blocks[0][2].shape[0]:
        raise ClusteringInputError(f"Need one generator per sample: {len(generators)} for {blocks[0][2].shape[0]}.")
    sides = BlockGraph(sizes, [(s, d, w[0]) for s, d, w in blocks], validate=False).layer_sides()
    budget = _cpu_thread_budget(blocks[0][2].device)
    with _intra_op_threads(1 if budget else None):
        problem = _Layered(sizes, blocks, dtype or torch.float32, sides, budget)
        return _solve(problem, n_clusters, eigen_solver=eigen_solver, n_init=n_init, generators=generators,
                      dtype=dtype, tol=tol, check_connectivity=check_connectivity)


def _as_tensor_adjacency(matrix: Any) -> torch.Tensor:
    """A numpy array or scipy sparse matrix as a float64 torch tensor (sparse COO for sparse input)."""
    if sp.issparse(matrix):
        coo = sp.coo_matrix(matrix)
        idx = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64))
        return torch.sparse_coo_tensor(idx, torch.as_tensor(coo.data, dtype=torch.float64), coo.shape,
                                       check_invariants=False).coalesce()
    return torch.as_tensor(np.asarray(matrix), dtype=torch.float64)


def _prepare_matrix(adjacency: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a torch adjacency, move it, and drop its isolated neurons: (reduced, keep)."""
    if adjacency.dim() != 2 or adjacency.shape[0] != adjacency.shape[1]:
        raise ClusteringInputError(f"An adjacency must be square, got shape {tuple(adjacency.shape)}.")
    if adjacency.layout not in (torch.strided, torch.sparse_coo):
        adjacency = adjacency.to_sparse_coo()
    a = adjacency.to(device=device, dtype=torch.float64)
    if a.is_sparse:
        a = a.coalesce()
        values = a.values()
    else:
        values = a
    if not bool(torch.isfinite(values).all()):
        raise ClusteringInputError("The adjacency has non-finite entries (NaN or inf).")
    if bool((values < 0).any()):
        raise ClusteringInputError("The adjacency has negative entries; pass |W| (n-cut needs non-negative weights).")
    asym = (a - a.t()).coalesce().values() if a.is_sparse else a - a.T
    scale = float(values.abs().max()) if values.numel() else 0.0
    if asym.numel() and float(asym.abs().max()) > 1e-10 * max(scale, 1e-300):
        raise ClusteringInputError("The adjacency is not symmetric; pass A + Aᵀ (or a BlockGraph).")
    deg = torch.sparse.sum(a, 1).to_dense() if a.is_sparse else a.sum(1)
    keep = deg > 0
    if not bool(keep.all()):
        idx = torch.nonzero(keep).flatten()
        a = a.index_select(0, idx).index_select(1, idx).coalesce() if a.is_sparse else a[idx][:, idx]
    return a, keep


def _prepare(graph: Any, n_clusters: int, device: torch.device, dtype: torch.dtype,
             budget: int | None) -> tuple[Any, torch.Tensor, int, int]:
    """The eigenproblem of a single graph without its isolated neurons: (problem, keep, n_total, n_left)."""
    if hasattr(graph, "blocks") and hasattr(graph, "layers"):  # a loaders ModelGraph
        graph = BlockGraph.from_model_graph(graph)
    if isinstance(graph, BlockGraph):
        n_total = graph.n_nodes
        reduced, keep = graph.to(device).drop_isolated()
        n_left = reduced.n_nodes
    elif isinstance(graph, (torch.Tensor, np.ndarray)) or sp.issparse(graph):
        if not isinstance(graph, torch.Tensor):
            graph = _as_tensor_adjacency(graph)
        n_total = graph.shape[0]
        reduced_a, keep = _prepare_matrix(graph, device)
        n_left = reduced_a.shape[0]
    else:
        raise ClusteringInputError(f"spectral_clustering takes a BlockGraph, a ModelGraph or an adjacency matrix "
                                   f"(torch, numpy or scipy.sparse), got {type(graph).__name__}.")
    if n_left == 0:
        raise ClusteringInputError("The graph has no edges, so every neuron is isolated; nothing to cluster.")
    if n_clusters > n_left:
        raise ClusteringInputError(f"n_clusters={n_clusters} is more than the {n_left} neurons left after "
                                   f"dropping {n_total - n_left} isolated ones. Ask for fewer clusters.")
    if isinstance(graph, BlockGraph):
        blocks = [(s, d, w.unsqueeze(0)) for s, d, w in reduced.blocks if w.numel()]
        return _Layered(reduced.sizes, blocks, dtype, reduced.layer_sides(), budget), keep, n_total, n_left
    return _Matrix(reduced_a, dtype, budget), keep, n_total, n_left


def spectral_clustering(graph: BlockGraph | torch.Tensor | Any, n_clusters: int, *,
                        eigen_solver: EigenSolver = "auto", n_init: int | None = None,
                        random_state: int | np.random.SeedSequence | None = None, device: str | torch.device = "auto",
                        parity: bool = False, dtype: torch.dtype | None = None,
                        tol: float | None = None) -> SpectralResult:
    """Partition the neurons of a weighted graph by the relaxed normalised cut.

    Parameters
    ----------
    graph : BlockGraph, ModelGraph, or an adjacency of shape (n_nodes, n_nodes)
        A layered graph of |W| blocks, or a symmetric non-negative adjacency (torch dense or sparse, numpy,
        scipy.sparse). Isolated neurons (degree 0) are dropped first and labelled −1 (methods.md §1.1).
    n_clusters : int
        K, the number of clusters; at most the number of neurons left.
    eigen_solver : {"auto", "dense", "lanczos", "lobpcg"}, default "auto"
        "dense": a dense symmetric eigensolver (LAPACK ``?syevr`` for the wanted pairs on a CPU, batched
        ``torch.linalg.eigh`` on a GPU); "lanczos": restarted block Lanczos; "lobpcg": block LOBPCG; the two
        iterative solvers apply the blocks as dense matmuls, and fall back to dense on problems too small
        for a Krylov basis. "auto" takes dense up to a problem size of
        ``DENSE_MAX_SIZE`` (the smaller side of a bipartite graph, else all neurons), else lanczos.
    n_init : int, optional
        k-means restarts; default 10 (sklearn's), or the reference's 25/100 with ``parity=True``.
    random_state : int, numpy SeedSequence or None
        Seeds every random draw (made on the CPU): the same seed gives the same labels run to run on one device.
    device : {"auto", "cpu", "cuda"} or torch.device, default "auto"
    parity : bool, default False
        The reference's settings (methods.md §3): ``n_init = 100 if n_nodes > 2000 else 25`` and an embedding
        without row normalisation (neuronmap never normalises rows, so only n_init changes).
    dtype : torch.dtype, optional
        Force float32 or float64; by default float32 with a float64 retry when the eigen-residual exceeds 1e-3.
    tol : float, optional
        Residual at which the iterative solvers stop (default 1e-4 in float32, 1e-7 in float64).

    Returns
    -------
    SpectralResult

    Raises
    ------
    ClusteringInputError
        n_clusters larger than the neurons left, a negative, non-finite or asymmetric adjacency, an unknown solver.
    DeviceError
        device="cuda" without CUDA.

    Warns
    -----
    DisconnectedGraphWarning
        The graph (after isolated-neuron removal) has several connected components; clustering proceeds.

    Notes
    -----
    Same objective and pipeline as sklearn's ``SpectralClustering(affinity="precomputed", assign_labels="kmeans")``
    (the reference: methods.md §3); bench/cluster.py compares the two at equal n-cut. A feed-forward graph is
    bipartite (even against odd layers), so the spectrum of D^-½AD^-½ is symmetric about 0: the solvers ask for the
    largest *algebraic* eigenvalues, never by magnitude, which would also return vectors from the −1 end.

    References
    ----------
    Filan et al., "Clusterability in Neural Networks", 2021. Ng, Jordan & Weiss, 2001. Knyazev, 2001 (LOBPCG).
    """
    start = time.perf_counter()
    _check_common(n_clusters, eigen_solver, n_init)
    _check_dtype(dtype)
    dev = resolve_device(device)
    generator = torch_generator(seed_sequence(random_state))
    budget = _cpu_thread_budget(dev)
    with _intra_op_threads(1 if budget else None):
        problem, keep, n_total, n_left = _prepare(graph, n_clusters, dev, dtype or torch.float32, budget)
        n_init = reference_n_init(n_left) if parity else (n_init or 10)
        _sync(dev)
        prepare = time.perf_counter() - start
        out = _solve(problem, n_clusters, eigen_solver=eigen_solver, n_init=n_init, generators=[generator],
                     dtype=dtype, tol=tol, check_connectivity=True)
    labels = torch.full((n_total,), -1, dtype=torch.int64)
    labels[keep.cpu()] = out.labels[0].cpu()
    n_components = out.n_components[0]
    n_isolated = int(n_total - n_left)
    if n_components > 1:
        warnings.warn(DisconnectedGraphWarning(
            f"The graph has {n_components} connected components after dropping {n_isolated} isolated neurons; "
            "spectral clustering proceeds, but each component's clusters are found separately.", n_components),
            stacklevel=2)
    timings = {"prepare": prepare, **out.timings, "total": time.perf_counter() - start}
    return SpectralResult(labels=labels, n_clusters=n_clusters, eigenvalues=out.eigenvalues[0].cpu(),
                          eigen_residual=float(out.residual[0]), eigen_solver=out.eigen_solver, operator=out.operator,
                          dtype=str(out.dtype).removeprefix("torch."), device=str(dev), n_components=n_components,
                          n_isolated=n_isolated, n_init=n_init, inertia=float(out.inertia[0]),
                          n_matvecs=out.n_matvecs, timings=timings)
