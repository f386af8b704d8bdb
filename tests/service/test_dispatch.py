"""Jobs on a real local Ray (2 CPUs, one for the whole module) against the real Neo4j: exactly-once outcomes when a
worker or a dispatcher dies, several dispatchers, failures, cancels, and sweeps equal to the sequential runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from neuronmap.loaders.ingest.weights import ingest
from neuronmap.service.cli import cli
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
# Never finishes before a cancel lands, however fast the box that day (400 shuffles once did); cancelled, it costs
# nothing more.
UNENDING = ClusterConfig(n_clusters=3, n_shuffles=20_000)


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


@pytest.fixture(scope="module")
def env(connection) -> dict[str, str]:
    return {
        "NEO4J_URI": connection.uri,
        "NEO4J_USERNAME": connection.user,
        "NEO4J_PASSWORD": connection.password.get_secret_value(),
    }


def job_partitions(store, model: str, job_id: str) -> list[str]:
    return [p for p in partitions_of(store, model) if p.endswith(job_id)]


def test_a_ray_worker_killed_mid_task_is_retried_and_writes_one_partition(store, connection, models, ray_cluster):
    future = submit(store, "cluster", models[0], SLOW)
    with dispatching(store, connection, "disp-k", null_chunk=0):
        task = wait_for(lambda: record(store, future.id)["task"])
        os.kill(int(task.rsplit(":", 1)[1]), signal.SIGKILL)  # the Ray worker process running the job
        result = future.result(timeout=300)
    row = record(store, future.id)
    assert row["status"] == "done" and row["attempts"] == 1  # Ray retried it; the dispatcher claimed it once
    assert row["task_runs"] == 2 and row["task"] != task
    assert job_partitions(store, models[0], future.id) == [result.id]


def test_a_killed_dispatcher_is_taken_over_after_its_lease(store, connection, models, ray_cluster, env, tmp_path):
    import ray

    future = submit(store, "cluster", models[1], SLOW)
    address = ray.get_runtime_context().gcs_address
    args = ["serve", "--ray-address", address, "--lease", "3", "--max-in-flight", "1", "--null-chunk", "0"]
    log = (tmp_path / "serve.log").open("w")
    first = subprocess.Popen([NEURONMAP, *args], env={**os.environ, **env}, stdout=log, stderr=log)
    try:
        wait_for(lambda: record(store, future.id)["task"], timeout=180)
    finally:
        first.kill()  # SIGKILL: no release, no finish; only the lease lapsing frees the job
        first.wait()
        log.close()
    assert record(store, future.id)["status"] == "running"
    with dispatching(store, connection, "disp-2", lease_seconds=3.0):
        result = future.result(timeout=300)
    row = record(store, future.id)
    assert row["status"] == "done" and row["worker"] == "disp-2" and row["attempts"] == 2
    assert job_partitions(store, models[1], future.id) == [result.id]


def test_cancel_stops_a_running_job(store, connection, models, ray_cluster):
    future = submit(store, "cluster", models[2], UNENDING)
    with dispatching(store, connection, "disp-c", lease_seconds=3.0, null_chunk=0):
        wait_for(lambda: record(store, future.id)["task"])
        assert future.cancel() == "cancelling"
        with pytest.raises(JobFailedError, match="cancelled"):
            future.result(timeout=60)
    assert job_partitions(store, models[2], future.id) == []


def test_ctrl_c_cancels_the_running_task_and_queues_its_job_again(store, connection, models, ray_cluster):
    future = submit(store, "cluster", models[2], SLOW)
    dispatcher = Dispatcher(store, connection, DispatcherConfig(poll_seconds=0.2, null_chunk=0), name="disp-int")

    def interrupted() -> bool:
        if record(store, future.id)["task"]:
            raise KeyboardInterrupt  # what Ctrl-C raises in `neuronmap serve`'s loop
        return False

    with pytest.raises(KeyboardInterrupt):
        dispatcher.run(interrupted)
    row = record(store, future.id)
    assert row["status"] == "queued" and row["worker"] is None  # another dispatcher may take it at once
    assert future.cancel() == "cancelled"
    assert job_partitions(store, models[2], future.id) == []


def test_cli_jobs_serve_and_a_sweep_equal_to_sequential_runs(store, models, ray_cluster, env):
    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.output

    job = run("jobs", "add", "cluster", models[0], "--k", "3").strip().splitlines()[-1]
    assert "Ran 1 job(s)" in run("serve", "--exit-when-idle", "--poll", "0.2")  # on this process's Ray
    (shown,) = json.loads(run("jobs", "show", job, "--format", "json"))
    assert shown["status"] == "done" and shown["result"] == f"{models[0]}/p-{job}"
    pattern = models[0].replace("-0-", "-*-")
    out = run(
        "sweep",
        "--models",
        pattern,
        "--k",
        "3,4",
        "--seeds",
        "0-1",
        "--shuffles",
        "4",
        "--null-chunk",
        "2",
        "--format",
        "json",
    )
    rows = json.loads(out[out.index("[") :])
    assert len(rows) == 12 and {r["model"] for r in rows} == set(models)
    for row in rows:  # the same figures as `neuronmap cluster` one at a time with the same seeds
        seed = json.loads(record(store, row["partition"].rsplit("/p-", 1)[1])["config"])["random_state"]
        alone = run(
            "cluster", row["model"], "--k", str(row["k"]), "--shuffles", "4", "--seed", str(seed), "--format", "json"
        )
        expected = json.loads(alone[alone.index("{") :])
        assert row["ncut"] == pytest.approx(expected["ncut"], rel=1e-9)
        assert row["null_mean"] == pytest.approx(expected["null_mean"], rel=1e-9)
        assert row["p_value"] == pytest.approx(expected["p_value"])


def test_every_kind_runs_as_a_job_and_a_rerun_stores_nothing_twice(store, connection, model_id, ray_cluster, tmp_path):
    import torch
    from safetensors.torch import save_file

    from neuronmap.examples import nets
    from neuronmap.loaders import load_graph
    from neuronmap.service.dispatch import ActivationsJob, CoherenceJob, ImportanceJob
    from neuronmap.service.store.assessments import list_assessments

    torch.manual_seed(0)
    path = tmp_path / "mlp.safetensors"
    save_file(nets.digits_mlp().state_dict(), str(path))
    ingest(store, model_id, load_graph(path, arch="neuronmap.examples.nets:digits_mlp"))
    graph = submit(store, "activations", model_id, ActivationsJob(method="pearson", min_r2=0.01))
    cut = submit(store, "cluster", model_id, ClusterConfig(n_clusters=3))
    with dispatching(store, connection, "disp-kinds"):
        assert graph.result(timeout=300).name == "digits-pearson"
        partition = cut.result(timeout=300).id
        lesions = submit(store, "importance", model_id, ImportanceJob(n_null=5))
        examples = submit(store, "coherence", model_id, CoherenceJob(methods=("examples",), n_null=3, k=4))
        importance = lesions.result(timeout=300)
        (coherence,) = examples.result(timeout=300)
    assert importance.partition == coherence.partition == partition
    assert importance.assessment == f"{partition}/importance-{lesions.id}"
    assert coherence.assessment == f"{partition}/coherence_examples-{examples.id}"
    row = record(store, lesions.id)
    rerun = tasks.run_job(connection, Job(id=lesions.id, kind="importance", model=model_id, config=row["config"]))
    assert rerun.reused and rerun.result == [importance.assessment]
    stored = list_assessments(store, partition)
    assert sorted(a["id"] for a in stored) == sorted([importance.assessment, coherence.assessment])
