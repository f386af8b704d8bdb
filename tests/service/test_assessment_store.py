"""Assessments end to end against the real Neo4j: a planted model ingested from its file, its partition assessed,
sub-clusters and statistics stored and read back by the library queries, and deleted with their partition or
model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuronmap.loaders import graph_from_module, load_graph
from neuronmap.loaders.ingest.weights import ingest
from neuronmap.loaders.tracing.trace_export import graph_from_exported
from neuronmap.service.errors import AssessmentInputError, LayerMismatchError, SourceUnavailableError
from neuronmap.service.report import FIGURES, write_report
from neuronmap.service.runs import (
    run_coherence,
    run_double_lesion,
    run_example_coherence,
    run_feature_coherence,
    run_importance,
)
from neuronmap.service.store.assessments import latest_assessment, list_assessments, read_partition_layout
from neuronmap.service.store.library import run_library_query
from neuronmap.service.store.writeback import new_partition_id, write_partition
from tests.service.test_importance import N_MODULES, planted_net

ARCH = "neuronmap.examples.nets:digits_mlp"


def store_planted(store, model_id: str, tmp_path, hidden_labels=None) -> tuple[str, str]:
    """Save the planted network to a file, ingest it, and store a partition; returns (partition id, file)."""
    net, modules = planted_net()
    path = tmp_path / "planted.pt"
    torch.save(net.state_dict(), path)
    graph = load_graph(path, arch=ARCH)
    ingest(store, model_id, graph)
    hidden = hidden_labels if hidden_labels is not None else (modules, modules)
    # inputs outside the partition, the hidden layers by module, output c in module c
    labels = np.concatenate([np.full(64, -1), hidden[0], hidden[1], np.arange(N_MODULES)])
    partition = new_partition_id(model_id)
    write_partition(store, model_id, partition, {"k": N_MODULES, "method": "planted"}, labels, np.arange(labels.size))
    return partition, str(path)


def test_importance_and_coherence_runs_are_stored_and_queried(store, model_id, tmp_path):
    partition, _ = store_planted(store, model_id, tmp_path)
    layout = read_partition_layout(store, model_id, "latest")
    assert layout.partition == partition and len(layout.subclusters) == 20
    assert [p.tolist() for p in layout.pools.values()] == [list(range(64))] * 2
    stages = []
    result = run_importance(
        store,
        model_id,
        "latest",
        dataset="digits",
        n_null=100,
        seed=0,
        device="cpu",
        on_progress=lambda stage, done, total: stages.append(stage),
        small_size=4,
    )
    assert result.assessment and result.partition == partition and result.n_important >= 16
    assert stages[0] == "load" and stages[-1] == "lesions"
    summary, rows = latest_assessment(store, partition, "importance")
    assert summary["n_null"] == 100 and summary["dataset"] == "digits" and summary["fisher_p"] < 1e-10
    assert summary["config_small_size"] == 4
    assert len(rows) == 20 and {r["layer_name"] for r in rows} == {"0", "2"}
    by_key = {(s.cluster, s.layer): s for s in result.subclusters}
    for row in rows:
        sub = by_key[(row["cluster"], row["layer"])]
        assert row["size"] == sub.size and row["stats"]["p_adjusted"] == pytest.approx(sub.p_adjusted)
        assert row["stats"]["category"] == sub.category and len(row["stats"]["class_accuracy"]) == 10
    important = run_library_query(store, "important_modules", model=model_id)  # partition 'latest'
    assert len(important) == sum(s.p_adjusted < 0.05 for s in result.subclusters) >= 16
    assert important[0]["delta_accuracy"] == min(r["delta_accuracy"] for r in important)
    assert {r["assessment"] for r in important} == {result.assessment}
    assert run_library_query(store, "important_modules", partition=partition, alpha=1e-9) == []

    examples = run_example_coherence(
        store, model_id, partition, dataset="digits", n_null=99, seed=0, device="cpu", out_dir=tmp_path / "images"
    )
    features = run_feature_coherence(store, model_id, partition, n_null=19, steps=8, device="cpu")
    coherent = run_library_query(store, "coherent_modules", model=model_id)
    assert {r["method"] for r in coherent} <= {"coherence_examples", "coherence_features"}
    assert sum(r["method"] == "coherence_examples" for r in coherent) == examples.n_coherent >= 10
    assert all(r["assessment"] in (examples.assessment, features.assessment) for r in coherent)
    only = run_library_query(store, "coherent_modules", partition=partition, method="coherence_features")
    assert {r["method"] for r in only} <= {"coherence_features"}
    listed = list_assessments(store, partition)
    assert [a["method"] for a in listed] == ["coherence_features", "coherence_examples", "importance"]
    assert latest_assessment(store, partition, "coherence_examples")[1][0]["stats"]["image"].endswith(".png")

    written = write_report(store, model_id, partition, tmp_path / "report")
    assert list(written.figures) == list(FIGURES)
    page = written.page.read_text(encoding="utf-8")
    for div in ("importance", "lesions", "examples"):  # lesion points, per-class heatmap, top inputs as images
        assert f'id="{div}"' in page
    for method in ("coherence features", "coherence examples"):  # each newest run: every sub-cluster in its table
        section = page.split(f"<h2>{method}</h2>", 1)[1].split("</table>", 1)[0]
        assert section.count("<tr>") == 1 + 20


def test_double_lesions_are_stored_between_sub_clusters(store, model_id, tmp_path):
    _, modules = planted_net()
    merged = np.where(modules <= 1, modules, 2)  # three clusters per layer: modules 0, 1 and the rest
    partition, _ = store_planted(store, model_id, tmp_path, (merged, merged))
    result = run_double_lesion(store, model_id, partition, n_null=5, seed=0, device="cpu", same_layer=False)
    assert len(result.pairs) == 9  # 3 × 3 sub-clusters across the two hidden layers
    summary, rows = latest_assessment(store, partition, "importance_pairs")
    assert summary["n_null"] == 5 and len(rows) == 9
    stored = {(r["cluster_a"], r["layer_a"], r["cluster_b"], r["layer_b"]): r["stats"] for r in rows}
    for pair in result.pairs:
        assert stored[(pair.cluster_a, pair.layer_a, pair.cluster_b, pair.layer_b)]["interaction"] == pytest.approx(
            pair.interaction
        )


def test_deleting_a_partition_or_model_deletes_its_sub_clusters_and_assessments(store, model_id, tmp_path):
    partition, _ = store_planted(store, model_id, tmp_path)
    run_importance(store, model_id, partition, n_null=5, device="cpu")
    assert store.run("assessment.count_subclusters", partition=partition) == [{"subclusters": 20, "assessments": 1}]
    store.run("admin.delete_partition", partition=partition)
    assert store.run("assessment.count_subclusters", partition=partition) == [{"subclusters": 0, "assessments": 0}]
    second = new_partition_id(model_id)
    _, modules = planted_net()
    labels = np.concatenate([np.full(64, -1), modules, modules, np.arange(N_MODULES)])
    write_partition(store, model_id, second, {"k": N_MODULES}, labels, np.arange(labels.size))
    run_importance(store, model_id, second, n_null=5, device="cpu")
    store.run("admin.delete_model", model=model_id)
    assert store.run("assessment.count_subclusters", partition=second) == [{"subclusters": 0, "assessments": 0}]


def test_a_changed_source_file_is_refused_and_bad_inputs_are_named(store, model_id, tmp_path):
    partition, path = store_planted(store, model_id, tmp_path)
    with pytest.raises(AssessmentInputError, match="classification"):
        run_importance(store, model_id, partition, dataset="poly", n_null=5, device="cpu")
    with pytest.raises(AssessmentInputError, match="shape"):
        run_importance(store, model_id, partition, dataset="line", n_null=5, device="cpu")
    torch.save({k: v + 1 for k, v in planted_net()[0].state_dict().items()}, path)
    with pytest.raises(SourceUnavailableError, match="changed"):
        run_importance(store, model_id, partition, n_null=5, device="cpu")
    assert list_assessments(store, partition) == []


def _write_planted_partition(store, model: str) -> str:
    _, modules = planted_net()
    labels = np.concatenate([np.full(64, -1), modules, modules, np.arange(N_MODULES)])
    partition = new_partition_id(model)
    write_partition(store, model, partition, {"k": N_MODULES, "method": "planted"}, labels, np.arange(labels.size))
    return partition


def test_a_model_ingested_from_memory_is_assessed_with_its_module(store, model_id, tmp_path):
    partition_from_file, _ = store_planted(store, model_id, tmp_path)
    from_file = run_importance(store, model_id, partition_from_file, n_null=10, device="cpu", write=False)
    net, _ = planted_net()
    memory = model_id + "-memory"
    try:
        ingest(store, memory, graph_from_module(net))
        partition = _write_planted_partition(store, memory)
        with pytest.raises(SourceUnavailableError, match="ingested from Python.*module="):
            run_importance(store, memory, partition, n_null=20, device="cpu")
        net.train()  # the caller's module is neither put in eval mode nor moved: a copy runs
        result = run_importance(store, memory, partition, n_null=10, device="cpu", module=net)
        assert net.training and result.assessment and result.partition == partition
        assert result.accuracy == from_file.accuracy
        assert [s.p_value for s in result.subclusters] == [s.p_value for s in from_file.subclusters]
        assert run_double_lesion(store, memory, partition, n_null=3, device="cpu", same_layer=False, module=net).pairs
        coherence = run_coherence(store, memory, partition, n_null=5, device="cpu", methods=("examples",), module=net)
        assert coherence.examples is not None and coherence.examples.assessment
        with pytest.raises(LayerMismatchError, match="in the module given"):
            narrower = torch.nn.Sequential(
                torch.nn.Linear(64, 32),
                torch.nn.ReLU(),
                torch.nn.Linear(32, 64),
                torch.nn.ReLU(),
                torch.nn.Linear(64, 10),
            )
            run_importance(store, memory, partition, n_null=5, device="cpu", module=narrower)
        with pytest.raises(AssessmentInputError, match="nn.Module or a torch.export"):
            run_importance(store, memory, partition, n_null=5, device="cpu", module=net.state_dict())
    finally:
        store.run("admin.delete_model", model=memory)


def test_an_exported_program_in_memory_is_assessed_like_its_module(store, model_id):
    net, _ = planted_net()
    ep = torch.export.export(net, (torch.zeros(1, 64),))
    ingest(store, model_id, graph_from_exported(ep))
    partition = _write_planted_partition(store, model_id)
    with pytest.raises(SourceUnavailableError, match="ingested from Python"):
        run_importance(store, model_id, partition, n_null=10, device="cpu", write=False)
    exported = run_importance(store, model_id, partition, n_null=10, device="cpu", write=False, module=ep)
    plain = run_importance(store, model_id, partition, n_null=10, device="cpu", write=False, module=net)
    assert exported.accuracy == plain.accuracy
    assert [s.p_value for s in exported.subclusters] == [s.p_value for s in plain.subclusters]
