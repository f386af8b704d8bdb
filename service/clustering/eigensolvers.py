"""Eigensolvers for the top algebraic eigenpairs of M (methods.md §3.2), batched over the samples of a problem.

Dense (LAPACK's MRRR on a CPU, batched ``eigh`` on a GPU), restarted block Lanczos, or LOBPCG, on M or on the Gram
matrix BᵀB of a bipartite graph (methods.md §3.1). Every random start is drawn on the CPU from the sample's
generator, so a seed gives the same start on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits

from neuronmap.service.clustering.operators import EigenProblem, GramProblem
from neuronmap.service.clustering.threads import map_independent

Apply = Callable[[torch.Tensor], torch.Tensor]  # a block product x (S, size, b) → A x

# "auto" solves densely when the eigenproblem (the Gram side, or the whole graph) is at most this big: about where
# dense and Lanczos cost the same (bench/cluster.py).
DENSE_MAX_SIZE = 1000
GRAM_MIN_SIGMA = 1e-3  # the Gram reduction needs σ_k clearly above 0
ORTHO_CANCELLATION = 1e-2  # a column that keeps less of its norm than this after projection is projected again


def _randn(
    generators: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """One draw per generator (on the CPU, so a seed gives the same numbers on every device), stacked."""
    out = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in generators])
    return out.to(device=device, dtype=dtype)


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


def _rayleigh_ritz(
    basis: torch.Tensor, abasis: torch.Tensor, b: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-b Ritz pairs on an orthonormal basis (S, n, m) with its products; returns x, ax, theta, coefficients."""
    t = basis.mT @ abasis
    t = ((t + t.mT) / 2).to(torch.float64)  # the small problem in float64: it is cheap, and ties are common
    evals, evecs = torch.linalg.eigh(t)
    top = evecs[:, :, -b:].flip(-1).to(basis.dtype)  # (S, m, b), descending
    theta = evals[:, -b:].flip(-1).to(basis.dtype)
    return basis @ top, abasis @ top, theta, top


def _block_krylov(
    make_apply: Callable[[torch.Tensor | None], Apply],
    x0: torch.Tensor,
    n_want: int,
    *,
    method: str,
    tol: float,
    max_applies: int,
    depth: int,
    gram: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The top-``b`` algebraic eigenpairs of a batch of symmetric operators, ``b = x0.shape[2]``.

    ``method="lanczos"``: restarted block Lanczos with full reorthogonalisation (a block Krylov basis of depth
    ``depth`` grown from the current Ritz block, then Rayleigh–Ritz on all of it), restarted thick: up to ``b``
    further Ritz vectors stay in the next basis. ``method="lobpcg"``: Rayleigh–Ritz on [X, R, P] each step
    (Knyazev's LOBPCG, orthonormalised basis). ``make_apply(active)`` gives the product of the samples ``active``
    (None: all). Every product is computed explicitly, so Rayleigh–Ritz is exact on the basis. A sample stops once
    its first ``n_want`` residual norms are ≤ tol (or the product budget is spent); finished samples are compacted
    out of the batch. With ``gram=True`` the operator is BᵀB and the test is on the residual of M that its pairs
    lift to, ‖BᵀBv − σ²v‖ / (σ√2).

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
            basis, abasis = _lanczos_basis(apply, x, ax, b, depth)
            applies += depth
        else:
            basis, abasis = _lobpcg_basis(apply, x, ax, theta, p)
            applies += 1 if p is None else 2
        x, ax, theta, top = _rayleigh_ritz(basis, abasis, keep)
        if method == "lobpcg":
            p = basis[:, :, b:] @ top[:, b:, :]  # the step taken outside span(X): LOBPCG's search direction
    return theta_out, v_out, res_out, applies


def _lanczos_basis(
    apply: Apply, x: torch.Tensor, ax: torch.Tensor, b: int, depth: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[kept Ritz vectors | ``depth`` blocks grown from A·X_block] and its products (``depth`` block products)."""
    # Written into one buffer (no growing concatenation).
    width = x.shape[2]
    basis = x.new_empty(x.shape[0], x.shape[1], width + depth * b)
    abasis = torch.empty_like(basis)
    basis[:, :, :width], abasis[:, :, :width] = x, ax
    grow, cols = ax[:, :, :b], width
    for _ in range(depth):
        q = _orthonormalize(grow, basis[:, :, :cols])
        grow = apply(q)
        basis[:, :, cols : cols + b], abasis[:, :, cols : cols + b] = q, grow
        cols += b
    return basis, abasis


def _lobpcg_basis(
    apply: Apply, x: torch.Tensor, ax: torch.Tensor, theta: torch.Tensor, p: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """LOBPCG's [X, R, P] and its products (one block product, two with a search direction P)."""
    rq = _orthonormalize(ax - x * theta.unsqueeze(1), x)
    parts, aparts = [x, rq], [ax, apply(rq)]
    if p is not None:
        pq = _orthonormalize(p, torch.cat(parts, 2))
        parts.append(pq)
        aparts.append(apply(pq))
    return torch.cat(parts, 2), torch.cat(aparts, 2)


@dataclass
class EigenPairs:
    """The top eigenpairs of M for every sample of a problem."""

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

    On the CPU, LAPACK's MRRR (``?syevr``) computes only the wanted eigenvectors, faster than the full ``eigh`` for
    the sizes used here; on a GPU, the batched full ``eigh`` is the fast path.
    """
    size = mat.shape[-1]
    if mat.device.type == "cpu" and n_eig < size // 4:

        def top(one: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            w, v = scipy.linalg.eigh(
                one, subset_by_index=[size - n_eig, size - 1], driver="evr", overwrite_a=True, check_finite=False
            )
            return w[::-1].copy(), v[:, ::-1].copy()

        if mat.shape[0] > 1:
            pairs = map_independent(top, list(mat.numpy()), mat.device, workers)
        else:
            with threadpool_limits(limits=1):  # LAPACK's many small BLAS-2 steps: one thread is as fast, and robust
                pairs = [top(mat[0].numpy())]
        return torch.from_numpy(np.stack([w for w, _ in pairs])), torch.from_numpy(np.stack([v for _, v in pairs]))
    evals, evecs = torch.linalg.eigh(mat)
    return evals[:, -n_eig:].flip(-1), evecs[:, :, -n_eig:].flip(-1)


def eigenpairs(
    problem: EigenProblem,
    n_eig: int,
    solver: str,
    generators: Sequence[torch.Generator],
    tol: float,
    *,
    allow_gram: bool = True,
    warm: torch.Tensor | None = None,
) -> EigenPairs:
    """The top ``n_eig`` algebraic eigenpairs of M for every sample of ``problem``.

    ``solver`` is an :data:`~neuronmap.options.EigenSolver`; ``tol`` the residual at which the iterative solvers
    stop; ``warm`` (S, n, ≤ block) vectors to start them from (the float64 retry starts from the float32 ones).
    """
    gram = problem.gram_form(n_eig) if allow_gram else None
    size = problem.n if gram is None else gram.n_small
    b = min(_block_size(n_eig), size)
    how = _resolve_solver(solver, size, b)
    applies = 0
    if how == "dense":
        lam, vec = _dense_top(problem.m_dense() if gram is None else gram.gram_dense(), n_eig, problem.threads)
    else:
        lam, vec, krylov_residual, applies = _iterative_top(problem, gram, n_eig, how, b, generators, tol, warm)
    if gram is not None:
        sigma = lam.clamp_min(0).sqrt()
        if float(sigma[:, -1].min()) < GRAM_MIN_SIGMA:  # σ_k ≈ 0: the Gram side cannot give k vectors
            return eigenpairs(problem, n_eig, solver, generators, tol, allow_gram=False, warm=warm)
        vectors, mu = gram.lift(vec, sigma), sigma
    else:
        vectors, mu = vec, lam
    if how == "dense":
        residual = (problem.m_apply(vectors) - vectors * mu.unsqueeze(1)).norm(dim=1).amax(1)
    else:
        residual = krylov_residual
    return EigenPairs(mu, vectors, residual, how, "adjacency" if gram is None else "gram", applies)


def _start_block(
    problem: EigenProblem,
    gram: GramProblem | None,
    b: int,
    generators: Sequence[torch.Generator],
    warm: torch.Tensor | None,
) -> torch.Tensor:
    """The iterative solvers' first block (S, size, b): ``warm`` filled up with random vectors, or the known top
    eigenvector √d (eigenvalue 1 of M and of BᵀB) and random ones."""
    size = problem.n if gram is None else gram.n_small
    if warm is not None:
        x0 = (warm if gram is None else warm[:, gram.small_idx]).to(problem.dtype)
        if x0.shape[2] < b:
            extra = _randn(generators, (size, b - x0.shape[2]), problem.device, problem.dtype)
            x0 = torch.cat([x0, extra], 2)
        return x0
    x0 = _randn(generators, (size, b), problem.device, problem.dtype)
    sd = problem.sqrt_deg if gram is None else problem.sqrt_deg[:, gram.small_idx]
    x0[:, :, 0] = sd.to(problem.dtype)
    return x0


def _iterative_top(
    problem: EigenProblem,
    gram: GramProblem | None,
    n_eig: int,
    how: str,
    b: int,
    generators: Sequence[torch.Generator],
    tol: float,
    warm: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Top pairs of M, or of BᵀB when ``gram`` is given, by block Lanczos or LOBPCG: (λ, vectors, residual, applies)."""
    size = problem.n if gram is None else gram.n_small
    depth = _krylov_depth(size, b)
    x0 = _start_block(problem, gram, b, generators, warm)
    problem.prepare_products()

    def make_apply(idx: torch.Tensor | None) -> Apply:
        if gram is not None:
            return (gram if idx is None else gram.subset(idx)).gram_apply
        return (problem if idx is None else problem.subset(idx)).m_apply

    max_applies = 60 * (depth + 1) if how == "lanczos" else 600
    theta, vec, res, applies = _block_krylov(
        make_apply, x0, n_eig, method=how, tol=tol, max_applies=max_applies, depth=depth, gram=gram is not None
    )
    # The solvers' own residuals are those of M (for the Gram operator, of the lifted pairs), from products made
    # explicitly: no need to spend another product on checking them.
    return theta[:, :n_eig], vec[:, :, :n_eig], res[:, :n_eig].amax(1), applies
