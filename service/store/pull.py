"""Pull a model (or a range of its layers) out of Neo4j into a BlockGraph, without one Bolt record per edge."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuronmap.cypher import Store
from neuronmap.loaders.ingest.blocks import decode_chunk
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


_KIND_NAMES = {"linear": "Linear", "conv": "Conv", "input": ""}


def layer_label(layer: dict[str, Any]) -> str:
    """A layer as tables print it: ``0 (hidden, Linear, 64)``, ``4 (output, Linear, 10)``, ``input (input, 64)``."""
    kind = _KIND_NAMES.get(str(layer.get("kind") or ""), str(layer.get("kind") or ""))
    size = layer.get("size")
    parts = [str(layer.get("role") or ""), kind, f"{size:,}" if isinstance(size, int) else ""]
    return f"{layer['name']} ({', '.join(part for part in parts if part)})"


def find_layer(
    layers: Sequence[dict[str, Any]],
    name: str | None = None,
    index: int | None = None,
    *,
    error: type[Exception] = ClusteringInputError,
    index_option: str = "--layer-index",
) -> dict[str, Any]:
    """The layer a user means: by its name, or by its index when that is asked for explicitly.

    One rule everywhere: ``name`` is a layer's name, never its position; a position needs ``index``. A name that
    is also the index of another layer (in ``nn.Sequential`` models the layers are named ``"0"``, ``"2"``, …) is
    refused, naming both layers, so nobody gets the wrong one silently.

    Parameters
    ----------
    layers : sequence of dict
        The model's layers as ``admin.model_layers`` returns them (``index``, ``name``, ``kind``, ``role``, ``size``).
    name : str, optional
    index : int, optional
        Given with ``name``, both must mean the same layer.
    error : exception class
        What to raise; its message names the layers and the way out.
    index_option : str
        How the caller spells an index, for the messages (``--layer-index``, ``layer_index=``).

    Raises
    ------
    error
        No such layer, a name that is only an index, an ambiguous name, or a name and an index that disagree.
    """
    names = ", ".join(str(layer["name"]) for layer in layers)
    by_index = {int(layer["index"]): layer for layer in layers}
    if index is not None:
        if isinstance(index, bool) or int(index) not in by_index:
            raise error(f"There is no layer at index {index!r} in this model; its indexes run 0..{len(layers) - 1}.")
        at = by_index[int(index)]
        if name is not None and str(name) != str(at["name"]):
            raise error(
                f"Layer name {str(name)!r} and index {index} name different layers; the layer at index {index} "
                f"is {layer_label(at)}. Give one of them."
            )
        return at
    if name is None:
        raise error("Name a layer (its name), or give its index explicitly.")
    text = str(name)
    named = next((layer for layer in layers if str(layer["name"]) == text), None)
    positional = by_index.get(int(text)) if text.isdigit() else None
    if named is not None and positional is not None and positional is not named:
        raise error(
            f"Layer {text!r} is ambiguous: it is the name of layer {layer_label(named)} at index {named['index']}, "
            f"and the index of layer {layer_label(positional)}. Layers are referred to by name; say which with "
            f"{index_option} {named['index']} (the layer named {text!r}) or {index_option} {text} "
            f"(layer {positional['name']!r})."
        )
    if named is not None:
        return named
    if positional is not None:
        raise error(
            f"There is no layer named {text!r} in this model; layers are referred to by name ({names}). "
            f"For the layer at index {text} ({layer_label(positional)}), pass {index_option} {text}."
        )
    raise error(f"There is no layer {text!r} in this model; its layers are: {names}.")


def resolve_layers(layers: list[dict[str, Any]], spec: str | None, *, indexes: str | None = None) -> tuple[int, int]:
    """Turn ``first:last`` into an inclusive index range: layer names in ``spec``, or indexes in ``indexes``.

    Either side may be left out (``fc1:``, ``:3``); a single layer needs no colon. Names follow
    :func:`find_layer`'s rule: a name that is also the index of another layer is refused as ambiguous.
    """
    if spec and indexes:
        raise ClusteringInputError(
            f"Give the layer range by name (--layers {spec}) or by index (--layer-index {indexes}), not both."
        )
    text = indexes or spec
    if not text:
        return layers[0]["index"], layers[-1]["index"]
    if ":" not in text:
        text = f"{text}:{text}"

    def one(part: str, default: int) -> int:
        part = part.strip()
        if not part:
            return default
        if indexes:
            if not part.lstrip("-").isdigit():
                raise ClusteringInputError(
                    f"--layer-index takes layer indexes (first:last), got {part!r}; give names with --layers."
                )
            return int(find_layer(layers, index=int(part), index_option="--layer-index")["index"])
        return int(find_layer(layers, part, index_option="--layer-index")["index"])

    first_text, last_text = text.split(":", 1)
    first, last = one(first_text, layers[0]["index"]), one(last_text, layers[-1]["index"])
    if first > last:
        raise ClusteringInputError(f"Layer range {text!r} runs backwards; write first:last in network order.")
    return first, last


def fat_rows_to_arrays(rows: list[dict[str, Any]], *values: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Flatten fat rows (``src``, a list ``dst`` and aligned lists named ``values``) into per-edge arrays:
    (src int64, dst int64, one float64 array per name of ``values``)."""
    lengths = np.fromiter((len(row["dst"]) for row in rows), dtype=np.int64, count=len(rows))
    total = int(lengths.sum())
    src = np.repeat(np.fromiter((row["src"] for row in rows), dtype=np.int64, count=len(rows)), lengths)
    dst = np.fromiter(itertools.chain.from_iterable(row["dst"] for row in rows), dtype=np.int64, count=total)
    columns = [
        np.fromiter(itertools.chain.from_iterable(row[name] for row in rows), dtype=np.float64, count=total)
        for name in values
    ]
    return src, dst, columns


def _pull_blocks(
    store: Store, model: str, first: int, last: int, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global (src, dst, w) from the packed EDGE_BLOCK chunks between layers first..last: bytes, no per-edge work."""
    srcs, dsts, ws = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)], [np.zeros(0)]
    for row in store.run_values("pull.model_blocks", model=model, first=first, last=last):
        src, dst, w = decode_chunk(row)
        srcs.append(src.astype(np.int64) + int(offsets[row["src_layer"]]))
        dsts.append(dst.astype(np.int64) + int(offsets[row["dst_layer"]]))
        ws.append(w)
    return np.concatenate(srcs), np.concatenate(dsts), np.concatenate(ws)


def _pull_relationships(
    store: Store, model: str, lo: int, hi: int, workers: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global (src, dst, w) read from the WEIGHT relationships of the sources in ordinals lo..hi-1, fat rows."""
    ranges = [(a, min(a + SOURCES_PER_QUERY, hi)) for a in range(lo, hi, SOURCES_PER_QUERY)]

    def pull(bounds: tuple[int, int]) -> list[dict[str, Any]]:
        return store.run_values("pull.model_edges", model=model, lo=bounds[0], hi=bounds[1])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rows = list(itertools.chain.from_iterable(pool.map(pull, ranges)))
    src, dst, (w,) = fat_rows_to_arrays(rows, "w")
    return src, dst, w


def pull_subgraph(
    store: Store,
    model: str,
    *,
    layers: str | None = None,
    layer_indexes: str | None = None,
    min_weight: float = 0.0,
    workers: int = 2,
) -> Subgraph:
    """Read a ready model's edges (|w|) between the chosen layers into a BlockGraph on the CPU.

    Parameters
    ----------
    store : Store
    model : str
    layers : str, optional
        ``first:last`` by layer name (inclusive), e.g. ``conv1:conv3``; default all layers.
    layer_indexes : str, optional
        ``first:last`` by layer index instead, e.g. ``1:3``.
    min_weight : float, default=0.0
        Drop edges with |w| below this.
    workers : int, default=2
        Pull queries in flight at once (the server answers each on its own thread).
    """
    start = time.perf_counter()
    check_ready(store, model)
    all_layers = store.run("admin.model_layers", model=model)
    first, last = resolve_layers(all_layers, layers, indexes=layer_indexes)
    kept = [layer for layer in all_layers if first <= layer["index"] <= last]
    offsets = np.concatenate([[0], np.cumsum([layer["size"] for layer in all_layers])])
    lo, hi = int(offsets[first]), int(offsets[last + 1])
    src, dst, w = _pull_blocks(store, model, first, last, offsets)
    if not w.size:  # a model ingested before the packed chunks, or one whose pull range holds no edges
        src, dst, w = _pull_relationships(store, model, lo, hi, workers)
    src, dst = src - lo, dst - lo
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
