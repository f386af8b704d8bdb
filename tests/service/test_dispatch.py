"""Jobs on a real local Ray (2 CPUs, one for the whole module) against the real Neo4j: exactly-once outcomes when a
worker or a dispatcher dies, several dispatchers, failures, cancels, and sweeps equal to the sequential runs."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from neuronmap.loaders.ingest.weights import ingest
from neuronmap.service.dispatch import (
    Dispatcher,
    DispatcherConfig,
    JobFailedError,
    ray_session,
    submit,
    tasks,
)
from neuronmap.service.dispatch.specs import Job
from neuronmap.service.runs import ClusterConfig
from neuronmap.service.store import jobs as jobs_store
from tests.service.test_pipeline import planted_graph

NEURONMAP = str(Path(sys.executable).parent / "neuronmap")
SLOW = ClusterConfig(n_clusters=3, n_shuffles=400)  # a few seconds of nulls on one CPU: long enough to kill


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[float]:
    """One local Ray for these tests; yields its start-up time in seconds."""
    start = time.perf_counter()
    with ray_session(num_cpus=2):
        yield time.perf_counter() - start


@pytest.fixture(scope="module")
def models(store) -> Iterator[list[str]]:
    """Three small planted models (96 neurons each), shared by the module's tests."""
    names = [f"dispatch-{i}-{os.getpid()}" for i in range(3)]
    for i, name in enumerate(names):
        ingest(store, name, planted_graph(seed=i)[0])
    yield names
    for name in names:
        store.run("admin.delete_model", model=name)


@contextmanager
def dispatching(store, connection, name: str, **config: float) -> Iterator[Dispatcher]:
    """A dispatcher running in a thread for the block."""
    stop = threading.Event()
    dispatcher = Dispatcher(store, connection, DispatcherConfig(poll_seconds=0.2, **config), name=name)
    thread = threading.Thread(target=dispatcher.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        yield dispatcher
    finally:
        stop.set()
        thread.join(timeout=60)


def record(store, job_id: str) -> dict:
    return jobs_store.show(store, [job_id])[0]


def wait_for(check: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def partitions_of(store, model: str) -> list[str]:
    return [p["id"] for p in store.run("admin.list_partitions", model=model)]


def test_a_rerun_of_a_job_finds_its_partition_and_writes_none(store, connection, model_id):
    ingest(store, model_id, planted_graph()[0])
    job_id = jobs_store.enqueue(store, model_id, ClusterConfig(n_clusters=3).model_dump_json())
    job = Job(id=job_id, kind="cluster", model=model_id, config=ClusterConfig(n_clusters=3).model_dump_json())
    first = tasks.run_job(connection, job)  # in this process, no Ray: the task body as a worker runs it
    again = tasks.run_job(connection, job)  # a retry after the write (the worker died before it returned)
    assert not first.reused and again.reused and again.result == first.result == [f"{model_id}/p-{job_id}"]
    assert again.partition.ncut == pytest.approx(first.partition.ncut)
    assert partitions_of(store, model_id) == first.result
    assert record(store, job_id)["status"] == "queued"  # only a dispatcher records outcomes


def test_two_dispatchers_run_each_job_once_and_a_failure_stays_its_own(store, connection, models, ray_cluster):
    futures = [submit(store, "cluster", models[i % 3], ClusterConfig(n_clusters=3, random_state=i)) for i in range(10)]
    bad = submit(store, "cluster", "no-such-model", ClusterConfig(n_clusters=3))
    before = {m: set(partitions_of(store, m)) for m in models}
    with dispatching(store, connection, "disp-a", max_in_flight=1), dispatching(store, connection, "disp-b"):
        results = [f.result(timeout=120) for f in futures]
        with pytest.raises(JobFailedError, match="no-such-model"):
            bad.result(timeout=60)
    rows = {r["id"]: r for r in jobs_store.show(store, [f.id for f in futures] + [bad.id])}
    assert all(rows[f.id]["status"] == "done" and rows[f.id]["attempts"] == 1 for f in futures)
    assert {rows[f.id]["worker"] for f in futures} <= {"disp-a", "disp-b"}
    assert rows[bad.id]["status"] == "failed" and "\n" not in rows[bad.id]["error"]
    new = {m: set(partitions_of(store, m)) - before[m] for m in models}
    assert sorted(p for ps in new.values() for p in ps) == sorted(r.id for r in results)  # 10 partitions, once each
