"""Is a network more clusterable than its shuffles? The real n-cut against a null of shuffled networks.

methods.md §4: shuffle every weight block of the (isolated-neuron-free) network, drop each shuffled network's own
isolated neurons, cluster it from scratch with the same K, and compare n-cuts. The nulls are reproducible from one
seed and are clustered in batches on the device: the shuffled blocks of a chunk of samples are stacked to
(S, n_src, n_dst), and one batched eigensolver and one batched k-means handle the whole chunk.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from neuronmap.device import RandomState, numpy_generator, resolve_device, sample_seeds, seed_sequence, torch_generator
from neuronmap.options import EigenSolver, NullMethod, UpperTriangleMethod, choices
from neuronmap.service.clustering.activation_nulls import upper_triangle_null_stacks
from neuronmap.service.clustering.blockgraph import Block, BlockGraph
from neuronmap.service.clustering.ncut import ncut as ncut_of
from neuronmap.service.clustering.ncut import ncut_batched_blocks
from neuronmap.service.clustering.shuffles import is_shuffle_method, shuffled_block_stacks
from neuronmap.service.clustering.spectral import (
    EIGEN_SOLVERS,
    SpectralResult,
    cluster_batch,
    reference_n_init,
    spectral_clustering,
)
from neuronmap.service.errors import ClusteringInputError, DisconnectedGraphWarning
from neuronmap.service.stats import percentile_pvalue, z_score

if TYPE_CHECKING:
    from neuronmap.loaders.records import ModelGraph

NULL_METHODS = choices(NullMethod)
# Activation graphs (methods.md §2) are complete over all units, so their null permutes the whole upper triangle.
_UPPER_TRIANGLE_NULLS: dict[str, UpperTriangleMethod] = {"upper_triangle": "all", "upper_triangle_nonzero": "nonzero"}

CPU_BATCH_BYTES = 2 << 30  # working memory one chunk of nulls may use on the CPU
GPU_BATCH_FRACTION = 0.5  # … and on a GPU, as a fraction of its free memory


@dataclass(frozen=True)
class ClusterabilityResult:
    """The real network's n-cut, its null distribution and the statistics of methods.md §4.

    Attributes
    ----------
    ncut : float
        n-cut of the real network's spectral clustering.
    null_ncuts : torch.Tensor of shape (n_shuffles,), float64, CPU
        n-cut of each shuffled network's own clustering, in sample order.
    mean, sd : float
        Of the null n-cuts; sd is the population sd (ddof=0), as the reference.
    z_score : float
        (ncut − mean)/sd; NaN when sd is 0.
    p_value : float
        (#{null < ncut} + 1)/(n_shuffles + 1): the one-sided permutation p-value, small when the network is
        clusterable (methods.md §4).
    entropy : int
        The root seed: ``random_state`` if given, else the fresh entropy drawn, so the run can be repeated.
    """

    ncut: float
    labels: torch.Tensor
    null_ncuts: torch.Tensor
    mean: float
    sd: float
    z_score: float
    p_value: float
    n_clusters: int
    n_shuffles: int
    method: str
    entropy: int
    n_init: int
    eigen_solver: str
    device: str
    n_disconnected_nulls: int
    max_null_residual: float
    spectral: SpectralResult
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Nulls:
    """The null samples' n-cuts and what clustering them took."""

    ncuts: torch.Tensor  # (n_shuffles,) float64, CPU
    residuals: torch.Tensor  # (n_shuffles,) float64, CPU
    disconnected: int
    solvers: set[str]
    timings: dict[str, float]


def _bytes_per_sample(graph: BlockGraph, n_init: int, n_clusters: int, itemsize: int) -> int:
    entries = sum(w.numel() for _, _, w in graph.blocks)
    sides = graph.layer_sides()
    if sides is not None:
        side_sizes = [sum(s for s, side in zip(graph.sizes, sides) if side == c) for c in (0, 1)]
        eig_size = min(side_sizes)
    else:
        eig_size = graph.n_nodes
    blocks = entries * (itemsize + 4 + 8 + 8)  # raw stack, normalised float32, permutation, float64 n-cut copy
    dense = 3 * 4 * eig_size * eig_size  # a dense Gram (or M), its eigenvectors and LAPACK's workspace
    kmeans = 4 * n_init * graph.n_nodes * (2 * max(n_clusters, 2) + 4 * max(n_clusters, 2) + 8)
    return blocks + dense + kmeans


def _chunk_size(graph: BlockGraph, n_init: int, n_clusters: int, device: torch.device, n_shuffles: int) -> int:
    per_sample = _bytes_per_sample(graph, n_init, n_clusters, graph.dtype.itemsize)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(free * GPU_BATCH_FRACTION)
    else:
        budget = CPU_BATCH_BYTES
    return int(max(1, min(n_shuffles, 64, budget // max(per_sample, 1))))


def _null_stacks(graph: BlockGraph, method: str, rngs: list[np.random.Generator]) -> list[Block]:
    if is_shuffle_method(method):
        return shuffled_block_stacks(graph, method, rngs)
    return upper_triangle_null_stacks(graph, rngs, method=_UPPER_TRIANGLE_NULLS[method])


def _check_inputs(graph: object, n_shuffles: int, method: str, eigen_solver: str, batch_size: int | None) -> BlockGraph:
    """Validate the arguments; the graph as a BlockGraph."""
    if isinstance(n_shuffles, bool) or not isinstance(n_shuffles, (int, np.integer)) or n_shuffles < 1:
        raise ClusteringInputError(f"n_shuffles must be a positive int, got {n_shuffles!r}.")
    if method not in NULL_METHODS:
        raise ClusteringInputError(f"Unknown shuffle method {method!r}; choose one of {', '.join(NULL_METHODS)}.")
    if eigen_solver not in EIGEN_SOLVERS:
        raise ClusteringInputError(f"Unknown eigen_solver {eigen_solver!r}; choose one of {', '.join(EIGEN_SOLVERS)}.")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ClusteringInputError(f"batch_size must be a positive int, got {batch_size!r}.")
    if not isinstance(graph, BlockGraph) and hasattr(graph, "blocks") and hasattr(graph, "layers"):  # a ModelGraph
        graph = BlockGraph.from_model_graph(cast("ModelGraph", graph))
    if not isinstance(graph, BlockGraph):
        raise ClusteringInputError(
            f"clusterability takes a BlockGraph or a ModelGraph, got {type(graph).__name__}; "
            "shuffles are defined per weight block."
        )
    return graph


def clusterability(
    graph: BlockGraph | ModelGraph,
    n_clusters: int,
    n_shuffles: int = 200,
    *,
    method: NullMethod = "layer",
    random_state: RandomState = None,
    device: str | torch.device = "auto",
    eigen_solver: EigenSolver = "auto",
    n_init: int | None = None,
    parity: bool = False,
    dtype: torch.dtype | None = None,
    batch_size: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> ClusterabilityResult:
    """Cluster a network and ``n_shuffles`` shuffled copies of it; report where its n-cut falls in the null.

    Parameters
    ----------
    graph : BlockGraph or ModelGraph
        The network's |W| blocks. Isolated neurons are dropped before shuffling (methods.md §4).
    n_clusters : int
        K, the same for the network and every null.
    n_shuffles : int, default 200
        Null samples; the smallest possible p-value is 1/(n_shuffles + 1).
    method : {"layer", "layer_nonzero", "upper_triangle", "upper_triangle_nonzero"}, default "layer"
        Weight graphs: see :mod:`.shuffles`. Activation graphs: a permutation of every upper-triangle entry (or of
        the non-zero ones), see :mod:`.activation_nulls` (methods.md §4.1).
    random_state : int, numpy SeedSequence or None
        Root seed. The real clustering uses it as :func:`spectral_clustering` would; null ``i`` uses child ``i``
        of ``SeedSequence(random_state)`` for both its permutations and its clustering.
    device, eigen_solver, n_init, parity, dtype
        As :func:`.spectral.spectral_clustering`; the nulls use the same settings.
    batch_size : int, optional
        Nulls per batch; default: as many as fit in about 2 GiB on the CPU, or half the free GPU memory (≤ 64).
    on_batch : callable(done, total), optional
        Called after every batch of nulls with the nulls clustered so far and ``n_shuffles``, for progress bars
        (``run_clustering`` turns it into ``on_progress("shuffles", done, total)``).

    Returns
    -------
    ClusterabilityResult

    Warns
    -----
    DisconnectedGraphWarning
        When the network, or any shuffled network, is disconnected (one warning for all the nulls).
    """
    start = time.perf_counter()
    graph = _check_inputs(graph, n_shuffles, method, eigen_solver, batch_size)
    dev = resolve_device(device)
    root = seed_sequence(random_state)
    graph = graph.to(dev)

    real = spectral_clustering(
        graph,
        n_clusters,
        eigen_solver=eigen_solver,
        n_init=n_init,
        random_state=root,
        device=dev,
        parity=parity,
        dtype=dtype,
    )
    real_ncut = ncut_of(graph, real.labels.to(dev), n_clusters=n_clusters)
    t_real = time.perf_counter() - start

    reduced, _ = graph.drop_isolated()
    reduced = BlockGraph(reduced.sizes, [(s, d, w) for s, d, w in reduced.blocks if w.numel()], validate=False)
    seeds = sample_seeds(root, n_shuffles)
    chunk = batch_size or _chunk_size(reduced, real.n_init, n_clusters, dev, n_shuffles)
    nulls = _cluster_nulls(
        reduced,
        n_clusters,
        method,
        seeds,
        chunk,
        eigen_solver=eigen_solver,
        n_init=real.n_init,
        dtype=dtype,
        on_batch=on_batch,
    )
    if nulls.disconnected:
        warnings.warn(
            DisconnectedGraphWarning(
                f"{nulls.disconnected} of {n_shuffles} shuffled networks are disconnected (after dropping their "
                "isolated neurons); they were clustered anyway, as the reference does.",
                nulls.disconnected,
            ),
            stacklevel=2,
        )

    values = nulls.ncuts.numpy()
    timings = {"real": t_real, **nulls.timings, "total": time.perf_counter() - start}
    # The root comes from an int or from fresh entropy, so its entropy is an int.
    entropy = int(cast(int, root.entropy)) if root.entropy is not None else 0
    return ClusterabilityResult(
        ncut=real_ncut,
        labels=real.labels,
        null_ncuts=nulls.ncuts,
        mean=float(values.mean()),
        sd=float(values.std(ddof=0)),
        z_score=z_score(real_ncut, values),
        p_value=percentile_pvalue(real_ncut, values, "less"),
        n_clusters=n_clusters,
        n_shuffles=n_shuffles,
        method=method,
        entropy=entropy,
        n_init=real.n_init,
        eigen_solver="/".join(sorted(nulls.solvers | {real.eigen_solver})),
        device=str(dev),
        n_disconnected_nulls=int(nulls.disconnected),
        max_null_residual=float(nulls.residuals.max()) if n_shuffles else math.nan,
        spectral=real,
        timings=timings,
    )


def null_ncuts(
    graph: BlockGraph | ModelGraph,
    n_clusters: int,
    n_shuffles: int,
    *,
    start: int = 0,
    stop: int | None = None,
    method: NullMethod = "layer",
    random_state: int = 0,
    device: str | torch.device = "auto",
    eigen_solver: EigenSolver = "auto",
    n_init: int | None = None,
    parity: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Nulls ``start`` to ``stop`` of the ``n_shuffles`` that :func:`clusterability` clusters with the same
    arguments, as its ``null_ncuts[start:stop]``: a null split into chunks runs on several workers and is merged.

    ``random_state`` must be an int (fresh entropy would differ between the chunks).
    """
    graph = _check_inputs(graph, n_shuffles, method, eigen_solver, None)
    if random_state is None:
        raise ClusteringInputError("A null split into chunks needs an int random_state, got None.")
    dev = resolve_device(device)
    reduced, _ = graph.to(dev).drop_isolated()
    reduced = BlockGraph(reduced.sizes, [(s, d, w) for s, d, w in reduced.blocks if w.numel()], validate=False)
    n_init = reference_n_init(reduced.n_nodes) if parity else (n_init or 10)  # as the real clustering's
    seeds = sample_seeds(seed_sequence(random_state), n_shuffles)[start:stop]
    if not seeds:
        return torch.empty(0, dtype=torch.float64)
    chunk = _chunk_size(reduced, n_init, n_clusters, dev, len(seeds))
    nulls = _cluster_nulls(
        reduced, n_clusters, method, seeds, chunk, eigen_solver=eigen_solver, n_init=n_init, dtype=dtype, on_batch=None
    )
    return nulls.ncuts


def _cluster_nulls(
    reduced: BlockGraph,
    n_clusters: int,
    method: str,
    seeds: Sequence[np.random.SeedSequence],
    chunk: int,
    *,
    eigen_solver: EigenSolver,
    n_init: int,
    dtype: torch.dtype | None,
    on_batch: Callable[[int, int], None] | None,
) -> _Nulls:
    """Shuffle and cluster the nulls in chunks of ``chunk`` samples, sample ``i`` from ``seeds[i]``."""
    n_shuffles = len(seeds)
    null = torch.empty(n_shuffles, dtype=torch.float64)
    residuals = torch.empty(n_shuffles, dtype=torch.float64)
    disconnected = 0
    solvers: set[str] = set()
    timings = {"shuffle": 0.0, "eigen": 0.0, "kmeans": 0.0, "ncut": 0.0}
    for lo in range(0, n_shuffles, chunk):
        hi = min(n_shuffles, lo + chunk)
        t0 = time.perf_counter()
        stacks = _null_stacks(reduced, method, [numpy_generator(seed) for seed in seeds[lo:hi]])
        timings["shuffle"] += time.perf_counter() - t0
        outcome = cluster_batch(
            reduced.sizes,
            stacks,
            n_clusters,
            generators=[torch_generator(seed) for seed in seeds[lo:hi]],
            eigen_solver=eigen_solver,
            n_init=n_init,
            dtype=dtype,
        )
        timings["eigen"] += outcome.timings["eigen"]
        timings["kmeans"] += outcome.timings["kmeans"]
        t1 = time.perf_counter()
        null[lo:hi] = ncut_batched_blocks(reduced.sizes, stacks, outcome.labels, n_clusters).cpu()
        timings["ncut"] += time.perf_counter() - t1
        residuals[lo:hi] = outcome.residual.cpu()
        disconnected += sum(c > 1 for c in outcome.n_components)
        solvers.add(outcome.eigen_solver)
        del stacks, outcome
        if on_batch is not None:
            on_batch(hi, n_shuffles)
    return _Nulls(null, residuals, disconnected, solvers, timings)
