"""neuronmap: find the modules inside neural networks, with Neo4j as the store.

``import neuronmap as nm`` gives the main entry points without deep imports::

    graph = nm.load_graph("mlp.safetensors", arch="neuronmap.examples.nets:mlp_4x256")
    with nm.open_store() as store:
        nm.ingest(store, "mlp-a", graph)
        partition = nm.cluster(store, "mlp-a", nm.ClusterConfig(n_clusters=8, n_shuffles=20))
        nm.run_query(store, "module-span", model="mlp-a").to_frame()

Names load on first use, so ``import neuronmap`` (and the CLI's start-up) does not import torch.
The stages live in ``neuronmap.loaders``, ``neuronmap.service`` and ``neuronmap.cypher``; docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name → (module, attribute): the front door's table, resolved lazily by __getattr__.
_EXPORTS: dict[str, tuple[str, str]] = {
    # the store
    "open_store": ("neuronmap.service.store.open", "open_store"),
    "connect": ("neuronmap.service.store.open", "connect"),
    "Settings": ("neuronmap.service.config", "Settings"),
    "Store": ("neuronmap.cypher", "Store"),
    # loading and ingest
    "load_graph": ("neuronmap.loaders", "load_graph"),
    "graph_from_module": ("neuronmap.loaders", "graph_from_module"),
    "graph_from_exported": ("neuronmap.loaders", "graph_from_exported"),
    "ModelGraph": ("neuronmap.loaders", "ModelGraph"),
    "ingest": ("neuronmap.loaders.ingest.weights", "ingest"),
    "delete_model": ("neuronmap.loaders.ingest.weights", "delete_model"),
    # clustering
    "spectral_clustering": ("neuronmap.service.clustering.spectral", "spectral_clustering"),
    "cluster": ("neuronmap.service.runs", "run_clustering"),
    "ClusterConfig": ("neuronmap.service.runs", "ClusterConfig"),
    "PartitionResult": ("neuronmap.service.runs", "PartitionResult"),
    # assessment
    "importance": ("neuronmap.service.runs", "run_importance"),
    "coherence": ("neuronmap.service.runs", "run_coherence"),
    # named queries and the report
    "run_query": ("neuronmap.service.store.library", "run_library_query"),
    "library_queries": ("neuronmap.service.store.library", "library_queries"),
    "write_report": ("neuronmap.service.report", "write_report"),
    # errors
    "NeuronmapError": ("neuronmap.errors", "NeuronmapError"),
}

__all__ = [
    "ClusterConfig",
    "ModelGraph",
    "NeuronmapError",
    "PartitionResult",
    "Settings",
    "Store",
    "cluster",
    "coherence",
    "connect",
    "delete_model",
    "graph_from_exported",
    "graph_from_module",
    "importance",
    "ingest",
    "library_queries",
    "load_graph",
    "open_store",
    "run_query",
    "spectral_clustering",
    "write_report",
    "__version__",
]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'neuronmap' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from neuronmap.cypher import Store
    from neuronmap.errors import NeuronmapError
    from neuronmap.loaders import ModelGraph, graph_from_exported, graph_from_module, load_graph
    from neuronmap.loaders.ingest.weights import delete_model, ingest
    from neuronmap.service.clustering.spectral import spectral_clustering
    from neuronmap.service.config import Settings
    from neuronmap.service.report import write_report
    from neuronmap.service.runs import ClusterConfig, PartitionResult
    from neuronmap.service.runs import run_clustering as cluster
    from neuronmap.service.runs import run_coherence as coherence
    from neuronmap.service.runs import run_importance as importance
    from neuronmap.service.store.library import library_queries
    from neuronmap.service.store.library import run_library_query as run_query
    from neuronmap.service.store.open import connect, open_store
