"""The packed edge chunks (EDGE_BLOCK) against the real Neo4j: what the pull reads, with or without the WEIGHT
relationships beside them, and the refusals when a query needs single edges that were not written."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from neuronmap.loaders.ingest.blocks import BlockFormatError, chunk_params, decode_chunk
from neuronmap.loaders.ingest.weights import delete_model, ingest
from neuronmap.service.errors import WeightRelationshipsMissingError
from neuronmap.service.runs import ClusterConfig, run_clustering
from neuronmap.service.store.library import run_library_query
from neuronmap.service.store.pull import _pull_blocks, _pull_relationships, pull_subgraph
from neuronmap.service.store.writeback import read_labels
from tests.loaders.test_ingest import layered_graph
from tests.service.test_pipeline import planted_graph


def _dense(graph_or_sub) -> np.ndarray:
    return graph_or_sub.toarray() if hasattr(graph_or_sub, "toarray") else np.asarray(graph_or_sub)


def test_chunks_split_a_block_and_decode_to_its_edges():
    graph = layered_graph([7, 9, 4], density=0.6)
    chunks = list(chunk_params(graph, chunk_edges=5))
    assert sum(n for _, n in chunks) == graph.n_edges
    assert all(params["n"] <= 5 for params, _ in chunks)
    for block in graph.blocks:
        mine = [params for params, _ in chunks if params["src_layer"] == block.src_layer]
        assert [p["chunk"] for p in mine] == list(range(len(mine)))
        decoded = [decode_chunk({**p, "format": 1}) for p in mine]
        rows, cols, w, _ = block.entries()
        assert np.array_equal(np.concatenate([d[0] for d in decoded]), rows)
        assert np.array_equal(np.concatenate([d[1] for d in decoded]), cols)
        assert np.array_equal(np.concatenate([d[2] for d in decoded]), w)  # float64 bytes: bit for bit


def test_a_chunk_of_another_format_or_damaged_is_refused_by_name():
    params, _ = next(chunk_params(layered_graph([3, 3])))
    with pytest.raises(BlockFormatError, match=r"format 2.*reads format 1"):
        decode_chunk({**params, "format": 2})
    with pytest.raises(BlockFormatError, match="damaged: 9 edges declared, arrays of 9, 9 and 8"):
        decode_chunk({**params, "format": 1, "w": params["w"][:-8]})


def test_the_pull_reads_the_chunks_and_they_hold_what_the_relationships_hold(store, model_id):
    graph = layered_graph([6, 5, 4, 3], density=0.7)
    ingest(store, model_id, graph, batch_size=7)
    offsets = np.concatenate([[0], np.cumsum([layer.size for layer in graph.layers])])
    from_blocks = _pull_blocks(store, model_id, 0, 3, offsets)
    from_edges = _pull_relationships(store, model_id, 0, graph.n_neurons, workers=2)

    def as_set(src, dst, w):
        return sorted(zip(src.tolist(), dst.tolist(), w.tolist()))

    assert as_set(*from_blocks) == as_set(*from_edges) == as_set(*graph.edges())
    # A layer range reads only the chunks inside it.
    middle = pull_subgraph(store, model_id, layer_indexes="1:2")
    assert middle.n_edges == graph.blocks[1].n_edges


def test_a_model_without_chunks_is_still_pulled_from_its_relationships(store, model_id):
    graph = layered_graph([5, 4, 3])
    ingest(store, model_id, graph)
    before = pull_subgraph(store, model_id)
    assert store.run("admin.delete_model_blocks", model=model_id, limit=1000)[0]["deleted"] == 2  # as old versions
    after = pull_subgraph(store, model_id)
    assert after.n_edges == before.n_edges == graph.n_edges
    for (_, _, a), (_, _, b) in zip(before.graph.blocks, after.graph.blocks):
        assert np.array_equal(_dense(a), _dense(b))


def test_without_relationships_a_model_clusters_and_single_edge_queries_say_why_they_refuse(store, model_id):
    graph, truth = planted_graph(sizes=(12, 12, 12), k=3)
    assert ingest(store, model_id, graph, relationships=False) == graph.n_edges
    counts = store.run("admin.model_counts", model=model_id)[0]
    assert (counts["n_edges"], counts["n_block_edges"]) == (0, graph.n_edges)
    result = run_clustering(store, model_id, ClusterConfig(n_clusters=3, random_state=0))
    assert adjusted_rand_score(truth, read_labels(store, result.id, graph.n_neurons)) == pytest.approx(1.0)
    span = run_library_query(store, "module-span", model=model_id)
    assert len(list(span)) == 3
    with pytest.raises(WeightRelationshipsMissingError, match=rf"'neuron'.*{model_id}.*--no-relationships"):
        run_library_query(store, "neuron", model=model_id, layer="fc1", unit=0)
    delete_model(store, model_id)
    assert store.run("admin.model_counts", model=model_id)[0] == {
        "n_layers": 0,
        "n_neurons": 0,
        "n_edges": 0,
        "n_block_edges": 0,
    }
