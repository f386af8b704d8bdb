"""The long-running service: queued jobs are claimed once, run, and their outcome recorded."""

from __future__ import annotations

import json
import time

from click.testing import CliRunner

from neuronmap.loaders.ingest.weights import ingest
from neuronmap.service import worker
from neuronmap.service.cli import cli
from neuronmap.service.runs import ClusterConfig, run_clustering
from neuronmap.service.store import jobs
from neuronmap.service.worker import enqueue, run_one
from tests.service.test_pipeline import planted_graph


def test_jobs_run_once_and_record_their_outcome(store, model_id):
    graph, _ = planted_graph()
    ingest(store, model_id, graph)
    good = enqueue(store, model_id, ClusterConfig(n_clusters=3))
    bad = enqueue(store, model_id + "-missing", ClusterConfig(n_clusters=3))
    outcomes = []
    while (outcome := run_one(store, "test-worker")) is not None:
        outcomes.append(outcome)
    by_id = {o["id"]: o for o in outcomes}
    assert by_id[good]["status"] == "done"
    assert by_id[bad]["status"] == "failed" and "no model" in by_id[bad]["error"]
    partitions = store.run("admin.list_partitions", model=model_id)
    assert [p["id"] for p in partitions] == [by_id[good]["partition"]]
    listed = {j["id"]: j for j in store.run("jobs.list", limit=100)}
    assert listed[good]["status"] == "done" and listed[bad]["status"] == "failed"
    assert run_one(store, "test-worker") is None  # nothing is claimed twice


def test_cli_jobs_and_serve(connection, store, model_id):
    env = {
        "NEO4J_URI": connection.uri,
        "NEO4J_USERNAME": connection.user,
        "NEO4J_PASSWORD": connection.password.get_secret_value(),
    }
    runner = CliRunner()
    ingest(store, model_id, planted_graph()[0])
    added = runner.invoke(cli, ["jobs", "add", model_id, "--k", "3"], env=env)
    assert added.exit_code == 0, added.output
    job = added.output.strip()
    served = runner.invoke(cli, ["serve", "--exit-when-idle"], env=env)
    assert served.exit_code == 0 and f"{job}: done" in served.output
    listed = json.loads(runner.invoke(cli, ["jobs", "list", "--format", "json"], env=env).output)
    assert {j["id"]: j["status"] for j in listed}[job] == "done"


def test_a_job_whose_worker_died_is_reclaimed_once_its_lease_lapses(store, model_id):
    ingest(store, model_id, planted_graph()[0])
    job = enqueue(store, model_id, ClusterConfig(n_clusters=3))
    claimed = jobs.claim(store, "dead-worker", lease_seconds=30.0)
    assert claimed is not None and claimed["id"] == job and claimed["attempts"] == 1
    assert run_one(store, "live-worker", lease_seconds=30.0) is None  # the lease holds
    assert jobs.heartbeat(store, job, "dead-worker", lease_seconds=0.5)  # its last beat; then it dies
    time.sleep(1.0)
    outcome = run_one(store, "live-worker", lease_seconds=30.0)
    assert outcome is not None and outcome["id"] == job and outcome["status"] == "done"
    (row,) = [j for j in store.run("jobs.list", limit=100) if j["id"] == job]
    assert row["status"] == "done" and row["worker"] == "live-worker" and row["attempts"] == 2
    assert [p["id"] for p in store.run("admin.list_partitions", model=model_id)] == [outcome["partition"]]
    # The dead worker, had it only been slow, can no longer record an outcome over the live one's.
    assert not jobs.finish(store, job, "dead-worker", error="late")
    assert not jobs.heartbeat(store, job, "dead-worker")
    assert [j["status"] for j in store.run("jobs.list", limit=100) if j["id"] == job] == ["done"]


def test_a_heartbeat_keeps_the_lease_and_a_job_that_keeps_killing_workers_fails(store, model_id):
    ingest(store, model_id, planted_graph()[0])
    job = enqueue(store, model_id, ClusterConfig(n_clusters=3))
    assert jobs.claim(store, "worker-a", lease_seconds=1.0)["id"] == job
    assert jobs.heartbeat(store, job, "worker-a", lease_seconds=30.0)
    time.sleep(1.5)
    assert jobs.claim(store, "worker-b", lease_seconds=1.0) is None  # the heartbeat extended a's lease
    assert jobs.heartbeat(store, job, "worker-a", lease_seconds=0.5)
    time.sleep(1.0)
    assert jobs.claim(store, "worker-b", lease_seconds=0.5, max_attempts=2)["attempts"] == 2  # a died
    time.sleep(1.0)
    assert jobs.claim(store, "worker-c", lease_seconds=0.5, max_attempts=2) is None  # b died too: abandoned
    (row,) = [j for j in store.run("jobs.list", limit=100) if j["id"] == job]
    assert row["status"] == "failed" and "abandoned" in row["error"] and row["attempts"] == 2


def test_the_worker_beats_while_a_job_runs(store, model_id, monkeypatch):
    ingest(store, model_id, planted_graph()[0])
    job = enqueue(store, model_id, ClusterConfig(n_clusters=3))
    beats = []
    original = jobs.heartbeat

    def counting(*args, **kwargs):
        beats.append(args[1])
        return original(*args, **kwargs)

    def slow(store, model, config):  # a job that outlives its first lease
        time.sleep(2.5)
        return run_clustering(store, model, config)

    monkeypatch.setattr(jobs, "heartbeat", counting)
    monkeypatch.setattr(worker, "run_clustering", slow)
    outcome = run_one(store, "busy-worker", lease_seconds=1.5)
    assert outcome is not None and outcome["status"] == "done" and job in beats and len(beats) >= 2
