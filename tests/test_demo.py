"""`neuronmap demo`, the README's main job, end to end against the real server: train, ingest, cluster, assess."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from neuronmap.loaders.ingest.weights import ingest
from neuronmap.service.cli import cli
from neuronmap.service.runs import ClusterConfig, run_clustering
from tests.service.test_pipeline import planted_graph


def _env(connection) -> dict[str, str]:
    return {
        "NEO4J_URI": connection.uri,
        "NEO4J_USERNAME": connection.user,
        "NEO4J_PASSWORD": connection.password.get_secret_value(),
        "COLUMNS": "200",
    }


def test_the_demo_refuses_to_replace_a_model_that_holds_work(connection, store, tmp_path: Path):
    env = _env(connection)
    ingest(store, "digits-mlp", planted_graph()[0], replace=True)
    partition = run_clustering(store, "digits-mlp", ClusterConfig(n_clusters=3)).id
    out = tmp_path / "demo"
    try:
        result = CliRunner().invoke(cli, ["demo", "--out", str(out), "--epochs", "1"], env=env)
        assert result.exit_code == 1, result.output
        message = result.output.strip()
        assert "'digits-mlp'" in message and "1 partition" in message and "--replace" in message
        assert len(message.splitlines()) == 1 and "Traceback" not in message
        assert not out.exists()  # refused before training anything
        assert [p["id"] for p in store.run("admin.list_partitions", model="digits-mlp")] == [partition]
    finally:
        CliRunner().invoke(cli, ["drop", "digits-mlp"], env=env)


def test_the_demo_trains_ingests_clusters_and_assesses_both_nets(connection, store, tmp_path: Path):
    env = _env(connection)
    out = tmp_path / "demo"
    ingest(store, "digits-mlp", planted_graph()[0], replace=True)  # the user's own work under a demo name …
    run_clustering(store, "digits-mlp", ClusterConfig(n_clusters=3))
    try:
        result = CliRunner().invoke(  # … which --replace replaces
            cli,
            ["demo", "--out", str(out), "--epochs", "2", "--shuffles", "5", "--random-sets", "10", "--replace"],
            env=env,
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        models = {m["name"]: m for m in store.run("admin.list_models")}
        assert models["digits-mlp"]["status"] == "ready" and models["digits-mlp"]["n_neurons"] == 202  # 64-64-64-10
        assert models["digits-cnn"]["status"] == "ready"
        for name, k in (("digits-mlp", 8), ("digits-cnn", 4)):
            (partition,) = store.run("admin.list_partitions", model=name)
            assert partition["k"] == k and partition["n_null"] == 5
            methods = {a["method"] for a in store.run("assessment.list_assessments", partition=partition["id"])}
            assert methods == {"importance", "coherence_features", "coherence_examples"}
        assert (out / "digits-mlp.safetensors").exists() and (out / "digits-cnn.pt2").exists()
        assert any((out / "digits-mlp-features").rglob("*.png"))  # the feature visualisations were saved
        assert "sub-clusters that matter" in result.output and "digits-cnn" in result.output
    finally:
        for name in ("digits-mlp", "digits-cnn"):
            CliRunner().invoke(cli, ["drop", name], env=env)
