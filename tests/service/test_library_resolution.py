"""What a user's words resolve to, on a model whose layers are named like an nn.Sequential's ("0", "2", "4") and
that has partitions of its weights and of an activation graph: layer references (by name; an index only when asked
for), 'latest' (the newest partition of the graph asked for, said out loud), the partition's own edges in every
figure, `query --show` statements that paste and run, and compare-partitions' scores in its JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import neo4j
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from neuronmap.examples import nets
from neuronmap.loaders import graph_from_module
from neuronmap.loaders.activations import compute_correlations, sparsify
from neuronmap.loaders.datasets import load_dataset
from neuronmap.loaders.ingest.activations import ingest_activation_graph
from neuronmap.loaders.ingest.weights import ingest
from neuronmap.service.cli import cli
from neuronmap.service.errors import (
    AssessmentNotFoundError,
    ClusteringInputError,
    LibraryQueryInputError,
    NoPartitionError,
)
from neuronmap.service.http.export import export_partition_page
from neuronmap.service.report import read_report_data
from neuronmap.service.runs import ClusterConfig, PartitionResult, run_clustering
from neuronmap.service.store.assessments import read_partition_layout, write_assessment
from neuronmap.service.store.library import (
    cypher_literal,
    library_queries,
    prepare_library_query,
    resolve_partition,
    run_library_query,
)
from neuronmap.service.store.pull import find_layer, layer_label, resolve_layers
from neuronmap.service.store.writeback import read_labels

SEQUENTIAL_LAYERS = [
    {"index": 0, "name": "input", "kind": "input", "role": "input", "size": 64},
    {"index": 1, "name": "0", "kind": "linear", "role": "hidden", "size": 64},
    {"index": 2, "name": "2", "kind": "linear", "role": "hidden", "size": 64},
    {"index": 3, "name": "4", "kind": "linear", "role": "output", "size": 10},
]


@dataclass
class Digits:
    name: str
    weight: PartitionResult  # a weight partition
    pruned: PartitionResult  # a weight partition of the edges with |w| >= 0.1
    acts: PartitionResult  # an activation-graph partition, the newest of all
    only_acts: str  # a second model whose only partition is of an activation graph


@pytest.fixture(scope="module")
def digits(store) -> Iterator[Digits]:
    torch.manual_seed(0)
    net = nets.digits_mlp()
    token = secrets.token_hex(3)
    name, other = f"test-resolution-{token}", f"test-resolution-acts-{token}"
    inputs = load_dataset("digits").x_test[:300]
    edges = sparsify(compute_correlations(net, inputs, method="pearson", device="cpu", data="digits"), min_r2=0.01)
    try:
        for model in (name, other):
            ingest(store, model, graph_from_module(net))
            ingest_activation_graph(store, model, "acts", edges)
        weight = run_clustering(store, name, ClusterConfig(n_clusters=4, random_state=0))
        pruned = run_clustering(store, name, ClusterConfig(n_clusters=4, min_weight=0.1, random_state=0))
        acts = run_clustering(store, name, ClusterConfig(n_clusters=3, edges="acts", random_state=0))
        run_clustering(store, other, ClusterConfig(n_clusters=3, edges="acts", random_state=0))
        # an importance and a coherence run on the activation partition only (their statistics made up)
        layout = read_partition_layout(store, name, acts.id)
        for method in ("importance", "coherence_features"):
            scores = [
                {
                    "cluster": s.cluster,
                    "layer": s.layer,
                    "stats": {"p_value": 0.01, "p_adjusted": 0.02 * (i + 1), "delta_accuracy": -0.1 * i},
                }
                for i, s in enumerate(layout.subclusters)
            ]
            write_assessment(store, layout, method, {"n_null": 10, "dataset": "digits"}, scores)
        yield Digits(name, weight, pruned, acts, other)
    finally:
        for model in (name, other):
            store.run("admin.delete_model", model=model)


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


# ---------------------------------------------------------------------------------------------- layers


def test_a_layer_is_named_by_its_name_and_an_index_needs_its_own_spelling():
    layers = SEQUENTIAL_LAYERS
    assert find_layer(layers, "2")["index"] == 2  # the name "2" is also index 2: the same layer, no doubt
    assert find_layer(layers, "4")["index"] == 3  # there is no index 4: the name
    assert find_layer(layers, index=1)["name"] == "0"
    assert find_layer(layers, "0", 1)["index"] == 1
    with pytest.raises(ClusteringInputError, match=r"'0' is ambiguous.*0 \(hidden, Linear, 64\).*input \(input, 64\)"):
        find_layer(layers, "0")
    with pytest.raises(ClusteringInputError, match=r"no layer named '1'.*--layer-index 1"):
        find_layer(layers, "1")
    with pytest.raises(ClusteringInputError, match="different layers"):
        find_layer(layers, "2", 1)
    with pytest.raises(ClusteringInputError, match="no layer at index 7"):
        find_layer(layers, index=7)
    assert resolve_layers(layers, "2:4") == (2, 3)
    assert resolve_layers(layers, None, indexes="1:2") == (1, 2)
    with pytest.raises(ClusteringInputError, match="ambiguous"):
        resolve_layers(layers, "0:2")  # cluster --layers 0:2 no longer quietly means "the layers named 0 and 2"
    with pytest.raises(ClusteringInputError, match="not both"):
        resolve_layers(layers, "2", indexes="1")
    assert [layer_label(layer) for layer in layers] == [
        "input (input, 64)",
        "0 (hidden, Linear, 64)",
        "2 (hidden, Linear, 64)",
        "4 (output, Linear, 10)",
    ]


def test_the_neuron_query_takes_a_name_or_an_explicit_index(store, digits):
    by_index = run_library_query(store, "neuron", model=digits.name, layer_index=1, unit=5, limit=2)
    assert by_index[0]["layer"] == "0" and by_index[0]["ordinal"] == 64 + 5  # hidden layer "0", not input 5
    with pytest.raises(LibraryQueryInputError, match=r"ambiguous.*--layer-index 1.*--layer-index 0"):
        run_library_query(store, "neuron", model=digits.name, layer="0", unit=5)
    with pytest.raises(LibraryQueryInputError, match="no layer named '3'.*--layer-index 3"):
        run_library_query(store, "neuron", model=digits.name, layer=3, unit=5)  # an int from Python is no index
    named = run_library_query(store, "neuron", model=digits.name, layer="2", unit=5, limit=2)
    assert named[0]["ordinal"] == 128 + 5


def test_cluster_layers_by_name_or_index(store, digits):
    with pytest.raises(ClusteringInputError, match="ambiguous"):
        run_clustering(store, digits.name, ClusterConfig(n_clusters=2, layers="0:2"))
    result = run_clustering(store, digits.name, ClusterConfig(n_clusters=2, layer_indexes="1:2"))
    labels = read_labels(store, result.id, 202)
    assert result.layers == "0:2" and (labels[:64] == -1).all() and (labels[192:] == -1).all()
    store.run("admin.delete_partition", partition=result.id)


def test_tables_print_layers_with_role_kind_and_size(run, digits):
    table = run("query", "module-span", "--model", digits.name)
    assert table.exit_code == 0, table.output
    assert "(hidden, Linear, 64)" in table.stdout and "(output, Linear, 10)" in table.stdout
    as_json = json.loads(run("query", "module-span", "--model", digits.name, "--format", "json").stdout)
    assert {row["last_layer"] for row in as_json} <= {"input", "0", "2", "4"}  # exports keep the bare names


# ---------------------------------------------------------------------------------------------- latest


def test_latest_is_the_newest_partition_of_the_graph_asked_for(store, digits):
    assert resolve_partition(store, digits.name, "latest") == digits.pruned.id  # not the newer activation one
    assert resolve_partition(store, digits.name, "latest", edges="acts") == digits.acts.id
    rows = run_library_query(store, "module_span", model=digits.name)
    assert rows.resolved == {"partition": digits.pruned.id}
    assert run_library_query(store, "module_span", model=digits.name, partition=digits.acts.id).resolved == {}
    with pytest.raises(NoPartitionError, match=r"no partition of its weight graph.*activation graph 'acts'.*--edges"):
        resolve_partition(store, digits.only_acts, "latest")
    assert resolve_partition(store, digits.only_acts, "latest", edges="acts")
    with pytest.raises(
        NoPartitionError, match="of its activation graph 'other-graph'.*cut from its weights, activation"
    ):
        resolve_partition(store, digits.name, "latest", edges="other-graph")
    newest = run_library_query(store, "compare_models", models=[digits.name])
    assert [(row["partition"], row["graph"]) for row in newest] == [(digits.pruned.id, "weight")]
    of_acts = run_library_query(store, "compare_models", models=[digits.name], edges="acts")
    assert [row["partition"] for row in of_acts] == [digits.acts.id]


def test_a_query_without_an_assessment_names_the_partitions_with_one(store, digits, run):
    with pytest.raises(
        AssessmentNotFoundError, match=f"importance for partition '{digits.pruned.id}'.*{digits.acts.id}"
    ):
        run_library_query(store, "important_modules", model=digits.name)  # latest: the weight partition
    found = run_library_query(store, "important_modules", model=digits.name, edges="acts")
    assert found and {row["assessment"].split("/")[-1].split("-")[0] for row in found} == {"importance"}
    assert run_library_query(store, "important_modules", partition=digits.acts.id, alpha=1e-9) == []  # none passed
    with pytest.raises(AssessmentNotFoundError, match="coherence_examples"):
        run_library_query(store, "coherent_modules", partition=digits.acts.id, method="coherence_examples")
    cli = run("query", "important-modules", "--model", digits.name)
    assert cli.exit_code != 0 and digits.acts.id in cli.output and "Traceback" not in cli.output


def test_every_command_that_resolves_latest_says_which_partition(run, digits, tmp_path):
    said = f"partition latest = {digits.pruned.id}"
    assert said in run("query", "module-cohesion", "--model", digits.name).stderr
    assert said in run("report", digits.name, "--out", str(tmp_path)).stderr
    acts = run("query", "module-flow", "--model", digits.name, "--edges", "acts", "--format", "csv")
    assert f"partition latest = {digits.acts.id}" in acts.stderr and "activation graph 'acts'" in acts.stderr
    compared = run("query", "compare-partitions", "--model", digits.name, "--a", digits.weight.id, "--b", "latest")
    assert f"partition_b: {said}" in compared.stderr


# ---------------------------------------------------------------------------------------------- own edges


@pytest.mark.parametrize("which", ["weight", "pruned", "acts"])
def test_the_n_cut_terms_of_every_partition_add_up_to_its_stored_n_cut(store, digits, which, tmp_path):
    partition: PartitionResult = getattr(digits, which)
    rows = run_library_query(store, "module_cohesion", partition=partition.id)
    assert sum(row["ncut_term"] for row in rows) == pytest.approx(partition.ncut, rel=1e-6)
    data = read_report_data(store, digits.name, partition.id)
    assert sum(row["ncut_term"] for row in data.cohesion) == pytest.approx(partition.ncut, rel=1e-6)
    flow = run_library_query(store, "module_flow", partition=partition.id)
    within = sum(row["within"] for row in rows)
    assert sum(row["weight"] for row in flow) == pytest.approx(within + sum(row["cut"] for row in rows) / 2, rel=1e-9)
    page = export_partition_page(store, digits.name, partition.id, tmp_path / "report.html").read_text("utf-8")
    assert f"n-cut terms: {sum(row['ncut_term'] for row in rows):.6g} (stored n-cut: {partition.ncut:.6g})" in page
    if which == "acts":
        assert "activation graph &#x27;acts&#x27;" in page and "r²" in page
        core = run_library_query(store, "module_core", partition=partition.id, limit=2)
        assert core and all(0 < row["within_share"] <= 1 for row in core)
        index = {name: i for i, name in enumerate(["input", "0", "2", "4"])}
        for row in run_library_query(store, "module_paths", partition=partition.id):  # correlations to later layers
            steps = [index[step.split(":")[0]] for step in row["path"]]
            assert steps == sorted(set(steps)) and len(row["weights"]) == row["length"]


# ---------------------------------------------------------------------------------------------- --show


@pytest.fixture(scope="module")
def driver(connection) -> Iterator[neo4j.Driver]:
    with neo4j.GraphDatabase.driver(
        connection.uri, auth=(connection.user, connection.password.get_secret_value()), notifications_min_severity="OFF"
    ) as driver:
        yield driver


def show_cases(digits: Digits) -> dict[str, list[str]]:
    """The CLI parameters for each library query, as a user would type them."""
    latest = ["--model", digits.name]
    return {
        "module_span": latest,
        "module_flow": [*latest, "--edges", "acts"],
        "module_cohesion": latest,
        "module_core": [*latest, "--limit", "3"],
        "module_paths": latest,
        "partition_stats": [*latest, "--edges", "acts"],
        "neuron": [*latest, "--layer", "2", "--unit", "3"],
        "compare_models": ["--models", digits.name],
        "compare_partitions": [*latest, "--a", digits.weight.id, "--b", "latest"],
        "important_modules": [*latest, "--edges", "acts", "--alpha", "0.07"],
        "coherent_modules": [*latest, "--edges", "acts"],
    }


def rows_of(driver: neo4j.Driver, database: str, text: str, params: dict | None = None) -> list[dict]:
    with driver.session(database=database) as session:
        return [record.data() for record in session.run(text, params or {})]


@pytest.mark.parametrize("name", [q.name for q in library_queries()])
def test_a_shown_query_pasted_into_the_driver_returns_the_same_rows(run, store, driver, digits, name):
    args = show_cases(digits)[name]
    shown = run("query", name.replace("_", "-"), "--show", *args)
    assert shown.exit_code == 0, shown.output
    text = shown.stdout
    statement_start = next(i for i, line in enumerate(text.splitlines()) if not line.startswith("//"))
    assert statement_start > 3 and not any(line.startswith("--") for line in text.splitlines())
    assert "$" not in "\n".join(text.splitlines()[statement_start:])  # every parameter written in
    query = next(q for q in library_queries() if q.name == name)
    typed = {}
    for option, value in zip(args[::2], args[1::2]):
        key = {"a": "partition_a", "b": "partition_b"}.get(option.lstrip("-"), option.lstrip("-"))
        as_typed = key in ("model", "layer", "edges", "models", "partition_a", "partition_b")
        typed[key] = value if as_typed else query.param(key).cast(value)
    expected = run_library_query(store, name, **typed)
    assert expected, "each case should return rows"
    assert rows_of(driver, store.database, text) == list(expected)
    # without parameters the statement keeps its $parameters, and runs with them, // header and all
    template = run("query", name.replace("_", "-"), "--show").stdout
    params = prepare_library_query(store, name, **typed).params
    assert "$" in template and rows_of(driver, store.database, template, params) == list(expected)


def test_cypher_literals_escape_what_a_name_may_hold():
    assert cypher_literal("it's \\ a\nname") == "'it\\'s \\\\ a\\nname'"
    assert cypher_literal([1, 0.05, None, True, "a"]) == "[1, 0.05, null, true, 'a']"
    assert cypher_literal({"a b": 1e-9}) == "{`a b`: 1e-09}"


# ---------------------------------------------------------------------------------------------- compare


def test_compare_partitions_puts_ari_and_nmi_in_its_json_and_csv(run, store, digits):
    a, b = digits.weight.id, digits.pruned.id
    labels_a, labels_b = read_labels(store, a, 202), read_labels(store, b, 202)
    both = (labels_a >= 0) & (labels_b >= 0)
    ari = adjusted_rand_score(labels_a[both], labels_b[both])
    nmi = normalized_mutual_info_score(labels_a[both], labels_b[both])
    either = (labels_a >= 0) | (labels_b >= 0)  # a neuron in neither partition is in no cell
    compare = ["query", "compare-partitions", "--a", a, "--b", b]
    rows = json.loads(run(*compare, "--format", "json").stdout)
    assert rows and all(row["ari"] == pytest.approx(ari) and row["nmi"] == pytest.approx(nmi) for row in rows)
    assert {(row["partition_a"], row["partition_b"]) for row in rows} == {(a, b)}
    assert sum(row["n"] for row in rows) == int(either.sum())
    table = list(csv.DictReader(io.StringIO(run(*compare, "--format", "csv").stdout)))
    assert float(table[0]["ari"]) == pytest.approx(ari) and float(table[0]["nmi"]) == pytest.approx(nmi)
    matrix = json.loads(run(*compare, "--matrix", "--format", "json").stdout)
    assert [row["cluster_a"] for row in matrix] == sorted(set(labels_a[either].tolist()))
    for row in matrix:
        assert row["ari"] == pytest.approx(ari)
        for cluster in sorted(set(labels_b[either].tolist())):
            in_cell = either & (labels_a == row["cluster_a"]) & (labels_b == cluster)
            assert row[str(cluster)] == int(np.count_nonzero(in_cell))
    shown = run("query", "compare-partitions", "--a", a, "--b", b, "--matrix")
    assert shown.exit_code == 0 and "ARI" in shown.stderr
    assert run("query", "module-span", "--matrix").exit_code != 0
