"""Pulling subgraphs out of the real Neo4j and writing partitions back."""

from __future__ import annotations

import numpy as np
import pytest

from neuronmap.loaders.ingest.weights import ingest
from neuronmap.service.errors import ClusteringInputError, ModelNotFoundError, ModelNotReadyError, PartitionWriteError
from neuronmap.service.store.pull import pull_subgraph, resolve_layers
from neuronmap.service.store.writeback import new_partition_id, read_labels, write_partition
from tests.loaders.test_ingest import layered_graph


def test_pull_equals_the_in_memory_adjacency(store, model_id):
    graph = layered_graph([30, 20, 20, 5], density=0.6)
    ingest(store, model_id, graph)
    sub = pull_subgraph(store, model_id)
    assert sub.n_edges == graph.n_edges
    assert abs(sub.graph.to_scipy() - graph.adjacency()).max() == 0.0
    np.testing.assert_array_equal(sub.ordinals, np.arange(graph.n_neurons))


def test_layer_range_and_min_weight_keep_exactly_those_edges(store, model_id):
    graph = layered_graph([30, 20, 20, 5], density=0.6)
    ingest(store, model_id, graph)
    sub = pull_subgraph(store, model_id, layers="fc1:fc2", min_weight=0.5)
    lo, hi = graph.offsets[1], graph.offsets[3]
    full = graph.adjacency().toarray()[lo:hi, lo:hi]
    full[full < 0.5] = 0
    np.testing.assert_array_equal(sub.graph.to_dense().numpy(), full)
    np.testing.assert_array_equal(sub.ordinals, np.arange(lo, hi))
    assert sub.layer_span == "fc1:fc2"


def test_layer_specs_are_checked():
    layers = [{"index": i, "name": n} for i, n in enumerate(["input", "fc1", "fc2"])]
    assert resolve_layers(layers, None) == (0, 2)
    assert resolve_layers(layers, "fc1:") == (1, 2)
    assert resolve_layers(layers, None, indexes=":1") == (0, 1)
    assert resolve_layers(layers, "fc2") == (2, 2)
    with pytest.raises(ClusteringInputError, match="no layer 'conv9'.*input, fc1, fc2"):
        resolve_layers(layers, "conv9:fc2")
    with pytest.raises(ClusteringInputError, match="backwards"):
        resolve_layers(layers, "fc2:fc1")


def test_unknown_and_unfinished_models_are_refused(store, model_id):
    with pytest.raises(ModelNotFoundError, match="neuronmap models"):
        pull_subgraph(store, model_id)
    store.run("ingest.begin_model", model=model_id, meta={}, layers=[])
    with pytest.raises(ModelNotReadyError, match="'loading'"):
        pull_subgraph(store, model_id)


def test_partitions_round_trip_and_coexist(store, model_id):
    graph = layered_graph([6, 4, 2])
    ingest(store, model_id, graph)
    labels_a = np.array([0, 0, 1, 1, 2, -1, 0, 1, 2, 2, 0, 1])
    labels_b = np.array([1, 0] * 6)
    ids = [new_partition_id(model_id), new_partition_id(model_id)]
    assert write_partition(store, model_id, ids[0], {"k": 3}, labels_a, np.arange(12)) == 11
    write_partition(store, model_id, ids[1], {"k": 2}, labels_b, np.arange(12))
    np.testing.assert_array_equal(read_labels(store, ids[0], 12), labels_a)
    np.testing.assert_array_equal(read_labels(store, ids[1], 12), labels_b)
    listed = store.run("admin.list_partitions", model=model_id)
    assert {p["id"] for p in listed} == set(ids)
    assert store.run("admin.delete_partition", partition=ids[0]) == [{"deleted": 3}]
    assert [p["id"] for p in store.run("admin.list_partitions", model=model_id)] == [ids[1]]
    np.testing.assert_array_equal(read_labels(store, ids[1], 12), labels_b)


def test_a_failed_write_leaves_no_partition(store, model_id):
    ingest(store, model_id, layered_graph([3, 3]))
    partition = new_partition_id(model_id)
    with pytest.raises(PartitionWriteError, match="6 of 7"):
        # Ordinal 99 does not exist, so one membership finds no neuron inside the partition's transaction.
        write_partition(
            store,
            model_id,
            partition,
            {"k": 2},
            np.array([0, 1, 0, 1, 0, 1, 0]),
            np.array([0, 1, 2, 3, 4, 5, 99]),
            rows_per_batch=1,
        )
    assert store.run("admin.list_partitions", model=model_id) == []


def test_dropping_a_model_drops_its_partitions(store, model_id):
    ingest(store, model_id, layered_graph([3, 3]))
    partition = new_partition_id(model_id)
    write_partition(store, model_id, partition, {"k": 2}, np.array([0, 1, 0, 1, 0, 1]), np.arange(6))
    store.run("admin.delete_model", model=model_id)
    assert store.run("admin.partition_labels", partition=partition) == []
