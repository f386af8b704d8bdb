"""Transformer assessments through the real Neo4j: a planted two-task GPT-2 saved as a Hugging Face directory,
ingested, partitioned into its halves, assessed from its directory and read back by the library queries."""

from __future__ import annotations

import html
import json

import numpy as np
import pytest

from neuronmap.loaders.ingest.weights import ingest
from neuronmap.loaders.transformers import graph_from_transformer, load_transformer
from neuronmap.service.errors import SourceUnavailableError
from neuronmap.service.http.export import export_partition_page
from neuronmap.service.runs.transformer_assessment import run_transformer_coherence, run_transformer_importance
from neuronmap.service.store.assessments import latest_assessment, read_assessment
from neuronmap.service.store.library import run_library_query
from neuronmap.service.store.writeback import write_partition
from tests.loaders.test_tokens import _word_tokenizer
from tests.service.transformer_models import CONTEXT, N_BLOCKS, one_thread, planted_two_task


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    planted = planted_two_task()
    path = tmp_path_factory.mktemp("planted") / "gpt2-two-task"
    planted.model.save_pretrained(path)
    _word_tokenizer(path)  # a tokenizer.json beside the weights, which text: data is read with
    return planted, path


def _partition(store, name, graph, halves) -> str:
    labels = np.tile(halves, N_BLOCKS)
    partition = f"{name}/p-halves"
    write_partition(store, name, partition, {"k": 2, "method": "planted"}, labels, np.arange(graph.n_neurons))
    return partition


def test_importance_round_trips_and_important_modules_reads_it(store, model_id, planted_dir):
    planted, path = planted_dir
    graph = load_transformer(path, top_k=8)
    ingest(store, model_id, graph)
    partition = _partition(store, model_id, graph, planted.halves)
    with one_thread():
        result = run_transformer_importance(
            store, model_id, "latest", data="two-task", n_null=9, context=CONTEXT, heldout=0.05, device="cpu"
        )
    assert result.partition == partition and result.assessment is not None
    assert len(result.subclusters) == 2 * N_BLOCKS and result.task_names == ["count", "permute"]
    summary, rows = read_assessment(store, result.assessment)
    assert summary["kind"] == "transformer" and summary["ablation"] == "mean" and summary["n_null"] == 9
    assert summary["loss"] == pytest.approx(result.loss) and summary["dataset"] == "two-task"
    stored = {(row["layer_name"], row["cluster"]): row["stats"] for row in rows}
    for sub in result.subclusters:
        stats = stored[(sub.layer_name, sub.cluster)]
        assert stats["delta_loss"] == pytest.approx(sub.delta_loss)
        assert stats["p_task"] == pytest.approx(sub.p_task) and stats["category"] == sub.category
    everything = list(run_library_query(store, "important_modules", model=model_id, partition="latest", alpha=1.0))
    assert {(r["layer"], r["cluster"]) for r in everything} == {
        (s.layer_name, s.cluster) for s in result.subclusters if s.p_adjusted is not None and s.p_adjusted < 1.0
    }


def test_coherence_round_trips_one_assessment_per_method(store, model_id, planted_dir, tmp_path):
    planted, path = planted_dir
    graph = load_transformer(path, top_k=8)
    ingest(store, model_id, graph)
    partition = _partition(store, model_id, graph, planted.halves)
    with one_thread():
        results = run_transformer_coherence(
            store,
            model_id,
            methods=("examples", "logits", "inputs"),
            data="two-task",
            n_null=19,
            context=CONTEXT,
            heldout=0.1,
            device="cpu",
            max_fraction=0.9,
            k=8,
        )
    assert [r.method for r in results] == ["coherence_examples", "coherence_logits", "coherence_inputs"]
    for result in results:
        summary, rows = read_assessment(store, result.assessment)
        assert summary["n_coherent"] == result.n_coherent and summary["kind"] == "transformer"
        stored = {(row["layer_name"], row["cluster"]): row["stats"] for row in rows}
        for sub in result.subclusters:
            stats = stored[(sub.layer_name, sub.cluster)]
            assert stats["top_tokens"] == sub.top_tokens and stats["p_adjusted"] == pytest.approx(sub.p_adjusted)
    for sub in results[1].subclusters:  # the planted halves write their own task's tokens: no random set as much
        assert min(sub.p_entropy, sub.p_concentration) == pytest.approx(1 / 20)
    examples = list(
        run_library_query(store, "coherent_modules", model=model_id, method="coherence_examples", alpha=1.0)
    )
    assert {r["assessment"] for r in examples} <= {results[0].assessment}
    logits = list(run_library_query(store, "coherent_modules", model=model_id, method="coherence_logits", alpha=1.0))
    assert {r["assessment"] for r in logits} == {results[1].assessment}
    assert len(logits) == sum(sub.p_adjusted < 1.0 for sub in results[1].subclusters)
    page = export_partition_page(store, model_id, partition, tmp_path / "report.html").read_text()  # as in `report`
    section = page.split("<h2 id='tokens'>", 1)[1].split("<h2>", 1)[0]
    assert section.count("<h3>") == 2 * N_BLOCKS  # a table per sub-cluster
    for sub in results[1].subclusters:  # its output tokens, input tokens and example windows, in its own table
        table = section.split(f"module {sub.cluster} · {sub.layer_name} ", 1)[1].split("</table>", 1)[0]
        assert all(f"<code>{html.escape(t)}</code>" in table for t in sub.top_tokens[:12])
        inputs = next(r for r in results[2].subclusters if (r.layer_name, r.cluster) == (sub.layer_name, sub.cluster))
        assert all(f"<code>{html.escape(t)}</code>" in table for t in inputs.top_tokens[:12])
        examples = next(r for r in results[0].subclusters if (r.layer_name, r.cluster) == (sub.layer_name, sub.cluster))
        assert table.count("example window") == min(5, len(examples.windows)) > 0


def test_a_model_from_memory_needs_its_module(store, model_id):
    planted = planted_two_task()
    graph = graph_from_transformer(planted.model, top_k=4)
    ingest(store, model_id, graph)
    _partition(store, model_id, graph, planted.halves)
    with pytest.raises(SourceUnavailableError, match="ingested from Python.*module=your_model"):
        run_transformer_importance(store, model_id, data="two-task", context=CONTEXT)


@pytest.fixture
def run(connection, tmp_path):
    from click.testing import CliRunner

    from neuronmap.service.cli import cli

    env = {
        "NEO4J_URI": connection.uri,
        "NEO4J_USERNAME": connection.user,
        "NEO4J_PASSWORD": connection.password.get_secret_value(),
        "NEURONMAP_HOME": str(tmp_path / "home"),
    }
    return lambda *args: CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_the_cli_assesses_a_transformer_on_text_read_with_its_tokenizer(store, model_id, planted_dir, run, tmp_path):
    planted, path = planted_dir
    graph = load_transformer(path, top_k=8)
    ingest(store, model_id, graph)
    partition = _partition(store, model_id, graph, planted.halves)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("the cat sat on the mat and the dog sat on the cat " * 30)
    common = ["--data", f"text:{corpus}", "--context", "12", "--random-sets", "9", "--format", "json"]
    with one_thread():
        result = run("importance", model_id, "--ablation", "zero", "--double", *common)
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert len(rows) == 2 * N_BLOCKS and {"delta_loss", "p_value", "category"} <= set(rows[0])
        summary, pairs = latest_assessment(store, partition, "importance_pairs")  # stored as the MLPs' are
        assert summary["kind"] == "transformer" and summary["n_null"] == 50 and len(pairs) == 6  # C(4, 2)
        assert all(
            p["stats"]["interaction"]
            == pytest.approx(p["stats"]["delta_ab"] - p["stats"]["delta_a"] - p["stats"]["delta_b"])
            for p in pairs
        )
        result = run("coherence", model_id, "--method", "logits,inputs", *common)
        assert result.exit_code == 0, result.output
        assert {row["method"] for row in json.loads(result.stdout)} == {"coherence_logits", "coherence_inputs"}
    listed = run("query", "important-modules", "--model", model_id, "--alpha", "1.0", "--format", "json")
    assert listed.exit_code == 0, listed.output
    refused = run("importance", model_id)  # digits: a classification set, not token data
    assert refused.exit_code != 0 and "is a transformer; its importance reads token data" in refused.output
