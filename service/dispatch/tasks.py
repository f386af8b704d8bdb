"""The task bodies that Ray runs on its workers, without Ray itself: each opens the store from the connection that
travelled with it, pulls what it needs, computes, and writes its result back.

Exactly-once write-back: every result a job writes is named by the job's id (partition ``{model}/p-{job}``,
assessments ``{partition}/{method}-{job}``) and the store keeps those ids unique. A run first looks for what an
earlier run of the same job wrote (a retry after its worker died, or a second dispatcher after the first one's
lease lapsed) and returns that instead of writing it again; two runs racing to write meet the uniqueness
constraint, and the loser returns the winner's result.
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from neuronmap.cypher import Store
from neuronmap.options import NullMethod
from neuronmap.service.dispatch.specs import (
    ActivationsJob,
    ActivationsResult,
    CoherenceJob,
    ImportanceJob,
    Job,
    JobOutcome,
)
from neuronmap.service.runs.clustering import ClusterConfig, PartitionResult
from neuronmap.service.store import jobs as jobs_store
from neuronmap.service.store.local_neo4j import Connection

T = TypeVar("T")

_stores: dict[tuple[str, str, str], Store] = {}
_stores_lock = threading.Lock()


def store_for(connection: Connection) -> Store:
    """This worker process's store for ``connection``: opened (with the schema check) once, reused by its tasks."""
    key = (connection.uri, connection.user, connection.database)
    with _stores_lock:
        if key not in _stores:
            from neuronmap.service.store.open import connect

            if not _stores:
                atexit.register(close_stores)  # a driver left for the interpreter's teardown warns as it dies
            _stores[key] = connect(connection)
        return _stores[key]


def close_stores() -> None:
    """Close this process's cached stores (at exit; safe to call twice)."""
    with _stores_lock:
        for store in _stores.values():
            try:
                store.close()
            except Exception:  # a server already gone: nothing left to close cleanly
                pass
        _stores.clear()


def task_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def partition_id_for(job: Job) -> str:
    """The partition a cluster job writes, named by the job."""
    return f"{job.model}/p-{job.id}"


def _null_method(config: ClusterConfig) -> NullMethod:
    return config.null_method or ("layer" if config.edges == "weight" else "upper_triangle")


def null_chunk(connection: Connection, job: Job, start: int, stop: int) -> list[float]:
    """The n-cuts of nulls ``start`` to ``stop`` of a cluster job's null: one chunk of a null split over workers.

    Pulls the model's graph itself; the merge task clusters the real network and writes the partition.
    """
    from neuronmap.service.clustering.clusterability import null_ncuts
    from neuronmap.service.runs.clustering import pull_for

    config = job.settings()
    store = store_for(connection)
    sub = pull_for(store, job.model, config)
    values = null_ncuts(
        sub.graph,
        config.n_clusters,
        config.n_shuffles,
        start=start,
        stop=stop,
        method=_null_method(config),
        random_state=config.random_state,
        device=config.device,
        eigen_solver=config.eigen_solver,
        n_init=config.n_init,
        parity=config.parity,
    )
    return [float(v) for v in values.tolist()]


def run_job(connection: Connection, job: Job, *null_chunks: list[float]) -> JobOutcome:
    """Run one job to its stored result. ``null_chunks``: a cluster job's null computed by :func:`null_chunk`
    tasks (Ray hands their results in), merged here in order."""
    store = store_for(connection)
    task = task_name()
    jobs_store.task_started(store, job.id, task)
    outcome = _RUNNERS[job.kind](store, job, list(null_chunks))
    outcome.task = task
    return outcome


def _once(store: Store, ids: list[str], write: Callable[[], T]) -> tuple[T | None, dict[str, dict[str, Any]]]:
    """Run ``write`` unless every id in ``ids`` is stored already; returns (its value or None, what was found).

    When ``write`` fails and the ids are there now, another run of the same job won the race: what it wrote is
    returned as found.
    """
    found = jobs_store.written_results(store, ids)
    if len(found) == len(ids):
        return None, found
    try:
        return write(), {}
    except Exception:
        found = jobs_store.written_results(store, ids)
        if len(found) == len(ids):
            return None, found
        raise


def _cluster(store: Store, job: Job, chunks: list[list[float]]) -> JobOutcome:
    from neuronmap.service.runs.clustering import run_clustering

    config: ClusterConfig = job.settings()
    pid = partition_id_for(job)
    null = [v for chunk in chunks for v in chunk] if chunks else None
    result, found = _once(
        store, [pid], lambda: run_clustering(store, job.model, config, partition_id=pid, null_ncuts=null)
    )
    if result is None:
        props = {k: v for k, v in found[pid].items() if k not in ("created_at", "id", "model")}
        result = PartitionResult.model_validate({**props, "id": pid, "model": job.model})
    return JobOutcome(id=job.id, kind="cluster", model=job.model, result=[pid], partition=result, reused=bool(found))


def _resolve(store: Store, job: Job, partition: str, edges: str) -> str:
    from neuronmap.service.store.library import resolve_partition

    return resolve_partition(store, job.model, partition, edges=edges)


def _importance(store: Store, job: Job, chunks: list[list[float]]) -> JobOutcome:
    from neuronmap.service.runs import run_importance

    spec: ImportanceJob = job.settings()
    partition = _resolve(store, job, spec.partition, spec.edges)
    aid = f"{partition}/importance-{job.id}"
    result, found = _once(
        store,
        [aid],
        lambda: run_importance(
            store,
            job.model,
            partition,
            dataset=spec.dataset,
            n_null=spec.n_null,
            seed=spec.seed,
            device=spec.device,
            edges=spec.edges,
            result_key=job.id,
        ),
    )
    return JobOutcome(
        id=job.id, kind="importance", model=job.model, result=[aid], importance=result, reused=bool(found)
    )


def _coherence(store: Store, job: Job, chunks: list[list[float]]) -> JobOutcome:
    from neuronmap.service.runs import run_coherence

    spec: CoherenceJob = job.settings()
    partition = _resolve(store, job, spec.partition, spec.edges)
    ids = {method: f"{partition}/coherence_{method}-{job.id}" for method in spec.methods}
    found = jobs_store.written_results(store, list(ids.values()))
    # Only the methods an earlier run did not store (it may have died between the two writes).
    missing = tuple(method for method, aid in ids.items() if aid not in found)
    results = []
    if missing:
        run, _ = _once(
            store,
            [ids[m] for m in missing],
            lambda: run_coherence(
                store,
                job.model,
                partition,
                dataset=spec.dataset,
                n_null=spec.n_null,
                seed=spec.seed,
                device=spec.device,
                methods=missing,
                steps=spec.steps,
                k=spec.k,
                edges=spec.edges,
                result_key=job.id,
            ),
        )
        if run is not None:
            results = [r for r in (run.features, run.examples) if r is not None]
    return JobOutcome(
        id=job.id,
        kind="coherence",
        model=job.model,
        result=list(ids.values()),
        coherence=results,
        reused=len(results) < len(ids),
    )


def _graph_row(store: Store, model: str, name: str) -> dict[str, Any] | None:
    from neuronmap.loaders.ingest.activations import list_graphs

    rows = [row for row in list_graphs(store, model) if row["name"] == name and row["status"] == "ready"]
    return rows[0] if rows else None


def _activations(store: Store, job: Job, chunks: list[list[float]]) -> JobOutcome:
    from neuronmap.loaders.activations import compute_correlations, sparsify
    from neuronmap.loaders.datasets import load_dataset
    from neuronmap.loaders.ingest.activations import ingest_activation_graph
    from neuronmap.service.store.model_source import reload_source

    spec: ActivationsJob = job.settings()
    name = spec.graph_name
    # The graph's name is unique per model, so a rerun ends with one graph: without replace it finds the graph an
    # earlier run stored; with replace it stores the same graph again.
    existing = None if spec.replace else _graph_row(store, job.model, name)
    if existing is None:
        module, input_shape = reload_source(store, job.model)
        inputs = load_dataset(spec.data).x_test  # the reference correlates over the test set
        if input_shape and tuple(inputs.shape[1:]) != input_shape and inputs[0].numel() == int(np.prod(input_shape)):
            inputs = inputs.reshape(-1, *input_shape)
        corr = compute_correlations(
            module,
            inputs,
            method=spec.method,
            reduction=spec.reduction,
            batch_size=spec.batch_size,
            device=spec.device,
            input_shape=input_shape or None,
            data=f"{spec.data}:test",
        )
        edges = sparsify(corr, min_r2=spec.min_r2, top_k=spec.top_k)
        ingest_activation_graph(store, job.model, name, edges, replace=spec.replace)
    row = _graph_row(store, job.model, name) or {}
    graph = ActivationsResult(model=job.model, name=name, n_units=row.get("n_units"), n_edges=row.get("n_edges"))
    return JobOutcome(
        id=job.id, kind="activations", model=job.model, result=[name], activations=graph, reused=existing is not None
    )


_RUNNERS: dict[str, Callable[[Store, Job, list[list[float]]], JobOutcome]] = {
    "cluster": _cluster,
    "importance": _importance,
    "coherence": _coherence,
    "activations": _activations,
}
