"""Pull a model (or a range of its layers) out of Neo4j into a BlockGraph, without one Bolt record per edge."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuronmap.cypher import Store
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.errors import ClusteringInputError, ModelNotFoundError, ModelNotReadyError

SOURCES_PER_QUERY = 512  # source neurons per pull query: fat rows, and a few queries in flight at once


@dataclass
class Subgraph:
    """The pulled part of a model: its layers, the global ordinals of its neurons, and the |w| blocks."""

    model: str
    layers: list[dict[str, Any]]  # the kept layers as admin.model_layers returns them
    ordinals: np.ndarray  # (n_nodes,) global ordinal of each local node
    graph: BlockGraph
    n_edges: int
    seconds: float

    @property
    def layer_span(self) -> str:
        return f"{self.layers[0]['name']}:{self.layers[-1]['name']}"


def check_ready(store: Store, model: str) -> None:
    rows = store.run("ingest.model_status", model=model)
    if not rows:
        raise ModelNotFoundError(model)
    if rows[0]["status"] != "ready":
        raise ModelNotReadyError(model, rows[0]["status"])


def resolve_layers(layers: list[dict[str, Any]], spec: str | None) -> tuple[int, int]:
    """Turn ``first:last`` (layer names or indexes, either side optional) into an inclusive index range."""
    if not spec:
        return layers[0]["index"], layers[-1]["index"]
    if ":" not in spec:
        spec = f"{spec}:{spec}"
    by_name = {layer["name"]: layer["index"] for layer in layers}
    indexes = {layer["index"] for layer in layers}

    def one(part: str, default: int) -> int:
        part = part.strip()
        if not part:
            return default
        if part in by_name:
            return by_name[part]
        if part.lstrip("-").isdigit() and int(part) in indexes:
            return int(part)
        names = ", ".join(layer["name"] for layer in layers)
        raise ClusteringInputError(f"There is no layer {part!r} in this model; its layers are: {names}.")

    first_text, last_text = spec.split(":", 1)
    first, last = one(first_text, layers[0]["index"]), one(last_text, layers[-1]["index"])
    if first > last:
        raise ClusteringInputError(f"Layer range {spec!r} runs backwards; write first:last in network order.")
    return first, last


def pull_subgraph(
    store: Store, model: str, *, layers: str | None = None, min_weight: float = 0.0, workers: int = 2
) -> Subgraph:
    """Read a ready model's edges (|w|) between the chosen layers into a BlockGraph on the CPU.

    Parameters
    ----------
    store : Store
    model : str
    layers : str, optional
        ``first:last`` by layer name or index (inclusive), e.g. ``conv1:conv3``; default all layers.
    min_weight : float, default=0.0
        Drop edges with |w| below this.
    workers : int, default=2
        Pull queries in flight at once (the server answers each on its own thread).
    """
    start = time.perf_counter()
    check_ready(store, model)
    all_layers = store.run("admin.model_layers", model=model)
    first, last = resolve_layers(all_layers, layers)
    kept = [layer for layer in all_layers if first <= layer["index"] <= last]
    offsets = np.concatenate([[0], np.cumsum([layer["size"] for layer in all_layers])])
    lo, hi = int(offsets[first]), int(offsets[last + 1])
    ranges = [(a, min(a + SOURCES_PER_QUERY, hi)) for a in range(lo, hi, SOURCES_PER_QUERY)]

    def pull(bounds: tuple[int, int]) -> list[dict[str, Any]]:
        return store.run_values("pull.model_edges", model=model, lo=bounds[0], hi=bounds[1])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rows = list(itertools.chain.from_iterable(pool.map(pull, ranges)))
    lengths = np.fromiter((len(row["dst"]) for row in rows), dtype=np.int64, count=len(rows))
    total = int(lengths.sum())
    src = np.repeat(np.fromiter((row["src"] for row in rows), dtype=np.int64, count=len(rows)), lengths) - lo
    dst = np.fromiter(itertools.chain.from_iterable(row["dst"] for row in rows), dtype=np.int64, count=total) - lo
    w = np.fromiter(itertools.chain.from_iterable(row["w"] for row in rows), dtype=np.float64, count=total)
    keep = (dst >= 0) & (dst < hi - lo) & (np.abs(w) >= min_weight)  # the layer range and --min-weight
    src, dst, w = src[keep], dst[keep], w[keep]
    n_edges = int(keep.sum())
    graph = BlockGraph.from_edges([layer["size"] for layer in kept], src, dst, w)
    return Subgraph(
        model=model,
        layers=kept,
        ordinals=np.arange(lo, hi),
        graph=graph,
        n_edges=n_edges,
        seconds=time.perf_counter() - start,
    )
