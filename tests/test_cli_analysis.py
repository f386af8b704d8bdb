"""The analysis commands end to end: query, report, activations, and cluster on an activation graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from neuronmap.examples import nets
from neuronmap.loaders.ingest.activations import list_graphs
from neuronmap.loaders.ingest.weights import ingest
from neuronmap.service.cli import cli
from neuronmap.service.runs import ClusterConfig, run_clustering
from neuronmap.service.store.assessments import list_assessments
from neuronmap.service.store.library import run_library_query
from tests.service.test_pipeline import planted_graph


@pytest.fixture
def run(connection):
    env = {
        "NEO4J_URI": connection.uri,
        "NEO4J_USERNAME": connection.user,
        "NEO4J_PASSWORD": connection.password.get_secret_value(),
        "COLUMNS": "200",
    }

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def clustered(store, model_id):
    graph, _ = planted_graph()
    ingest(store, model_id, graph)
    first = run_clustering(store, model_id, ClusterConfig(n_clusters=3, random_state=0))
    second = run_clustering(store, model_id, ClusterConfig(n_clusters=2, random_state=1))
    return model_id, first.id, second.id


def test_query_output_equals_the_library_call(run, store, clustered):
    model, _, latest = clustered
    result = run("query", "module-span", "--model", model, "--format", "json")
    assert result.exit_code == 0, result.output
    assert "partition latest = " + latest in result.stderr  # which partition 'latest' was
    assert json.loads(result.stdout) == json.loads(
        json.dumps(run_library_query(store, "module_span", model=model, partition=latest), default=str)
    )
    csv_out = run("query", "module-cohesion", "-p", "model", model, "--format", "csv")
    assert csv_out.stdout.splitlines()[0] == "cluster,size,within,cut,vol,ncut_term,n_within,n_cut"
    assert len(csv_out.stdout.strip().splitlines()) == 1 + 2


def test_compare_partitions_reports_ari_and_nmi(run, clustered):
    model, first, second = clustered
    same = run("query", "compare-partitions", "--model", model, "--a", first, "--b", first)
    assert same.exit_code == 0 and "ARI 1.0000" in same.output and "NMI 1.0000" in same.output
    other = run("query", "compare-partitions", "--model", model, "--a", first, "--b", second)
    assert other.exit_code == 0 and "ARI" in other.output


def test_query_errors_are_one_line(run, clustered):
    model, _, _ = clustered
    for args, expect in (
        (["query", "modul-span"], "Did you mean"),
        (["query", "module-span", "--model", model, "--colour", "red"], "no parameter 'colour'"),
        (["query", "module-span", "--model", model, "--partition", "nope"], "no partition 'nope'"),
        (["query", "module-span", "--model", model + "-missing"], "no model"),
    ):
        result = run(*args)
        assert result.exit_code != 0 and expect in result.output and "Traceback" not in result.output


def test_query_list_and_show(run):
    listed = run("query", "--list")
    assert listed.exit_code == 0 and "module-flow" in listed.output
    shown = run("query", "module-span", "--show")
    assert shown.exit_code == 0 and "MATCH" in shown.output


def test_report_writes_html_and_pngs(run, clustered, tmp_path):
    model, _, _ = clustered
    out = tmp_path / "report"
    result = run("report", model, "--out", str(out))
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert "id='verdict'" in page and 'id="adjacency"' in page and "<script src" not in page  # the explorer's page
    pngs = sorted(out.glob("*.png"))
    assert [png.stem for png in pngs] == ["adjacency", "flow", "null", "span"]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.name in result.output


def test_activation_graph_from_the_cli_and_its_clustering(run, store, model_id, tmp_path: Path):
    torch.manual_seed(0)
    path = tmp_path / "mlp.safetensors"
    save_file(nets.digits_mlp().state_dict(), str(path))
    assert run("ingest", str(path), "--arch", "neuronmap.examples.nets:digits_mlp", "--name", model_id).exit_code == 0
    made = run("activations", model_id, "--data", "digits", "--corr", "pearson", "--min-r2", "0.01")
    assert made.exit_code == 0, made.output
    listed = run("activations", model_id, "--list")
    assert "digits-pearson" in listed.output and "ready" in listed.output
    clustered = run("cluster", model_id, "--edges", "digits-pearson", "--k", "3", "--shuffles", "5", "--format", "json")
    assert clustered.exit_code == 0, clustered.output
    summary = json.loads(clustered.output[clustered.output.index("{") :])
    assert summary["edges"] == "digits-pearson" and summary["n_neurons"] <= 128
    assert summary["null_method"] == "upper_triangle" and len(summary["null_ncuts"]) == 5
    again = run("activations", model_id, "--data", "digits", "--corr", "pearson")
    assert again.exit_code != 0 and "replace" in again.output
    path.write_bytes(path.read_bytes() + b"\0")  # the file changed since it was ingested
    changed = run("activations", model_id, "--data", "digits", "--name", "other")
    assert changed.exit_code != 0 and "changed" in changed.output


def test_activation_graph_of_an_exported_program(run, store, model_id, tmp_path: Path):
    torch.manual_seed(0)
    net = nets.digits_cnn().eval()
    path = tmp_path / "cnn.pt2"  # as the demo saves its digits-cnn
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 8, 8),)), str(path))
    assert run("ingest", str(path), "--name", model_id).exit_code == 0
    made = run("activations", model_id, "--data", "digits", "--corr", "pearson")
    assert made.exit_code == 0, made.output
    (graph,) = list_graphs(store, model_id)
    assert graph["name"] == "digits-pearson" and graph["status"] == "ready" and graph["n_units"] > 0


def test_importance_and_coherence_resolve_latest_within_one_edge_kind(run, store, model_id, tmp_path: Path):
    torch.manual_seed(0)
    path = tmp_path / "mlp.safetensors"
    save_file(nets.digits_mlp().state_dict(), str(path))
    assert run("ingest", str(path), "--arch", "neuronmap.examples.nets:digits_mlp", "--name", model_id).exit_code == 0
    weights = run_clustering(store, model_id, ClusterConfig(n_clusters=4)).id
    assert run("activations", model_id, "--data", "digits", "--corr", "pearson").exit_code == 0
    activations = run_clustering(store, model_id, ClusterConfig(n_clusters=3, edges="digits-pearson")).id  # newer

    def assessed(partition: str) -> list[str]:
        return [a["method"] for a in list_assessments(store, partition)]

    imp = run("importance", model_id, "--random-sets", "5", "--format", "json")
    assert imp.exit_code == 0, imp.output
    assert f"partition latest = {weights}" in imp.output and "weight graph" in imp.output
    assert assessed(weights) == ["importance"] and assessed(activations) == []
    coh = run("coherence", model_id, "--edges", "digits-pearson", "--method", "examples", "--random-sets", "5")
    assert coh.exit_code == 0, coh.output
    assert f"partition latest = {activations}" in coh.output and "'digits-pearson'" in coh.output
    assert assessed(activations) == ["coherence_examples"]
    explicit = run("importance", model_id, "--partition", activations, "--random-sets", "5")
    assert explicit.exit_code == 0 and "partition latest" not in explicit.output
    assert assessed(activations) == ["importance", "coherence_examples"]


def test_importance_and_coherence_from_the_cli(run, store, model_id, tmp_path: Path):
    torch.manual_seed(0)
    path = tmp_path / "mlp.safetensors"
    save_file(nets.digits_mlp().state_dict(), str(path))
    assert run("ingest", str(path), "--arch", "neuronmap.examples.nets:digits_mlp", "--name", model_id).exit_code == 0
    assert run("cluster", model_id, "--k", "4").exit_code == 0
    imp = run("importance", model_id, "--random-sets", "10", "--format", "json")
    assert imp.exit_code == 0, imp.output
    rows = json.loads(imp.output[imp.output.index("[") :])
    assert rows and {"p_value", "p_adjusted", "category"} <= set(rows[0])
    assert all(1 / 11 - 1e-12 <= r["p_value"] <= 1 for r in rows if r["p_value"] is not None)
    coh = run("coherence", model_id, "--method", "examples", "--random-sets", "10", "--out", str(tmp_path / "c"))
    assert coh.exit_code == 0, coh.output
    assert "Stored as" in coh.output and any((tmp_path / "c" / "examples").glob("*.png"))
    bad = run("coherence", model_id, "--method", "vibes")
    assert bad.exit_code != 0 and "--method" in bad.output
    assert run("query", "important-modules", "--model", model_id).exit_code == 0
