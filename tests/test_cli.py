"""The command line end to end against the real Neo4j: ingest, models, drop, and every bad input."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from neuronmap.examples import nets
from neuronmap.loaders.ingest.weights import model_status
from neuronmap.service.cli import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(connection, tmp_path):
    env = {
        "NEO4J_URI": connection.uri,
        "NEO4J_USERNAME": connection.user,
        "NEO4J_PASSWORD": connection.password.get_secret_value(),
        "NEURONMAP_HOME": str(tmp_path / "home"),
    }

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def mlp_file(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "mlp.safetensors"
    save_file(nets.digits_mlp().state_dict(), str(path))
    return path


def _listed(run, name):
    result = run("models", "--format", "json")
    assert result.exit_code == 0, result.output
    return {m["name"]: m for m in json.loads(result.output)}.get(name)


def test_ingest_list_replace_and_drop(run, store, model_id, mlp_file):
    arch = "neuronmap.examples.nets:digits_mlp"
    result = run("ingest", str(mlp_file), "--arch", arch, "--name", model_id)
    assert result.exit_code == 0, result.output
    listed = _listed(run, model_id)
    assert listed["status"] == "ready"
    assert (listed["n_layers"], listed["n_neurons"], listed["n_edges"]) == (4, 64 + 64 + 64 + 10, 64 * 64 * 2 + 64 * 10)
    again = run("ingest", str(mlp_file), "--arch", arch, "--name", model_id)
    assert again.exit_code != 0 and "--replace" in again.output
    assert run("ingest", str(mlp_file), "--arch", arch, "--name", model_id, "--replace").exit_code == 0
    dropped = run("drop", model_id)
    assert dropped.exit_code == 0 and "Dropped" in dropped.output
    assert _listed(run, model_id) is None
    assert run("drop", model_id).exit_code != 0


def test_ingest_without_relationships_stores_packed_edges_and_single_edge_queries_say_so(
    run, store, model_id, mlp_file
):
    arch = "neuronmap.examples.nets:digits_mlp"
    result = run("ingest", str(mlp_file), "--arch", arch, "--name", model_id, "--no-relationships")
    assert result.exit_code == 0, result.output
    edges = 64 * 64 * 2 + 64 * 10
    assert _listed(run, model_id)["n_edges"] == edges
    counts = store.run("admin.model_counts", model=model_id)[0]
    assert (counts["n_edges"], counts["n_block_edges"]) == (0, edges)
    refused = run("query", "neuron", "--model", model_id, "--layer-index", "1", "--unit", "0")
    assert refused.exit_code != 0 and "--no-relationships" in refused.output and "Traceback" not in refused.output


def test_export_program_needs_no_arch(run, store, model_id, tmp_path):
    torch.manual_seed(0)
    cnn = nets.digits_cnn().eval()
    path = tmp_path / "cnn.pt2"
    torch.export.save(torch.export.export(cnn, (torch.zeros(1, 1, 8, 8),)), str(path))
    result = run("ingest", str(path), "--name", model_id)
    assert result.exit_code == 0, result.output
    listed = _listed(run, model_id)
    assert listed["status"] == "ready" and listed["arch"] == "torch.export"
    assert listed["n_neurons"] == 1 + 16 + 16 + 32 + 10


@pytest.mark.parametrize("case", ["random-bytes", "pickled-module", "wrong-arch", "missing-arch", "nan", "no-file"])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(run, store, model_id, tmp_path, mlp_file, case):
    arch = ["--arch", "neuronmap.examples.nets:digits_mlp"]
    if case == "random-bytes":
        path = tmp_path / "junk.pt"
        path.write_bytes(secrets.token_bytes(2048))
        args, expect = [str(path), *arch], "junk.pt"
    elif case == "pickled-module":
        path = tmp_path / "whole.pt"
        torch.save(nets.digits_mlp(), path)
        args, expect = [str(path), *arch], "weights_only"
    elif case == "wrong-arch":
        args, expect = [str(mlp_file), "--arch", "neuronmap.examples.nets:mlp_4x256"], "mlp_4x256"
    elif case == "missing-arch":
        args, expect = [str(mlp_file)], "--arch"
    elif case == "nan":
        state = nets.digits_mlp().state_dict()
        state["2.weight"][0, 0] = float("nan")
        path = tmp_path / "nan.safetensors"
        save_file(state, str(path))
        args, expect = [str(path), *arch], "non-finite"
    else:
        args, expect = [str(tmp_path / "absent.pt"), *arch], "absent.pt"
    result = run("ingest", *args, "--name", model_id)
    assert result.exit_code != 0
    assert expect in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2  # "Error: …", perhaps wrapped once
    assert model_status(store, model_id) is None


def _commands():
    for name, command in cli.commands.items():
        if hasattr(command, "commands"):
            for sub in command.commands:
                yield f"{name} {sub}", command.commands[sub]
        else:
            yield name, command


@pytest.mark.parametrize("name,command", list(_commands()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_command_has_help_an_example_and_a_place_in_the_readme(name, command):
    assert command.help and "\b" in command.help, f"{name} needs help with an example under \\b"
    assert f"neuronmap {name}" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("limit,expect", [("-5", "limit must be >= 1, got -5"), ("99999999999999999999", "64 bits")])
@pytest.mark.parametrize("command", [["query", "module-core", "--partition", "p"], ["jobs", "list"]])
def test_an_integer_outside_its_header_bounds_is_one_line(run, command, limit, expect):
    result = run(*command, "--limit", limit)
    assert result.exit_code != 0
    assert expect in result.output
    assert "Query '?'" not in result.output and "Query '" in result.output  # the error names the query
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2


def test_cypher_reads_by_default_writes_only_with_write_and_types_its_parameters(run):
    token = secrets.token_hex(4)
    refused = run("cypher", "CREATE (:CliProbe {token: $t})", "-p", "t", token)
    assert refused.exit_code != 0 and "--write" in refused.output and "Traceback" not in refused.output
    assert len(refused.output.strip().splitlines()) <= 2
    made = run(
        "cypher",
        "CREATE (:CliProbe {token: $t, n: $n, xs: $xs})",
        "-p",
        "t",
        token,
        "-p",
        "n",
        "3",
        "-p",
        "xs",
        "[1, 2]",
        "--write",
    )
    assert made.exit_code == 0, made.output
    read = run(
        "cypher", "MATCH (p:CliProbe {token: $t}) RETURN p.n + 1 AS n, p.xs AS xs", "-p", "t", token, "--format", "json"
    )
    assert read.exit_code == 0 and json.loads(read.output) == [{"n": 4, "xs": [1, 2]}]
    csv_out = run("cypher", "MATCH (p:CliProbe {token: $t}) RETURN p.n AS n", "-p", "t", token, "--format", "csv")
    assert csv_out.output.splitlines() == ["n", "3"]
    assert run("cypher", "MATCH (p:CliProbe {token: $t}) DELETE p", "-p", "t", token, "--write").exit_code == 0
    bad = run("cypher", "MATCH (n RETURN n")
    assert bad.exit_code != 0 and "SyntaxError" in bad.output and "Traceback" not in bad.output


def test_one_record_prints_vertically(run):
    result = run("cypher", "RETURN 1 AS alpha, 'two' AS beta, 3.5 AS gamma")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert not any("alpha" in line and "beta" in line for line in lines)  # no header row of every column
    assert any("alpha" in line and "1" in line for line in lines)
    assert any("gamma" in line and "3.5" in line for line in lines)
