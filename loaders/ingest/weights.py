"""Write one model's neurons and edges into the store, in batches. Safe to re-run after any crash.

A model is ``status: 'loading'`` from its first write until its last batch commits, then ``'ready'``; analysis
reads only ready models. If an ingest stops part-way (an error, Ctrl-C, a killed process), the leftovers stay
``loading`` (or ``failed``, when we got the chance to say so) and the next ingest of that name removes them first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from neuronmap.cypher import Store
from neuronmap.loaders.errors import LoadError
from neuronmap.loaders.records import ModelGraph

NEURONS_PER_BATCH = 20_000


class ModelExistsError(LoadError, FileExistsError):
    def __init__(self, model: str) -> None:
        super().__init__(
            f"Model {model!r} is already in the store. Pass --replace to re-ingest it, or choose another --name."
        )
        self.model = model


class UnknownModelError(LoadError, LookupError):
    def __init__(self, model: str) -> None:
        super().__init__(f"There is no model {model!r} in the store. `neuronmap models` lists them.")
        self.model = model


def model_status(store: Store, model: str) -> str | None:
    """'loading', 'ready' or 'failed'; None when the store has no such model."""
    rows = store.run("ingest.model_status", model=model)
    return rows[0]["status"] if rows else None


def neuron_rows(graph: ModelGraph, max_rows: int = NEURONS_PER_BATCH) -> Iterator[dict[str, Any]]:
    """Runs of consecutive neurons of one layer, each with its biases as one list."""
    for layer, bias in zip(graph.layers, graph.biases):
        values = np.zeros(layer.size) if bias is None else np.asarray(bias, dtype=np.float64)
        for start in range(0, layer.size, max_rows):
            chunk = values[start : start + max_rows]
            yield {
                "layer": layer.index,
                "role": layer.role,
                "start": start,
                "ordinal": int(graph.offsets[layer.index]) + start,
                "bias": chunk.tolist(),
            }


def edge_batches(graph: ModelGraph, batch_size: int) -> Iterator[tuple[int, int, list[dict[str, Any]], int]]:
    """(src_layer, dst_layer, rows, n_edges) with about ``batch_size`` edges per batch, one row per source neuron."""
    for block in graph.blocks:
        rows: list[dict[str, Any]] = []
        count = 0
        for i, row in enumerate(block.weight):
            nonzero = np.flatnonzero(row)
            if nonzero.size == 0:
                continue
            rows.append({"src": i, "dst": nonzero.tolist(), "w": row[nonzero].tolist()})
            count += nonzero.size
            if count >= batch_size:
                yield block.src_layer, block.dst_layer, rows, count
                rows, count = [], 0
        if rows:
            yield block.src_layer, block.dst_layer, rows, count


def _check_finite(graph: ModelGraph) -> None:
    from neuronmap.loaders.errors import NonFiniteWeightsError

    for block in graph.blocks:
        bad = int(np.count_nonzero(~np.isfinite(block.weight)))
        if bad:
            raise NonFiniteWeightsError(graph.layers[block.dst_layer].name, bad, block.weight.size)


def ingest(
    store: Store,
    model: str,
    graph: ModelGraph,
    *,
    replace: bool = False,
    batch_size: int = 10_000,
    workers: int = 3,
    on_batch: Callable[[int], None] = lambda n_edges: None,
) -> int:
    """Write ``graph`` as model ``model``; returns the number of edges written.

    Parameters
    ----------
    store : Store
    model : str
        The model's name, unique in the store.
    graph : ModelGraph
    replace : bool, default=False
        Replace a ready model of the same name. Leftovers of a failed or interrupted ingest are always replaced.
    batch_size : int, default=10_000
        Edges per write transaction; keep it under the server's transaction memory limit.
    workers : int, default=3
        Concurrent write transactions (measured best on 2 cores: one more than the cores keeps them busy
        while Python packs the next batch).
    on_batch : callable
        Called with the number of edges after each committed batch (the CLI's progress bar).

    Raises
    ------
    ModelExistsError
        The name is taken by a ready model and ``replace`` is False. Nothing is written.

    Examples
    --------
    >>> graph = nm.load_graph(path, arch="neuronmap.examples.nets:digits_mlp")
    >>> nm.ingest(store, model, graph) == graph.n_edges
    True
    >>> [row["status"] for row in nm.run_query(store, "compare-models", models=[model])]
    ['ready']
    >>> nm.ingest(store, model, graph)
    Traceback (most recent call last):
    ...
    neuronmap.loaders.ingest.weights.ModelExistsError: Model '...' is already in the store. Pass --replace ...
    >>> nm.ingest(store, model, graph, replace=True) == 64 * 64 + 64 * 64 + 64 * 10
    True
    """
    _check_finite(graph)  # before anything is written
    status = model_status(store, model)
    if status == "ready" and not replace:
        raise ModelExistsError(model)
    if status is not None:
        # A model being replaced, or the leftovers of a crashed run: start clean, so the writes below can
        # CREATE (fast) and still never duplicate anything.
        store.run("admin.delete_model", model=model)
    layers = [layer.model_dump() for layer in graph.layers]
    store.run("ingest.begin_model", model=model, meta=graph.meta.model_dump(), layers=layers)
    try:
        store.run_batched("ingest.create_neurons", neuron_rows(graph), 1, model=model)
        batches = (
            (dict(model=model, src_layer=src, dst_layer=dst, rows=rows), count)
            for src, dst, rows, count in edge_batches(graph, batch_size)
        )
        written = store.run_concurrently("ingest.create_edges", batches, workers=workers, on_batch=on_batch)
        store.run("ingest.mark_ready", model=model, n_neurons=graph.n_neurons, n_edges=written)
    except BaseException as error:  # Ctrl-C too: say 'failed' if the store still listens, then re-raise
        try:
            store.run("ingest.mark_failed", model=model, reason=f"{type(error).__name__}: {error}"[:500])
        except Exception:
            pass  # the model stays 'loading', which analysis ignores just the same
        raise
    return written


def delete_model(store: Store, model: str) -> int:
    """Remove a model and everything it owns; returns the number of neurons deleted."""
    if model_status(store, model) is None:
        raise UnknownModelError(model)
    rows = store.run("admin.delete_model", model=model)
    return int(rows[0]["deleted"]) if rows else 0
