"""Spectral clustering of neuron graphs on CPU or GPU (methods.md §3): one graph, or a batch of nulls at once.

The pipeline of sklearn's ``SpectralClustering(affinity="precomputed", assign_labels="kmeans")`` as the reference
calls it: drop the isolated neurons (label −1), take the top eigenpairs of M = D^-½AD^-½ (:mod:`.eigensolvers` on an
:mod:`.operators` problem, in float32 with a float64 retry when the residual is poor), embed U_i/√d_i and run
k-means (:mod:`.kmeans`). :func:`cluster_batch` does the same for S graphs that share one layer layout, masking each
graph's isolated neurons instead of dropping them. Every random draw comes from a per-graph CPU generator.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from neuronmap.device import RandomState, resolve_device, seed_sequence, torch_generator
from neuronmap.options import EigenSolver, choices
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.clustering.eigensolvers import EigenPairs, eigenpairs
from neuronmap.service.clustering.kmeans import kmeans_batched
from neuronmap.service.clustering.operators import EigenProblem, LayeredProblem, MatrixProblem
from neuronmap.service.clustering.threads import cpu_thread_budget, intra_op_threads
from neuronmap.service.errors import ClusteringInputError, DisconnectedGraphWarning

EIGEN_SOLVERS = choices(EigenSolver)

FALLBACK_RESIDUAL = 1e-3  # a float32 eigen-residual above this is recomputed in float64
DEFAULT_TOL = {torch.float32: 1e-4, torch.float64: 1e-7}  # iterative solvers stop at this residual
CONNECTIVITY_GAP = 1e-3  # μ₂ ≥ 1 − gap → count the connected components exactly


def _check_dtype(dtype: torch.dtype | None) -> None:
    if dtype not in (None, torch.float32, torch.float64):
        raise ClusteringInputError(f"dtype must be None, torch.float32 or torch.float64, got {dtype}.")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def _solve(
    problem: EigenProblem,
    n_clusters: int,
    *,
    eigen_solver: str,
    n_init: int,
    generators: Sequence[torch.Generator],
    dtype: torch.dtype | None,
    tol: float | None,
    check_connectivity: bool,
) -> BatchOutcome:
    device = problem.device
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    n_valid = problem.valid.sum(1)
    if int(n_valid.min()) < n_clusters:
        raise ClusteringInputError(
            f"n_clusters={n_clusters} is more than the {int(n_valid.min())} neurons left "
            "after dropping isolated ones. Ask for fewer clusters."
        )
    n_eig = min(max(n_clusters, 2), int(n_valid.min()))  # μ₂ tells whether the graph is connected
    first_dtype = dtype or torch.float32
    eig = eigenpairs(problem, n_eig, eigen_solver, generators, tol or DEFAULT_TOL[first_dtype])
    used_dtype = first_dtype
    if dtype is None and bool((eig.residual > FALLBACK_RESIDUAL).any()):
        eig = _retry_in_float64(problem, eig, n_eig, eigen_solver, generators, tol)
        used_dtype = torch.float64
    _sync(device)
    timings["eigen"] = time.perf_counter() - t0
    n_components = _components(problem, eig) if check_connectivity else [1] * problem.S

    t1 = time.perf_counter()
    kdtype = torch.float64 if dtype == torch.float64 else torch.float32
    embedding = (eig.vectors[:, :, :n_clusters] * problem.dinv.to(eig.vectors.dtype).unsqueeze(-1)).to(kdtype)
    labels, inertia, _ = kmeans_batched(
        embedding, problem.valid, n_clusters, n_init, generators, workers=problem.threads
    )
    _sync(device)
    timings["kmeans"] = time.perf_counter() - t1
    eigenvalues = (1 - eig.mu[:, :n_clusters].to(torch.float64)).clamp_min(0)
    return BatchOutcome(
        labels,
        eigenvalues,
        eig.residual.to(torch.float64),
        n_components,
        inertia,
        eig.solver,
        eig.operator,
        used_dtype,
        eig.applies,
        timings,
    )


def _retry_in_float64(
    problem: EigenProblem,
    eig: EigenPairs,
    n_eig: int,
    eigen_solver: str,
    generators: Sequence[torch.Generator],
    tol: float | None,
) -> EigenPairs:
    """The samples whose float32 residual is poor, solved again in float64 from their float32 vectors."""
    redo = torch.nonzero(eig.residual > FALLBACK_RESIDUAL).flatten()
    sub = problem.subset(redo).astype(torch.float64) if problem.S > 1 else problem.astype(torch.float64)
    gens = [generators[i] for i in redo.tolist()]
    eig64 = eigenpairs(
        sub, n_eig, eigen_solver, gens, tol or DEFAULT_TOL[torch.float64], warm=eig.vectors[redo].to(torch.float64)
    )
    vectors = eig.vectors.to(torch.float64)
    vectors[redo] = eig64.vectors
    mu = eig.mu.to(torch.float64)
    mu[redo] = eig64.mu
    residual = eig.residual.to(torch.float64)
    residual[redo] = eig64.residual
    return EigenPairs(mu, vectors, residual, eig64.solver, eig64.operator, eig.applies + eig64.applies)


def _components(problem: EigenProblem, eig: EigenPairs) -> list[int]:
    """Connected components per sample: counted exactly where the spectrum hints at several (μ₂ ≈ 1), else 1."""
    n_components = [1] * problem.S
    mu2 = eig.mu[:, 1] if eig.mu.shape[1] > 1 else torch.zeros(problem.S, device=problem.device)
    suspect = (mu2 >= 1 - CONNECTIVITY_GAP) | (eig.residual > FALLBACK_RESIDUAL)
    for s in torch.nonzero(suspect).flatten().tolist():
        n_components[s] = problem.n_components(s)
    return n_components


def _check_common(n_clusters: int, eigen_solver: str, n_init: int | None) -> None:
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
        raise ClusteringInputError(f"n_clusters must be a positive int, got {n_clusters!r}.")
    if eigen_solver not in EIGEN_SOLVERS:
        raise ClusteringInputError(f"Unknown eigen_solver {eigen_solver!r}; choose one of {', '.join(EIGEN_SOLVERS)}.")
    if n_init is not None and (not isinstance(n_init, (int, np.integer)) or n_init < 1):
        raise ClusteringInputError(f"n_init must be a positive int, got {n_init!r}.")


def cluster_batch(
    sizes: Sequence[int],
    blocks: Sequence[tuple[int, int, torch.Tensor]],
    n_clusters: int,
    *,
    generators: Sequence[torch.Generator],
    eigen_solver: EigenSolver = "auto",
    n_init: int = 10,
    dtype: torch.dtype | None = None,
    tol: float | None = None,
    check_connectivity: bool = True,
) -> BatchOutcome:
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
    budget = cpu_thread_budget(blocks[0][2].device)
    with intra_op_threads(1 if budget else None):
        problem = LayeredProblem(sizes, blocks, dtype or torch.float32, sides, budget)
        return _solve(
            problem,
            n_clusters,
            eigen_solver=eigen_solver,
            n_init=n_init,
            generators=generators,
            dtype=dtype,
            tol=tol,
            check_connectivity=check_connectivity,
        )


def _as_tensor_adjacency(matrix: Any) -> torch.Tensor:
    """A numpy array or scipy sparse matrix as a float64 torch tensor (sparse COO for sparse input)."""
    if sp.issparse(matrix):
        coo = sp.coo_matrix(matrix)
        idx = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64))
        return torch.sparse_coo_tensor(
            idx, torch.as_tensor(coo.data, dtype=torch.float64), coo.shape, check_invariants=False
        ).coalesce()
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


def _prepare(
    graph: Any, n_clusters: int, device: torch.device, dtype: torch.dtype, budget: int | None
) -> tuple[EigenProblem, torch.Tensor, int, int]:
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
        raise ClusteringInputError(
            f"spectral_clustering takes a BlockGraph, a ModelGraph or an adjacency matrix "
            f"(torch, numpy or scipy.sparse), got {type(graph).__name__}."
        )
    if n_left == 0:
        raise ClusteringInputError("The graph has no edges, so every neuron is isolated; nothing to cluster.")
    if n_clusters > n_left:
        raise ClusteringInputError(
            f"n_clusters={n_clusters} is more than the {n_left} neurons left after "
            f"dropping {n_total - n_left} isolated ones. Ask for fewer clusters."
        )
    if isinstance(graph, BlockGraph):
        blocks = [(s, d, w.unsqueeze(0)) for s, d, w in reduced.blocks if w.numel()]
        return LayeredProblem(reduced.sizes, blocks, dtype, reduced.layer_sides(), budget), keep, n_total, n_left
    return MatrixProblem(reduced_a, dtype, budget), keep, n_total, n_left


def spectral_clustering(
    graph: BlockGraph | torch.Tensor | Any,
    n_clusters: int,
    *,
    eigen_solver: EigenSolver = "auto",
    n_init: int | None = None,
    random_state: RandomState = None,
    device: str | torch.device = "auto",
    parity: bool = False,
    dtype: torch.dtype | None = None,
    tol: float | None = None,
) -> SpectralResult:
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
    budget = cpu_thread_budget(dev)
    with intra_op_threads(1 if budget else None):
        problem, keep, n_total, n_left = _prepare(graph, n_clusters, dev, dtype or torch.float32, budget)
        n_init = reference_n_init(n_left) if parity else (n_init or 10)
        _sync(dev)
        prepare = time.perf_counter() - start
        out = _solve(
            problem,
            n_clusters,
            eigen_solver=eigen_solver,
            n_init=n_init,
            generators=[generator],
            dtype=dtype,
            tol=tol,
            check_connectivity=True,
        )
    timings = {"prepare": prepare, **out.timings}
    return _single_result(out, keep, n_total - n_left, n_clusters, n_init, dev, timings, start)


def _single_result(
    out: BatchOutcome,
    keep: torch.Tensor,
    n_isolated: int,
    n_clusters: int,
    n_init: int,
    device: torch.device,
    timings: dict[str, float],
    start: float,
) -> SpectralResult:
    """The one graph of ``out`` as a SpectralResult, labels in the input's order; warns when it is disconnected."""
    labels = torch.full((keep.shape[0],), -1, dtype=torch.int64)
    labels[keep.cpu()] = out.labels[0].cpu()
    n_components = out.n_components[0]
    if n_components > 1:
        warnings.warn(
            DisconnectedGraphWarning(
                f"The graph has {n_components} connected components after dropping {n_isolated} isolated neurons; "
                "spectral clustering proceeds, but each component's clusters are found separately.",
                n_components,
            ),
            stacklevel=3,
        )  # the caller of spectral_clustering
    timings = {**timings, "total": time.perf_counter() - start}
    return SpectralResult(
        labels=labels,
        n_clusters=n_clusters,
        eigenvalues=out.eigenvalues[0].cpu(),
        eigen_residual=float(out.residual[0]),
        eigen_solver=out.eigen_solver,
        operator=out.operator,
        dtype=str(out.dtype).removeprefix("torch."),
        device=str(device),
        n_components=n_components,
        n_isolated=n_isolated,
        n_init=n_init,
        inertia=float(out.inertia[0]),
        n_matvecs=out.n_matvecs,
        timings=timings,
    )
