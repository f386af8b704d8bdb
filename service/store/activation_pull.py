"""Pull an activation graph out of Neo4j into a BlockGraph, ready for the same clustering as weight graphs.

The nodes are the graph's units: the recorded layers' neurons minus the zero-variance ones it excluded, in
ordinal order, grouped by layer. The adjacency is the correlation graph's r² (the reference's squared
correlation; ``weight="abs_r"`` takes |r|) held as one dense block per pair of recorded layers, within-layer
pairs included::

    A = [[U00 + U00ᵀ, B01, B02 …], [B01ᵀ, U11 + U11ᵀ, B12 …], …]

A within-layer block ``U_ll`` is strictly upper triangular (edges run from the lower ordinal to the higher), so
:class:`BlockGraph` reads it as ``U + Uᵀ`` with a zero diagonal. Every pair of layers gets a block, even one with
no edge after sparsification, so the layout is the same for the graph and for its upper-triangle nulls
(:mod:`neuronmap.service.activation_nulls`). Units left without any edge (after ``min_r2``/``top_k``) stay as
isolated nodes, which clustering drops and labels −1, as for weight graphs.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import torch

from neuronmap.cypher import Store

from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.errors import ActivationGraphNotFoundError, ActivationGraphNotReadyError, ClusteringInputError
from neuronmap.service.store.pull import Subgraph, check_ready

EdgeWeight = Literal["r2", "abs_r"]
SOURCES_PER_QUERY = 256  # source neurons per pull query; an activation neuron has up to n − 1 edges


def activation_block_graph(sizes: list[int], src: np.ndarray, dst: np.ndarray, weight: np.ndarray, *,
                           dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> BlockGraph:
    """The layered adjacency of a correlation graph from local edge indices.

    Parameters
    ----------
    sizes : list of int
        Nodes per layer, in node order.
    src, dst : np.ndarray of shape (n_edges,)
        Local node indices (0..n−1) with ``src < dst``, each pair at most once.
    weight : np.ndarray of shape (n_edges,)
        Non-negative edge weights (r² or |r|).

    Returns
    -------
    BlockGraph
        One block per pair of layers ``a <= b``, in the order (0,0), (0,1) … (1,1), (1,2) …; within-layer blocks
        strictly upper triangular.
    """
    src_t = torch.as_tensor(np.asarray(src, dtype=np.int64))
    dst_t = torch.as_tensor(np.asarray(dst, dtype=np.int64))
    w = torch.as_tensor(np.asarray(weight, dtype=np.float64))
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.int64)
    n = int(offsets[-1])
    if not (src_t.numel() == dst_t.numel() == w.numel()):
        raise ClusteringInputError(f"Edge arrays differ in length: {src_t.numel():,} sources, {dst_t.numel():,} "
                                   f"targets, {w.numel():,} weights.")
    if src_t.numel():
        if int(src_t.min()) < 0 or int(dst_t.max()) >= n:
            raise ClusteringInputError(f"An edge endpoint lies outside the graph's nodes 0..{n - 1}.")
        if bool((src_t >= dst_t).any()):
            raise ClusteringInputError("Correlation edges must run from the lower node to the higher (src < dst), "
                                       "once per pair.")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ClusteringInputError("Correlation edge weights must be finite and non-negative (r² or |r|).")
    src_layer = torch.searchsorted(offsets, src_t, right=True) - 1
    dst_layer = torch.searchsorted(offsets, dst_t, right=True) - 1
    n_layers = len(sizes)
    pair = src_layer * n_layers + dst_layer
    blocks = []
    for a in range(n_layers):
        for b in range(a, n_layers):
            block = torch.zeros(sizes[a], sizes[b], dtype=torch.float64)
            sel = pair == a * n_layers + b
            if bool(sel.any()):
                block[src_t[sel] - offsets[a], dst_t[sel] - offsets[b]] = w[sel]
            blocks.append((a, b, block.to(device=device, dtype=dtype)))
    return BlockGraph(sizes, blocks, validate=False)


def _check_weight(weight: str) -> None:
    if weight not in ("r2", "abs_r"):
        raise ClusteringInputError(f"weight={weight!r} is not one of 'r2' (the reference's squared correlation) or "
                                   "'abs_r'.")


def _edge_weight(r: np.ndarray, r2: np.ndarray, weight: str) -> np.ndarray:
    _check_weight(weight)
    return r2 if weight == "r2" else np.abs(r)


def _local_layout(offsets: np.ndarray, recorded: list[int], excluded: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Ordinals of the graph's nodes (recorded units minus the excluded ones) and the nodes per layer."""
    units = [np.setdiff1d(np.arange(offsets[i], offsets[i + 1]), excluded, assume_unique=True) for i in recorded]
    return (np.concatenate(units) if units else np.zeros(0, np.int64)).astype(np.int64), [u.size for u in units]


def block_graph_from_edges(edges: Any, *, weight: EdgeWeight = "r2") -> tuple[BlockGraph, np.ndarray]:
    """The in-memory twin of :func:`pull_activation_graph`: (BlockGraph, global ordinals of its nodes).

    ``edges`` is a :class:`neuronmap.loaders.activation_edges.ActivationEdges` (before it is stored).
    """
    ordinals, sizes = _local_layout(edges.offsets, list(edges.recorded), np.asarray(edges.excluded))
    src = np.searchsorted(ordinals, edges.src)
    dst = np.searchsorted(ordinals, edges.dst)
    graph = activation_block_graph(sizes, src, dst, _edge_weight(edges.r, edges.r2, weight))
    return graph, ordinals


def pull_activation_graph(store: Store, model: str, graph_name: str, *, weight: EdgeWeight = "r2",
                          workers: int = 2) -> Subgraph:
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
    _check_weight(weight)
    check_ready(store, model)
    info = store.run("activations.graph_info", model=model, name=graph_name)
    if not info:
        raise ActivationGraphNotFoundError(model, graph_name)
    info = info[0]
    if info["status"] != "ready":
        raise ActivationGraphNotReadyError(model, graph_name, info["status"])
    all_layers = store.run("admin.model_layers", model=model)
    offsets = np.concatenate([[0], np.cumsum([layer["size"] for layer in all_layers])]).astype(np.int64)
    recorded = [int(i) for i in info["layers"]]
    ordinals, sizes = _local_layout(offsets, recorded, np.asarray(info["excluded"] or [], dtype=np.int64))
    by_index = {layer["index"]: layer for layer in all_layers}
    kept = [{**by_index[i], "n_nodes": size} for i, size in zip(recorded, sizes)]

    ranges = [(int(offsets[i]) + lo, min(int(offsets[i]) + lo + SOURCES_PER_QUERY, int(offsets[i + 1])))
              for i in recorded for lo in range(0, int(offsets[i + 1] - offsets[i]), SOURCES_PER_QUERY)]

    def pull(bounds: tuple[int, int]) -> list[dict[str, Any]]:
        return store.run_values("activations.graph_edges", model=model, graph=graph_name, lo=bounds[0],
                                hi=bounds[1])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rows = list(itertools.chain.from_iterable(pool.map(pull, ranges)))
    lengths = np.fromiter((len(row["dst"]) for row in rows), dtype=np.int64, count=len(rows))
    n_edges = int(lengths.sum())
    src = np.repeat(np.fromiter((row["src"] for row in rows), dtype=np.int64, count=len(rows)), lengths)
    dst = np.fromiter(itertools.chain.from_iterable(row["dst"] for row in rows), dtype=np.int64, count=n_edges)
    r = np.fromiter(itertools.chain.from_iterable(row["r"] for row in rows), dtype=np.float64, count=n_edges)
    r2 = np.fromiter(itertools.chain.from_iterable(row["r2"] for row in rows), dtype=np.float64, count=n_edges)
    local_src, local_dst = np.searchsorted(ordinals, src), np.searchsorted(ordinals, dst)
    if n_edges and (np.any(ordinals[np.minimum(local_src, ordinals.size - 1)] != src)
                    or np.any(ordinals[np.minimum(local_dst, ordinals.size - 1)] != dst)):
        raise ClusteringInputError(f"Activation graph {graph_name!r} of model {model!r} has edges at neurons outside "
                                   "its recorded, non-excluded units; it is damaged. Recompute it with --replace.")
    graph = activation_block_graph(sizes, local_src, local_dst, _edge_weight(r, r2, weight))
    return Subgraph(model=model, layers=kept, ordinals=ordinals, graph=graph, n_edges=n_edges,
                    seconds=time.perf_counter() - start)
