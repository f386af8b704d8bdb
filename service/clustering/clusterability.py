"""Is a network more clusterable than its shuffles? The real n-cut against a null of shuffled networks.

methods.md §4: shuffle every weight block of the (isolated-neuron-free) network, drop each shuffled network's own
isolated neurons, cluster it from scratch with the same K, and compare n-cuts. Unlike the reference, the nulls are
reproducible from one seed and are clustered in batches on the device: the shuffled blocks of a chunk of samples
are stacked to (S, n_src, n_dst), and one batched eigensolver and one batched k-means handle the whole chunk.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from neuronmap.device import numpy_generator, resolve_device, sample_seeds, seed_sequence, torch_generator
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.errors import ClusteringInputError, DisconnectedGraphWarning
from neuronmap.service.clustering.ncut import ncut as ncut_of
from neuronmap.service.clustering.ncut import ncut_batched_blocks
from neuronmap.service.clustering.shuffles import SHUFFLE_METHODS, ShuffleMethod, shuffled_block_stacks
from neuronmap.service.clustering.spectral import EIGEN_SOLVERS, SpectralResult, cluster_batch, spectral_clustering
from neuronmap.service.stats import percentile_pvalue, z_score

# Activation graphs (methods.md §2) are complete over all units, so their null permutes the whole upper triangle.
UPPER_TRIANGLE_METHODS = {"upper_triangle": "all", "upper_triangle_nonzero": "nonzero"}
NULL_METHODS: tuple[str, ...] = SHUFFLE_METHODS + tuple(UPPER_TRIANGLE_METHODS)

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
    percentile : float
        (#{null < ncut} + 1)/(n_shuffles + 1): the one-sided p-value, small when the network is clusterable.
    entropy : int
        The root seed: ``random_state`` if given, else the fresh entropy drawn, so the run can be repeated.
    """

    ncut: float
    labels: torch.Tensor
    null_ncuts: torch.Tensor
    mean: float
    sd: float
    z_score: float
    percentile: float
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


def _null_stacks(graph: BlockGraph, method: str, rngs: list[np.random.Generator]) -> list[tuple[int, int, torch.Tensor]]:
    if method in UPPER_TRIANGLE_METHODS:
        from neuronmap.service.clustering.activation_nulls import upper_triangle_null_stacks

        return upper_triangle_null_stacks(graph, rngs, method=UPPER_TRIANGLE_METHODS[method])  # type: ignore[arg-type]
    return shuffled_block_stacks(graph, method, rngs)  # type: ignore[arg-type]


def clusterability(graph: BlockGraph | Any, n_clusters: int, n_shuffles: int = 200, *,
                   method: ShuffleMethod = "layer", random_state: int | np.random.SeedSequence | None = None,
                   device: str | torch.device = "auto", eigen_solver: str = "auto", n_init: int | None = None,
                   parity: bool = False, dtype: torch.dtype | None = None, batch_size: int | None = None,
                   on_batch: Callable[[int, int], None] | None = None) -> ClusterabilityResult:
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
        Weight graphs: see :mod:`neuronmap.service.shuffles`. Activation graphs: a permutation of every
        upper-triangle entry (or of the non-zero ones), see :mod:`neuronmap.service.activation_nulls`.
    random_state : int, numpy SeedSequence or None
        Root seed. The real clustering uses it as :func:`spectral_clustering` would; null ``i`` uses child ``i``
        of ``SeedSequence(random_state)`` for both its permutations and its clustering.
    device, eigen_solver, n_init, parity, dtype
        As :func:`neuronmap.service.spectral.spectral_clustering`; the nulls use the same settings.
    batch_size : int, optional
        Nulls per batch; default: as many as fit in about 2 GiB on the CPU, or half the free GPU memory (≤ 64).
    on_batch : callable(done, total), optional
        Called after every batch, for progress bars.

    Returns
    -------
    ClusterabilityResult

    Warns
    -----
    DisconnectedGraphWarning
        When the network, or any shuffled network, is disconnected (one warning for all the nulls).
    """
    start = time.perf_counter()
    if isinstance(n_shuffles, bool) or not isinstance(n_shuffles, (int, np.integer)) or n_shuffles < 1:
        raise ClusteringInputError(f"n_shuffles must be a positive int, got {n_shuffles!r}.")
    if method not in NULL_METHODS:
        raise ClusteringInputError(f"Unknown shuffle method {method!r}; choose one of {', '.join(NULL_METHODS)}.")
    if eigen_solver not in EIGEN_SOLVERS:
        raise ClusteringInputError(f"Unknown eigen_solver {eigen_solver!r}; choose one of {', '.join(EIGEN_SOLVERS)}.")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ClusteringInputError(f"batch_size must be a positive int, got {batch_size!r}.")
    if hasattr(graph, "blocks") and hasattr(graph, "layers"):  # a loaders ModelGraph
        graph = BlockGraph.from_model_graph(graph)
    if not isinstance(graph, BlockGraph):
        raise ClusteringInputError(f"clusterability takes a BlockGraph or a ModelGraph, got {type(graph).__name__}; "
                                   "shuffles are defined per weight block.")
    dev = resolve_device(device)
    root = seed_sequence(random_state)
    graph = graph.to(dev)

    real = spectral_clustering(graph, n_clusters, eigen_solver=eigen_solver, n_init=n_init, random_state=root,
                               device=dev, parity=parity, dtype=dtype)
    real_ncut = ncut_of(graph, real.labels.to(dev), n_clusters=n_clusters)
    t_real = time.perf_counter() - start

    reduced, _ = graph.drop_isolated()
    reduced = BlockGraph(reduced.sizes, [(s, d, w) for s, d, w in reduced.blocks if w.numel()], validate=False)
    null_init = real.n_init
    seeds = sample_seeds(root, n_shuffles)
    chunk = batch_size or _chunk_size(reduced, null_init, n_clusters, dev, n_shuffles)
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
        outcome = cluster_batch(reduced.sizes, stacks, n_clusters, generators=[torch_generator(seed) for seed in
                                                                                seeds[lo:hi]],
                                eigen_solver=eigen_solver, n_init=null_init, dtype=dtype)
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
    if disconnected:
        warnings.warn(DisconnectedGraphWarning(
            f"{disconnected} of {n_shuffles} shuffled networks are disconnected (after dropping their isolated "
            "neurons); they were clustered anyway, as the reference does.", disconnected), stacklevel=2)

    values = null.numpy()
    timings = {"real": t_real, **timings, "total": time.perf_counter() - start}
    return ClusterabilityResult(
        ncut=real_ncut, labels=real.labels, null_ncuts=null, mean=float(values.mean()),
        sd=float(values.std(ddof=0)), z_score=z_score(real_ncut, values),
        percentile=percentile_pvalue(real_ncut, values, "less"), n_clusters=n_clusters, n_shuffles=n_shuffles,
        method=method, entropy=int(root.entropy) if root.entropy is not None else 0, n_init=null_init,
        eigen_solver="/".join(sorted(solvers | {real.eigen_solver})), device=str(dev),
        n_disconnected_nulls=int(disconnected), max_null_residual=float(residuals.max()) if n_shuffles else math.nan,
        spectral=real, timings=timings)
