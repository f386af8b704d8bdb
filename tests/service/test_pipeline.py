"""neuronmap cluster end to end against the real Neo4j: planted modules come back, partitions are stored."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import adjusted_rand_score

from neuronmap.loaders.ingest.weights import ingest
from neuronmap.loaders.records import EdgeBlock, LayerRecord, ModelGraph
from neuronmap.service.cli import cli
from neuronmap.service.errors import ClusteringInputError, DeviceError, ModelNotFoundError, ModelNotReadyError
from neuronmap.service.runs import ClusterConfig, run_clustering
from neuronmap.service.store.writeback import read_labels


def planted_graph(sizes=(24, 24, 24, 24), k=3, inside=1.0, across=0.05, seed=0) -> tuple[ModelGraph, np.ndarray]:
    """A layered net whose neurons belong to k modules: strong weights inside a module, weak across."""
    rng = np.random.default_rng(seed)
    modules = [np.arange(n) % k for n in sizes]
    layers = [
        LayerRecord(
            index=i,
            name="input" if i == 0 else f"fc{i}",
            kind="input" if i == 0 else "linear",
            role="input" if i == 0 else ("output" if i == len(sizes) - 1 else "hidden"),
            size=n,
            shape=[n],
        )
        for i, n in enumerate(sizes)
    ]
    blocks = []
    for i in range(len(sizes) - 1):
        same = modules[i][:, None] == modules[i + 1][None, :]
        w = np.where(same, inside, across) * rng.uniform(0.5, 1.5, size=same.shape) * rng.choice([-1, 1], same.shape)
        blocks.append(EdgeBlock(i, i + 1, w))
    graph = ModelGraph(layers, blocks, [None] + [np.zeros(n) for n in sizes[1:]])
    return graph, np.concatenate(modules)


def test_planted_modules_come_back_and_are_stored(store, model_id):
    graph, truth = planted_graph()
    ingest(store, model_id, graph)
    result = run_clustering(store, model_id, ClusterConfig(n_clusters=3, random_state=0))
    stored = read_labels(store, result.id, graph.n_neurons)
    assert adjusted_rand_score(truth, stored) == pytest.approx(1.0)
    assert sorted(result.cluster_sizes) == [32, 32, 32]
    listed = store.run("admin.list_partitions", model=model_id)
    assert [p["id"] for p in listed] == [result.id]
    assert listed[0]["ncut"] == pytest.approx(result.ncut)
    # The k smallest Laplacian eigenvalues are stored for the spectrum plot: three planted modules, three near 0.
    (spectrum,) = store.run("explorer.partition_spectrum", partition=result.id)
    assert spectrum["eigenvalues"] == pytest.approx(result.eigenvalues) and len(result.eigenvalues) == 3
    assert result.eigenvalues == sorted(result.eigenvalues) and 0 <= result.eigenvalues[0] < 1e-6


def test_same_seed_same_labels(store, model_id):
    graph, _ = planted_graph(across=0.6, seed=3)
    ingest(store, model_id, graph)
    a = run_clustering(store, model_id, ClusterConfig(n_clusters=4, random_state=7))
    b = run_clustering(store, model_id, ClusterConfig(n_clusters=4, random_state=7))
    np.testing.assert_array_equal(read_labels(store, a.id, graph.n_neurons), read_labels(store, b.id, graph.n_neurons))
    assert a.id != b.id and len(store.run("admin.list_partitions", model=model_id)) == 2


def test_layer_range_clusters_only_those_layers(store, model_id):
    graph, truth = planted_graph()
    ingest(store, model_id, graph)
    result = run_clustering(store, model_id, ClusterConfig(n_clusters=3, layers="fc1:fc2"))
    stored = read_labels(store, result.id, graph.n_neurons)
    lo, hi = graph.offsets[1], graph.offsets[3]
    assert (stored[:lo] == -1).all() and (stored[hi:] == -1).all()
    assert adjusted_rand_score(truth[lo:hi], stored[lo:hi]) == pytest.approx(1.0)
    assert result.n_neurons == hi - lo


def test_shuffled_nulls_say_a_planted_net_is_clusterable(store, model_id):
    graph, _ = planted_graph()
    ingest(store, model_id, graph)
    result = run_clustering(store, model_id, ClusterConfig(n_clusters=3, n_shuffles=20, random_state=0))
    assert result.n_null == 20 and len(result.null_ncuts) == 20
    assert result.ncut < min(result.null_ncuts)
    assert result.p_value == pytest.approx(1 / 21)
    assert result.z < -3
    stored = store.run("admin.list_partitions", model=model_id)[0]
    assert stored["p_value"] == pytest.approx(1 / 21) and stored["n_null"] == 20


def test_errors_are_clear(store, model_id):
    with pytest.raises(ModelNotFoundError):
        run_clustering(store, model_id, ClusterConfig(n_clusters=2))
    graph, _ = planted_graph(sizes=(4, 4))
    ingest(store, model_id, graph)
    with pytest.raises(ClusteringInputError, match="more than the 8 neurons"):
        run_clustering(store, model_id, ClusterConfig(n_clusters=9))
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="cuda"):
            run_clustering(store, model_id, ClusterConfig(n_clusters=2, device="cuda"))
    store.run("admin.delete_model", model=model_id)
    store.run("ingest.begin_model", model=model_id, meta={}, layers=[])
    with pytest.raises(ModelNotReadyError):
        run_clustering(store, model_id, ClusterConfig(n_clusters=2))


def test_cli_cluster_partitions_and_drop(connection, store, model_id):
    env = {
        "NEO4J_URI": connection.uri,
        "NEO4J_USERNAME": connection.user,
        "NEO4J_PASSWORD": connection.password.get_secret_value(),
    }
    runner = CliRunner()
    graph, _ = planted_graph()
    # Two separate halves: a disconnected graph is clustered with a warning, not an error.
    graph.blocks[1].weight[:12, 12:] = 0
    graph.blocks[1].weight[12:, :12] = 0
    graph.blocks[0].weight[:12, 12:] = graph.blocks[0].weight[12:, :12] = 0
    graph.blocks[2].weight[:12, 12:] = graph.blocks[2].weight[12:, :12] = 0
    ingest(store, model_id, graph)
    result = runner.invoke(cli, ["cluster", model_id, "--k", "3", "--format", "json"], env=env)
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "component" in result.output
    partition = json.loads(result.output[result.output.index("{") :])["id"]
    listed = runner.invoke(cli, ["partitions", model_id, "--format", "json"], env=env)
    assert [p["id"] for p in json.loads(listed.output)] == [partition]
    assert runner.invoke(cli, ["partitions", model_id, "--drop", partition], env=env).exit_code == 0
    assert json.loads(runner.invoke(cli, ["partitions", model_id, "--format", "json"], env=env).output) == []
    missing = runner.invoke(cli, ["partitions", model_id, "--drop", partition], env=env)
    assert missing.exit_code != 0 and "no partition" in missing.output


def test_shuffles_report_progress_and_cluster_ends_with_a_verdict(connection, store, model_id):
    graph, _ = planted_graph()
    ingest(store, model_id, graph)
    calls = []
    config = ClusterConfig(n_clusters=3, n_shuffles=6, random_state=0)
    result = run_clustering(store, model_id, config, on_progress=lambda *call: calls.append(call))
    assert calls[0] == ("shuffles", 0, 6) and calls[-1] == ("shuffles", 6, 6)
    assert [done for _, done, _ in calls] == sorted(done for _, done, _ in calls)
    assert result.verdict() == (
        f"n-cut {result.ncut:.3g} vs shuffled {result.null_mean:.3g} ± {result.null_sd:.2g} (p = {1 / 7:.2g}): not "
        "more clusterable than 6 shuffles; with 6 the p-value cannot go below 0.14, so use at least 19 shuffles"
    )
    clusterable = result.model_copy(update={"n_null": 50, "p_value": 1 / 51})
    assert clusterable.verdict().endswith("more clusterable than 50 shuffles (p ≤ 0.05)")
    plain = result.model_copy(update={"n_null": 50, "p_value": 0.46, "ncut": 6.57, "null_mean": 6.58, "null_sd": 0.02})
    assert plain.verdict() == "n-cut 6.57 vs shuffled 6.58 ± 0.02 (p = 0.46): not more clusterable than 50 shuffles"
    assert result.model_copy(update={"n_null": 0}).verdict() is None
    env = {
        "NEO4J_URI": connection.uri,
        "NEO4J_USERNAME": connection.user,
        "NEO4J_PASSWORD": connection.password.get_secret_value(),
        "COLUMNS": "200",
    }
    shown = CliRunner().invoke(cli, ["cluster", model_id, "--k", "3", "--shuffles", "6"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "shuffled networks" in shown.stderr and "6/6" in shown.stderr  # the progress bar
    assert shown.stderr.strip().splitlines()[-1].startswith("n-cut ") and "p-value" in shown.stdout
