"""Transformers through the store and the command line (methods.md §10): `neuronmap ingest DIR`, the edge parts
of gated MLPs on the WEIGHT relationships, sparse top-k blocks from ingest to clustering, and the refusals.

Models are tiny random-init configs built in code and saved with ``save_pretrained``; nothing is downloaded.
"""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner

from neuronmap.cypher.adhoc import AdHocStatement
from neuronmap.loaders.ingest.weights import ingest, model_status
from neuronmap.loaders.transformers import fraction_of_partition, load_transformer
from neuronmap.service.cli import cli
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.clustering.sparse_blocks import SparseStack
from neuronmap.service.errors import SourceUnavailableError
from neuronmap.service.store.model_source import reload_source
from neuronmap.service.store.pull import pull_subgraph
from neuronmap.service.store.transformers import block_layers


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """llama: SwiGLU and GQA, 3 blocks of 12 neurons; gpt2: 2 blocks of 256 neurons, wide enough for CSR blocks."""
    root = tmp_path_factory.mktemp("transformer-store")
    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            num_hidden_layers=3,
            hidden_size=16,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=12,
            max_position_embeddings=16,
            vocab_size=40,
        )
    )
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            n_layer=2, n_embd=16, n_head=2, n_inner=256, n_positions=16, vocab_size=40, bos_token_id=0, eos_token_id=1
        )
    )
    paths = {"llama": root / "llama-tiny", "gpt2": root / "gpt2-wide"}
    llama.save_pretrained(paths["llama"])
    gpt2.save_pretrained(paths["gpt2"])
    return paths


@pytest.fixture
def run(connection, tmp_path):
    env = {
        "NEO4J_URI": connection.uri,
        "NEO4J_USERNAME": connection.user,
        "NEO4J_PASSWORD": connection.password.get_secret_value(),
        "NEURONMAP_HOME": str(tmp_path / "home"),
        "COLUMNS": "200",
    }

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


def _ad_hoc(store, text: str, **params):
    return store.run_ad_hoc(AdHocStatement(text=text), params).rows


def test_cli_ingests_a_model_directory_with_its_gated_parts_and_clusters_it(run, store, model_id, saved):
    result = run("ingest", str(saved["llama"]), "--name", model_id, "--top-k", "4")
    assert result.exit_code == 0, result.output
    assert "3 layers, 36 neurons, 144 edges (top-4 per neuron and block, of 432 candidate edges)" in result.output
    stored = _ad_hoc(store, "MATCH (m:Model {name: $name}) RETURN properties(m) AS p", name=model_id)[0]["p"]
    assert (stored["family"], stored["graph"], stored["top_k"], stored["dtype"]) == ("llama", "virtual", 4, "float32")
    assert json.loads(stored["config"])["num_key_value_heads"] == 2
    assert len(stored["weight_sha256"]) == 1 and len(stored["sha256"]) == 64

    # every edge carries v_gate and v_up beside w = sqrt(v_gate² + v_up²), as the loader computed them
    graph = load_transformer(saved["llama"], top_k=4)
    rows = _ad_hoc(
        store,
        "MATCH (a:Neuron {model: $name})-[e:WEIGHT]->(b) RETURN a.ordinal AS s, b.ordinal AS d, e.w AS w, "
        "e.v_gate AS g, e.v_up AS u ORDER BY s, d",
        name=model_id,
    )
    want = {}
    for block in graph.blocks:
        i, j, w, parts = block.entries()
        for a, b, value, g, u in zip(i, j, w, parts["v_gate"], parts["v_up"]):
            want[(a + 12 * block.src_layer, b + 12 * block.dst_layer)] = (value, g, u)
    got = {(r["s"], r["d"]): (r["w"], r["g"], r["u"]) for r in rows}
    assert got.keys() == want.keys()
    for key, (w, g, u) in got.items():
        np.testing.assert_allclose((w, g, u), want[key], rtol=1e-12)
        assert w == pytest.approx(np.hypot(g, u), rel=1e-6)

    clustered = run("cluster", model_id, "--k", "2", "--shuffles", "2", "--seed", "0")
    assert clustered.exit_code == 0, clustered.output


def test_cli_refuses_misplaced_options_and_bad_directories_in_one_line(run, store, model_id, saved, tmp_path):
    file = tmp_path / "weights.safetensors"
    file.write_bytes(b"")
    cases = [
        (
            ("ingest", str(file), "--top-k", "3"),
            "Only a Hugging Face model directory (config.json and *.safetensors) takes --top-k",
        ),
        (("ingest", str(saved["llama"]), "--arch", "x:y"), "Only model files take --arch"),
        (("ingest", str(saved["llama"]), "--fold-norm"), "fold_norm applies to graph='mlp-in'"),
        (("ingest", str(tmp_path)), "has no config.json"),
    ]
    for args, message in cases:
        result = run(*args, "--name", model_id)
        assert result.exit_code != 0
        assert message in result.output.strip().splitlines()[-1], result.output  # the error is one line
    assert model_status(store, model_id) is None  # nothing was written


def test_sparse_top_k_blocks_stay_sparse_from_loader_to_clustering(store, model_id, saved):
    graph = load_transformer(saved["gpt2"], top_k=4)  # 256 × 256 at 4 a row: CSR
    (block,) = graph.blocks
    assert block.is_sparse and block.n_edges == graph.n_edges == 256 * 4
    dense = load_transformer(saved["gpt2"], top_k=4, sparse=False).blocks[0].weight
    np.testing.assert_array_equal(block.weight.toarray(), dense)

    assert ingest(store, model_id, graph) == 256 * 4
    pulled = pull_subgraph(store, model_id)
    ((_, _, weight),) = pulled.graph.blocks
    assert isinstance(weight, SparseStack) and weight.numel() == 256 * 4
    np.testing.assert_array_equal(weight.to_dense().numpy(), np.abs(dense))
    in_memory = BlockGraph.from_model_graph(graph)
    assert isinstance(in_memory.blocks[0][2], SparseStack)
    np.testing.assert_array_equal(in_memory.to_dense().numpy(), pulled.graph.to_dense().numpy())


def test_cluster_one_mlp_in_block_by_number_stores_its_within_fraction(run, store, model_id, saved):
    assert run("ingest", str(saved["llama"]), "--name", model_id, "--graph", "mlp-in").exit_code == 0
    result = run("cluster", model_id, "--k", "2", "--layers", "1", "--seed", "0", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["layers"] == "model.layers.1.post_attention_layernorm:model.layers.1.mlp"
    # C as Golechha et al. define it, from the stored labels and the loader's W_in of block 1
    labels = {row["ordinal"]: row["cluster"] for row in store.run("admin.partition_labels", partition=summary["id"])}
    graph = load_transformer(saved["llama"], graph="mlp-in")
    first = int(graph.offsets[2])
    order = np.array([labels.get(first + i, -1) for i in range(16 + 12)])
    want = fraction_of_partition(graph, 1, order)
    assert summary["within_fraction"] == pytest.approx(want.fraction, rel=1e-9)
    assert summary["within_fraction_no_structure"] == want.no_structure == 0.5
    stored = _ad_hoc(store, "MATCH (p:Partition {id: $id}) RETURN p.within_fraction AS c", id=summary["id"])
    assert stored[0]["c"] == pytest.approx(want.fraction, rel=1e-9)

    with pytest.raises(SourceUnavailableError, match="is a transformer") as refused:
        reload_source(store, model_id)  # lesions and activation graphs take MLP and CNN files only
    assert "\n" not in str(refused.value)


def test_block_references_docstring():
    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner()
    for test in finder.find(block_layers, "block_layers", globs={"block_layers": block_layers}):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
