"""The long-running service: queued jobs are claimed once, run, and their outcome recorded."""

from __future__ import annotations

import json

from click.testing import CliRunner

from neuronmap.loaders.ingest.weights import ingest
from neuronmap.service.cli import cli
from neuronmap.service.runs import ClusterConfig
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
