"""Pull an activation graph out of Neo4j into a BlockGraph, ready for the same clustering as weight graphs.

The nodes are the graph's units (the recorded layers' neurons minus the zero-variance ones it excluded, in ordinal
order); the layout is built by :mod:`neuronmap.service.clustering.activation_graph` (methods.md §2).
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from neuronmap.cypher import Store
from neuronmap.options import EdgeWeight
from neuronmap.service.clustering.activation_graph import (
    activation_block_graph,
    check_weight,
    edge_weight,
    local_layout,
)
from neuronmap.service.errors import ActivationGraphNotFoundError, ActivationGraphNotReadyError, ClusteringInputError
from neuronmap.service.store.pull import Subgraph, check_ready, fat_rows_to_arrays

SOURCES_PER_QUERY = 256  # source neurons per pull query; an activation neuron has up to n − 1 edges


def pull_activation_graph(
    store: Store, model: str, graph_name: str, *, weight: EdgeWeight = "r2", workers: int = 2
) -> Subgraph:
    """Read a ready activation graph of a ready model into a BlockGraph on the CPU.

    Parameters
    ----------
    store : Store
    model : str
    graph_name : str
        The activation graph's name (``activations.list_graphs`` lists them).
    weight : {"r2", "abs_r"}, default="r2"
        The edge weight clustering sees: r², the reference's squared correlation, or |r|.
    workers : int, default=2
        Pull queries in flight at once.

    Returns
    -------
    Subgraph
        ``layers`` are the recorded layers (as ``admin.model_layers`` returns them, plus ``n_nodes``, the layer's
        units left after excluding the zero-variance ones); ``ordinals`` the global ordinal of every node, so
        partitions write back to the right neurons.

    Raises
    ------
    ModelNotFoundError, ModelNotReadyError
        As :func:`pull_subgraph`.
    ActivationGraphNotFoundError, ActivationGraphNotReadyError
        No such graph, or its ingest has not finished.
    """
    start = time.perf_counter()
    check_weight(weight)
    check_ready(store, model)
    found = store.run("activations.graph_info", model=model, name=graph_name)
    if not found:
        raise ActivationGraphNotFoundError(model, graph_name)
    info = found[0]
    if info["status"] != "ready":
        raise ActivationGraphNotReadyError(model, graph_name, info["status"])
    all_layers = store.run("admin.model_layers", model=model)
    offsets = np.concatenate([[0], np.cumsum([layer["size"] for layer in all_layers])]).astype(np.int64)
    recorded = [int(i) for i in info["layers"]]
    ordinals, sizes = local_layout(offsets, recorded, np.asarray(info["excluded"] or [], dtype=np.int64))
    by_index = {layer["index"]: layer for layer in all_layers}
    kept = [{**by_index[i], "n_nodes": size} for i, size in zip(recorded, sizes)]

    ranges = [
        (int(offsets[i]) + lo, min(int(offsets[i]) + lo + SOURCES_PER_QUERY, int(offsets[i + 1])))
        for i in recorded
        for lo in range(0, int(offsets[i + 1] - offsets[i]), SOURCES_PER_QUERY)
    ]

    def pull(bounds: tuple[int, int]) -> list[dict[str, Any]]:
        return store.run_values("activations.graph_edges", model=model, graph=graph_name, lo=bounds[0], hi=bounds[1])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rows = list(itertools.chain.from_iterable(pool.map(pull, ranges)))
    src, dst, (r, r2) = fat_rows_to_arrays(rows, "r", "r2")
    n_edges = int(src.size)
    local_src, local_dst = np.searchsorted(ordinals, src), np.searchsorted(ordinals, dst)
    if n_edges and (
        np.any(ordinals[np.minimum(local_src, ordinals.size - 1)] != src)
        or np.any(ordinals[np.minimum(local_dst, ordinals.size - 1)] != dst)
    ):
        raise ClusteringInputError(
            f"Activation graph {graph_name!r} of model {model!r} has edges at neurons outside "
            "its recorded, non-excluded units; it is damaged. Recompute it with --replace."
        )
    graph = activation_block_graph(sizes, local_src, local_dst, edge_weight(r, r2, weight))
    return Subgraph(
        model=model, layers=kept, ordinals=ordinals, graph=graph, n_edges=n_edges, seconds=time.perf_counter() - start
    )
