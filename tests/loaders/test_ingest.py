"""Ingestion against the real Neo4j: exact round trips, idempotency, replace, crashes mid-way, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from neuronmap.loaders.ingest.weights import ModelExistsError, UnknownModelError, delete_model, ingest, model_status
from neuronmap.loaders.records import EdgeBlock, LayerRecord, ModelGraph, ModelMeta


class Crash(Exception):
    pass


def crash_after(n: int):
    calls = {"n": 0}

    def on_batch(_: int) -> None:
        calls["n"] += 1
        if calls["n"] >= n:
            raise Crash(f"injected after batch {n}")

    return on_batch


def layered_graph(sizes: list[int], seed: int = 0, density: float = 1.0) -> ModelGraph:
    rng = np.random.default_rng(seed)
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
        w = rng.normal(size=(sizes[i], sizes[i + 1]))
        w[rng.random(w.shape) > density] = 0.0
        blocks.append(EdgeBlock(i, i + 1, w))
    biases = [None] + [rng.normal(size=n) for n in sizes[1:]]
    return ModelGraph(layers, blocks, biases, ModelMeta(arch="test", source="generated"))


def stored_adjacency(store, model: str, n: int) -> sp.csr_matrix:
    rows = store.run("pull.model_edges", model=model, lo=0, hi=n)
    src = np.concatenate([[r["src"]] * len(r["dst"]) for r in rows])
    dst = np.concatenate([r["dst"] for r in rows])
    w = np.concatenate([r["w"] for r in rows])
    upper = sp.coo_matrix((np.abs(w), (src, dst)), shape=(n, n))
    return (upper + upper.T).tocsr()


def test_round_trip_equals_the_in_memory_adjacency(store, model_id):
    graph = layered_graph([6, 5, 4, 3], density=0.7)
    written = ingest(store, model_id, graph, batch_size=7)
    assert written == graph.n_edges
    assert model_status(store, model_id) == "ready"
    assert store.run("admin.model_counts", model=model_id) == [
        {"n_layers": 4, "n_neurons": graph.n_neurons, "n_edges": graph.n_edges, "n_block_edges": graph.n_edges}
    ]
    diff = stored_adjacency(store, model_id, graph.n_neurons) - graph.adjacency()
    assert abs(diff).max() == 0.0


def test_neurons_carry_layer_role_bias_and_ordinal(store, model_id):
    graph = layered_graph([2, 2, 2])
    ingest(store, model_id, graph)
    layers = store.run("admin.model_layers", model=model_id)
    assert [(l["index"], l["role"], l["size"]) for l in layers] == [(0, "input", 2), (1, "hidden", 2), (2, "output", 2)]
    rows = store.run("pull.model_edges", model=model_id, lo=0, hi=2)
    assert sorted(r["src"] for r in rows) == [0, 1]
    assert sorted(rows[0]["dst"]) == [2, 3]


def test_second_ingest_of_a_name_is_refused_unless_replace(store, model_id):
    ingest(store, model_id, layered_graph([3, 3]))
    with pytest.raises(ModelExistsError, match="--replace"):
        ingest(store, model_id, layered_graph([4, 4]))
    assert store.run("admin.model_counts", model=model_id)[0]["n_neurons"] == 6  # untouched
    ingest(store, model_id, layered_graph([4, 4], seed=1), replace=True)
    assert store.run("admin.model_counts", model=model_id) == [
        {"n_layers": 2, "n_neurons": 8, "n_edges": 16, "n_block_edges": 16}
    ]


def test_crash_midway_leaves_no_ready_model_and_a_rerun_finishes_cleanly(store, model_id):
    graph = layered_graph([10, 10, 10, 10])
    with pytest.raises(Crash):
        ingest(store, model_id, graph, batch_size=10, on_batch=crash_after(2))
    assert model_status(store, model_id) == "failed"
    listed = {m["name"]: m for m in store.run("admin.list_models")}
    assert listed[model_id]["status"] == "failed"
    ingest(store, model_id, graph, batch_size=10)  # the same command again: no --replace needed for leftovers
    assert model_status(store, model_id) == "ready"
    assert store.run("admin.model_counts", model=model_id) == [
        {"n_layers": 4, "n_neurons": 40, "n_edges": 300, "n_block_edges": 300}
    ]


def test_non_finite_weights_are_refused_before_anything_is_written(store, model_id):
    graph = layered_graph([3, 3, 3])
    graph.blocks[1].weight[0, 0] = np.nan
    with pytest.raises(ValueError, match="fc2.*non-finite"):
        ingest(store, model_id, graph)
    assert model_status(store, model_id) is None


def test_many_models_live_side_by_side_and_drop_removes_only_one(store, model_id):
    other = model_id + "-b"
    ingest(store, model_id, layered_graph([3, 4]))
    ingest(store, other, layered_graph([5, 2]))
    assert delete_model(store, other) == 7
    assert model_status(store, other) is None
    assert store.run("admin.model_counts", model=model_id) == [
        {"n_layers": 2, "n_neurons": 7, "n_edges": 12, "n_block_edges": 12}
    ]
    with pytest.raises(UnknownModelError):
        delete_model(store, other)


@pytest.mark.parametrize("factory", ["digits_cnn", "residual_cnn", "residual_mlp", "digits_mlp"])
def test_real_modules_round_trip_through_the_store(store, model_id, factory):
    import torch

    from neuronmap.examples import nets
    from neuronmap.loaders import graph_from_module

    torch.manual_seed(0)
    module = getattr(nets, factory)()
    for m in module.modules():  # non-trivial BatchNorm statistics, so folding shows in the weights
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(-2.0, 2.0)
    graph = graph_from_module(module)
    ingest(store, model_id, graph)
    layers = store.run("admin.model_layers", model=model_id)
    assert [(l["name"], l["size"], l["role"]) for l in layers] == [(l.name, l.size, l.role) for l in graph.layers]
    diff = stored_adjacency(store, model_id, graph.n_neurons) - graph.adjacency()
    assert abs(diff).max() < 1e-12
