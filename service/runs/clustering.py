"""The clustering run: pull a model's graph → cluster it (and its null models) → write the partition back."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from neuronmap.cypher import Store
from neuronmap.device import resolve_device
from neuronmap.options import DeviceName, EigenSolver, NullMethod
from neuronmap.results import BriefRepr
from neuronmap.service.clustering.clusterability import clusterability
from neuronmap.service.clustering.ncut import ncut as compute_ncut
from neuronmap.service.clustering.spectral import spectral_clustering
from neuronmap.service.stats import percentile_pvalue, z_score
from neuronmap.service.store.pull import Subgraph, pull_subgraph
from neuronmap.service.store.writeback import new_partition_id, write_partition


class ClusterConfig(BaseModel):
    """How to partition one model; sklearn's parameter names where they exist."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_clusters: int = Field(default=12, ge=2)
    edges: str = "weight"  # "weight", or the name of an activation graph of the model
    layers: str | None = None  # "first:last" by layer name; None = every layer
    layer_indexes: str | None = None  # "first:last" by layer index, instead of layers
    min_weight: float = Field(default=0.0, ge=0.0)
    n_shuffles: int = Field(default=0, ge=0)
    # None: "layer" for weight graphs, "upper_triangle" for activation graphs (methods.md §2, §4)
    null_method: NullMethod | None = None
    random_state: int | None = 0
    device: DeviceName = "auto"
    eigen_solver: EigenSolver = "auto"
    n_init: int | None = Field(default=None, ge=1)
    parity: bool = False


class PartitionResult(BriefRepr, BaseModel):
    """What one clustering run found, as stored on its (:Partition)."""

    _brief_fields = ("id", "k", "edges", "ncut", "n_neurons", "n_isolated", "n_null", "z", "p_value")

    id: str
    model: str
    k: int
    edges: str
    layers: str
    min_weight: float = 0.0  # weight graphs: the edges with |w| below this were left out
    seed: int | None
    ncut: float
    n_neurons: int
    n_isolated: int
    n_components: int
    cluster_sizes: list[int]
    solver: str
    device: str
    eigen_residual: float
    # the k smallest Laplacian eigenvalues, ascending: the spectrum (and its gaps) that helps choose k
    eigenvalues: list[float] = Field(default_factory=list)
    null_method: str | None = None
    n_null: int = 0
    null_mean: float | None = None
    null_sd: float | None = None
    z: float | None = None
    # (#{null n-cut < n-cut} + 1)/(n_null + 1): the one-sided permutation p-value (stored as p_value; partitions
    # written before the rename have it as percentile, which every reader falls back to)
    p_value: float | None = None
    null_ncuts: list[float] = Field(default_factory=list)
    pull_seconds: float
    cluster_seconds: float
    null_seconds: float = 0.0
    write_seconds: float = 0.0

    def stored_properties(self) -> dict[str, object]:
        """The Partition node's properties (Neo4j takes no nested maps; lists of floats are fine)."""
        return self.model_dump(exclude={"id", "model"}, exclude_none=True)

    def verdict(self, alpha: float = 0.05) -> str | None:
        """One plain sentence on clusterability, or None without shuffles, such as
        ``n-cut 6.57 vs shuffled 6.58 ± 0.02 (p = 0.46): not more clusterable than 50 shuffles``.

        The p-value is held to ``alpha``; when the shuffles are too few for it to get there (1/(n_null + 1) >
        alpha), the sentence says how many it takes.
        """
        if not self.n_null or self.p_value is None or self.null_mean is None:
            return None
        sd = f" ± {self.null_sd:.2g}" if self.null_sd is not None else ""
        head = f"n-cut {self.ncut:.3g} vs shuffled {self.null_mean:.3g}{sd} (p = {self.p_value:.2g})"
        shuffles = f"{self.n_null} shuffle{'s' if self.n_null != 1 else ''}"
        if self.p_value <= alpha:
            return f"{head}: more clusterable than {shuffles} (p ≤ {alpha:g})"
        floor = 1 / (self.n_null + 1)
        if floor > alpha:
            return (
                f"{head}: not more clusterable than {shuffles}; with {self.n_null} the p-value cannot go below "
                f"{floor:.2g}, so use at least {round(1 / alpha) - 1} shuffles"
            )
        return f"{head}: not more clusterable than {shuffles}"


def pull_for(store: Store, model: str, config: ClusterConfig) -> Subgraph:
    """The graph ``config.edges`` names: the weight graph (within ``layers``, above ``min_weight``) or an activation
    graph."""
    if config.edges == "weight":
        return pull_subgraph(
            store, model, layers=config.layers, layer_indexes=config.layer_indexes, min_weight=config.min_weight
        )
    from neuronmap.service.store.activation_pull import pull_activation_graph

    return pull_activation_graph(store, model, config.edges)


def run_clustering(
    store: Store,
    model: str,
    config: ClusterConfig,
    on_stage: Callable[[str], None] = lambda stage: None,
    on_progress: Callable[[str, int, int], None] | None = None,
    *,
    partition_id: str | None = None,
    null_ncuts: Sequence[float] | None = None,
) -> PartitionResult:
    """Partition one ready model and store the partition; see ``neuronmap cluster``.

    Pulls the model's graph (its weights, or the activation graph ``config.edges`` names), clusters it, compares
    it with ``config.n_shuffles`` shuffled networks when asked, and writes the partition back.

    ``on_stage`` hears each stage's name (``pull``, ``cluster``, ``write``); ``on_progress(stage, done, total)``
    hears the shuffled networks as they are clustered (stage ``"shuffles"``, from 0 to ``n_shuffles``), for a
    progress bar.

    ``partition_id`` names the partition (a job's retry writes the same id, which the store keeps unique);
    ``null_ncuts`` are the null's n-cuts computed elsewhere (chunks of ``null_ncuts()`` on several workers), so only
    the real network is clustered here.

    Examples
    --------
    >>> partition = nm.cluster(store, model, nm.ClusterConfig(n_clusters=4, n_shuffles=5))
    >>> partition
    PartitionResult(id='...', k=4, edges='weight', ncut=..., n_neurons=202, n_isolated=0, n_null=5, z=...,
                    p_value=...)
    >>> sum(partition.cluster_sizes) == partition.n_neurons - partition.n_isolated
    True
    >>> 0 < partition.p_value <= 1
    True
    """
    device = str(resolve_device(config.device))  # a CUDA request without CUDA fails here, before any work
    on_stage("pull")
    sub = pull_for(store, model, config)
    on_stage("cluster")
    start = time.perf_counter()
    null: dict[str, object] = {}
    null_seconds = 0.0
    null_method = config.null_method or ("layer" if config.edges == "weight" else "upper_triangle")
    if config.n_shuffles and null_ncuts is None:
        on_batch = None
        if on_progress is not None:
            progress = on_progress
            progress("shuffles", 0, config.n_shuffles)
            on_batch = lambda done, total: progress("shuffles", done, total)
        # clusterability() clusters the real network too, with the same seed and settings as the nulls.
        stats = clusterability(
            sub.graph,
            config.n_clusters,
            config.n_shuffles,
            method=null_method,
            random_state=config.random_state,
            device=device,
            eigen_solver=config.eigen_solver,
            n_init=config.n_init,
            parity=config.parity,
            on_batch=on_batch,
        )
        result, ncut_value = stats.spectral, stats.ncut
        null_seconds = stats.timings["total"] - stats.timings["real"]
        null = {
            "null_method": null_method,
            "n_null": config.n_shuffles,
            "null_mean": stats.mean,
            "null_sd": stats.sd,
            "z": stats.z_score,
            "p_value": stats.p_value,
            "null_ncuts": stats.null_ncuts.tolist(),
        }
    else:
        result = spectral_clustering(
            sub.graph,
            config.n_clusters,
            eigen_solver=config.eigen_solver,
            n_init=config.n_init,
            random_state=config.random_state,
            device=device,
            parity=config.parity,
        )
        ncut_value = compute_ncut(sub.graph, result.labels)
        if config.n_shuffles and null_ncuts is not None:
            values = np.asarray(null_ncuts, dtype=np.float64)
            null = {
                "null_method": null_method,
                "n_null": int(values.size),
                "null_mean": float(values.mean()),
                "null_sd": float(values.std(ddof=0)),
                "z": z_score(float(ncut_value), values),
                "p_value": percentile_pvalue(float(ncut_value), values, "less"),
                "null_ncuts": values.tolist(),
            }
    labels = result.labels.numpy()
    cluster_seconds = time.perf_counter() - start - null_seconds
    sizes = np.bincount(labels[labels >= 0], minlength=config.n_clusters).tolist()
    summary = PartitionResult(
        id=partition_id or new_partition_id(model),
        model=model,
        k=config.n_clusters,
        edges=config.edges,
        layers=config.layers or (sub.layer_span if config.layer_indexes else "all"),
        min_weight=config.min_weight if config.edges == "weight" else 0.0,
        seed=config.random_state,
        ncut=float(ncut_value),
        n_neurons=int(labels.size),
        n_isolated=int(result.n_isolated),
        n_components=int(result.n_components),
        cluster_sizes=sizes,
        solver=result.eigen_solver,
        device=result.device,
        eigen_residual=float(result.eigen_residual),
        eigenvalues=[float(v) for v in result.eigenvalues],
        pull_seconds=sub.seconds,
        cluster_seconds=cluster_seconds,
        null_seconds=null_seconds,
        **null,
    )
    on_stage("write")
    start = time.perf_counter()
    write_partition(store, model, summary.id, summary.stored_properties(), labels, sub.ordinals)
    summary.write_seconds = time.perf_counter() - start
    return summary
