"""Fixtures the service tests share: two planted-module models with partitions, stored once per module."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from neuronmap.loaders.ingest.weights import ingest
from neuronmap.loaders.records import ModelGraph
from neuronmap.service.store.writeback import write_partition
from tests.loaders.test_ingest import layered_graph


def planted_graph(sizes: list[int], n_clusters: int, seed: int, boost: float = 4.0) -> tuple[ModelGraph, np.ndarray]:
    """A layered random graph with planted modules: unit u of a layer of n units is in module u·k // n, and
    weights inside a module are ``boost`` times stronger."""
    graph = layered_graph(sizes, seed=seed, density=0.7)
    labels = np.concatenate([(np.arange(n) * n_clusters) // n for n in sizes])
    for block in graph.blocks:
        src = labels[graph.offsets[block.src_layer] : graph.offsets[block.src_layer + 1]]
        dst = labels[graph.offsets[block.dst_layer] : graph.offsets[block.dst_layer + 1]]
        block.weight[src[:, None] == dst[None, :]] *= boost
    return graph, labels


def reference_ncut(graph: ModelGraph, labels: np.ndarray) -> float:
    keep = labels >= 0
    a = graph.adjacency().toarray()[np.ix_(keep, keep)]
    lab, d = labels[keep], a.sum(axis=1)
    return float(
        sum(
            (d[lab == c].sum() - a[np.ix_(lab == c, lab == c)].sum()) / (d[lab == c].sum() + 1e-8)
            for c in np.unique(lab)
        )
    )


@dataclass
class StoredModel:
    name: str
    graph: ModelGraph
    partitions: dict[str, np.ndarray] = field(default_factory=dict)  # id → labels by ordinal, oldest first

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.graph.layers]


@dataclass
class LibraryModels:
    a: StoredModel  # two partitions: planted k=3, then (newest) k=4 random with the input layer left out
    b: StoredModel  # one planted k=2 partition
    unclustered: str  # a model without partitions

    def by_key(self, key: str) -> tuple[StoredModel, str]:
        model = {"a1": self.a, "a2": self.a, "b": self.b}[key]
        return model, list(model.partitions)[{"a1": 0, "a2": 1, "b": 0}[key]]


@pytest.fixture(scope="module")
def library_models(store) -> Iterator[LibraryModels]:
    token = secrets.token_hex(3)
    graph_a, planted_a = planted_graph([12, 10, 8, 5], 3, seed=1)
    graph_b, planted_b = planted_graph([9, 6, 4], 2, seed=2)
    graph_c = layered_graph([3, 2], seed=3)
    a = StoredModel(f"test-library-a-{token}", graph_a)
    b = StoredModel(f"test-library-b-{token}", graph_b)
    unclustered = f"test-library-c-{token}"
    try:
        for model in (a, b):
            ingest(store, model.name, model.graph)
        ingest(store, unclustered, graph_c)
        rng = np.random.default_rng(7)
        random_a = rng.integers(0, 4, graph_a.n_neurons)
        random_a[: graph_a.layers[0].size] = -1  # a layer-range partition: fc1:fc3
        nulls = [float(x) for x in rng.normal(2.2, 0.05, 40)]
        for model, labels, props in [
            (
                a,
                planted_a,
                {
                    "k": 3,
                    "method": "planted",
                    "ncut": reference_ncut(graph_a, planted_a),
                    "null_ncuts": nulls,
                    "null_mean": float(np.mean(nulls)),
                    "null_sd": float(np.std(nulls)),
                    "z": -12.5,
                    "percentile": 1 / 41,
                    "n_null": 40,
                    "null_method": "layer",
                },
            ),
            (a, random_a, {"k": 4, "method": "random", "ncut": reference_ncut(graph_a, random_a), "layers": "fc1:fc3"}),
            (b, planted_b, {"k": 2, "method": "planted", "ncut": reference_ncut(graph_b, planted_b)}),
        ]:
            partition = f"{model.name}/p-{len(model.partitions)}"
            write_partition(store, model.name, partition, props, labels, np.arange(model.graph.n_neurons))
            model.partitions[partition] = labels
        yield LibraryModels(a, b, unclustered)
    finally:
        for name in (a.name, b.name, unclustered):
            store.run("admin.delete_model", model=name)
