"""The named queries on transformers (issue 14, item 4): a planted GPT-2 ingested as its virtual graph and clustered
through the Python API; `module-span` says which blocks each module spans (the blocks' MLP module paths) and
`compare-models` puts it beside an MLP. Through the real Neo4j; the model is built in code, nothing downloaded."""

from __future__ import annotations

import numpy as np
import pytest

from neuronmap.loaders.ingest.weights import ingest
from neuronmap.loaders.transformers import graph_from_transformer
from neuronmap.service.errors import DisconnectedGraphWarning
from neuronmap.service.runs.clustering import ClusterConfig, run_clustering
from neuronmap.service.store.library import run_library_query
from tests.loaders.test_transformers import N_BLOCKS, N_INNER, planted_gpt2
from tests.service.test_pipeline import planted_graph


def test_module_span_and_compare_models_on_a_planted_transformer(store, model_id):
    model, neurons = planted_gpt2()
    graph = graph_from_transformer(model, top_k=8)  # two halves that share no edge
    ingest(store, model_id, graph)
    mlp = f"{model_id}-mlp"
    try:
        ingest(store, mlp, planted_graph()[0])
        config = ClusterConfig(n_clusters=2, n_shuffles=3, random_state=0)
        with pytest.warns(DisconnectedGraphWarning):
            transformer = run_clustering(store, model_id, config)
        run_clustering(store, mlp, config)

        # each module is one half of every block: it spans all blocks' MLPs, N_INNER / 2 neurons in each
        span = run_library_query(store, "module-span", model=model_id)
        paths = [f"transformer.h.{b}.mlp" for b in range(N_BLOCKS)]
        assert len(span) == 2
        for row in span:
            assert (row["first_layer"], row["last_layer"], row["n_layers"]) == (paths[0], paths[-1], N_BLOCKS)
            assert row["per_layer"] == [N_INNER // 2] * N_BLOCKS and row["size"] == N_BLOCKS * N_INNER // 2
            assert row["thickest_layer"] == paths[0]  # a tie goes to the earlier block

        rows = run_library_query(store, "compare-models", models=[model_id, mlp])
        assert [row["model"] for row in rows] == [model_id, mlp]
        first = rows[0]
        assert (first["partition"], first["k"], first["graph"]) == (transformer.id, 2, "weight")
        assert (first["n_neurons"], first["n_edges"]) == (graph.n_neurons, graph.n_edges)
        assert first["ncut"] == pytest.approx(0.0, abs=1e-9) and first["n_null"] == 3
        assert first["null_mean"] > 0.1 and first["p_value"] == pytest.approx(1 / 4)  # no shuffle cuts 0
        assert rows[1]["k"] == 2 and rows[1]["n_neurons"] == 96
        labels = np.array([row["cluster"] for row in store.run("admin.partition_labels", partition=transformer.id)])
        assert sorted(np.bincount(labels)) == [48, 48] and neurons.size == N_INNER
    finally:
        store.run("admin.delete_model", model=mlp)
