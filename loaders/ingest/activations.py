"""Write activation graphs into the store, in batches. Safe to re-run after any crash.

An activation graph is a named set of ``(:Neuron)-[:CORRELATION {graph, r, r2}]->(:Neuron)`` edges of one ready
model, described by an ``(:ActivationGraph)`` node that the model links to with ``HAS_ACTIVATION_GRAPH``. Several
graphs of one model (other data sets, methods, sparsifications) coexist under different names.

Like a model, a graph is ``status: 'loading'`` from its first write until its last batch commits, then
``'ready'``; analysis reads only ready graphs. Leftovers of an interrupted ingest (``loading`` or ``failed``) are
removed by the next ingest of that name; a ready graph is replaced only when asked. One run at a time writes or
removes a graph (it holds the graph's lease, :mod:`.lease`). Removing one marks it ``'deleting'`` in its own
first transaction, then deletes its edges a bounded number per transaction; a rerun finishes a removal that was
stopped part-way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import neo4j.exceptions
import numpy as np

from neuronmap.cypher import Store
from neuronmap.loaders.activations import ActivationEdges
from neuronmap.loaders.errors import (
    ActivationError,
    ActivationGraphExistsError,
    ActivationLayoutError,
    LoadError,
    UnknownActivationGraphError,
)
from neuronmap.loaders.ingest import lease as leases
from neuronmap.loaders.ingest.names import check_name
from neuronmap.loaders.ingest.weights import DELETE_BATCH, UnknownModelError, model_status


class ModelNotReadyForActivationsError(LoadError, RuntimeError):
    def __init__(self, model: str, status: str) -> None:
        super().__init__(
            f"Model {model!r} is {status!r}, not ready, so its neurons cannot take correlation edges. "
            "Finish its `neuronmap ingest` first (re-running it replaces the leftovers)."
        )
        self.model, self.status = model, status


def graph_status(store: Store, model: str, name: str) -> str | None:
    """'loading', 'ready', 'failed' or 'deleting'; None when the model has no activation graph of that name."""
    rows = store.run("activations.graph_status", model=model, name=name)
    return rows[0]["status"] if rows else None


def list_graphs(store: Store, model: str) -> list[dict[str, Any]]:
    """Every activation graph of ``model`` with its settings and size (``activations.list_graphs``)."""
    return store.run("activations.list_graphs", model=model)


def _check_layout(store: Store, model: str, edges: ActivationEdges) -> None:
    """The correlations must come from a network whose layers are the stored model's, unit for unit."""
    stored = {row["index"]: row for row in store.run("admin.model_layers", model=model)}
    for index in edges.recorded:
        layer = edges.layers[index]
        row = stored.get(index)
        if row is None or row["size"] != layer.size:
            found = "has no such layer" if row is None else f"stores layer {row['name']!r} with {row['size']:,} units"
            raise ActivationLayoutError(
                f"The correlations were recorded from layer {index} ({layer.name!r}, {layer.size:,} units), but "
                f"model {model!r} {found}. Record them from the network that was ingested as {model!r} (the same "
                "--arch and input shape)."
            )


def edge_batches(edges: ActivationEdges, batch_size: int) -> Iterator[tuple[int, int, list[dict[str, Any]], int]]:
    """(src_layer, dst_layer, rows, n_edges): about ``batch_size`` edges per batch, one row per source neuron.

    Rows carry unit indices within their layers, so ``activations.create_edges`` looks both layers up once.
    """
    if edges.n_edges == 0:
        return
    offsets = edges.offsets
    src_layer = np.searchsorted(offsets, edges.src, side="right") - 1
    dst_layer = np.searchsorted(offsets, edges.dst, side="right") - 1
    # src < dst and ordinals run in layer order, so src_layer <= dst_layer; group by layer pair, then source.
    order = np.lexsort((edges.dst, edges.src, dst_layer, src_layer))
    src, dst = edges.src[order], edges.dst[order]
    r, r2 = edges.r[order], edges.r2[order]
    pair = src_layer[order] * len(edges.layers) + dst_layer[order]
    cuts = np.flatnonzero((np.diff(pair) != 0) | (np.diff(src) != 0)) + 1  # start of each (pair, source) run
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [src.size]])
    rows: list[dict[str, Any]] = []
    count = 0
    current = None
    for start, end in zip(starts, ends):
        s_layer, d_layer = divmod(int(pair[start]), len(edges.layers))
        if current is not None and current != (s_layer, d_layer) and rows:
            yield current[0], current[1], rows, count
            rows, count = [], 0
        current = (s_layer, d_layer)
        rows.append(
            {
                "src": int(src[start] - offsets[s_layer]),
                "dst": (dst[start:end] - offsets[d_layer]).tolist(),
                "r": r[start:end].tolist(),
                "r2": r2[start:end].tolist(),
            }
        )
        count += int(end - start)
        if count >= batch_size:
            yield s_layer, d_layer, rows, count
            rows, count = [], 0
    if rows and current is not None:
        yield current[0], current[1], rows, count


def ingest_activation_graph(
    store: Store,
    model: str,
    name: str,
    edges: ActivationEdges,
    *,
    replace: bool = False,
    batch_size: int = 20_000,
    workers: int = 2,
    on_batch: Callable[[int], None] = lambda n_edges: None,
) -> int:
    """Store ``edges`` as activation graph ``name`` of the ready model ``model``; returns the edges written.

    Parameters
    ----------
    store : Store
    model : str
        A ready model whose layers are those the correlations were recorded from.
    name : str
        The graph's name, unique within the model (e.g. ``"digits-spearman"``); clustering takes it as ``edges``.
    edges : ActivationEdges
        From :func:`neuronmap.loaders.activations.sparsify`.
    replace : bool, default=False
        Replace a ready graph of the same name. Leftovers of a failed or interrupted ingest are always replaced.
    batch_size : int, default=20_000
        Edges per write transaction.
    workers : int, default=2
        Concurrent write transactions.
    on_batch : callable
        Called with the number of edges after each committed batch (the CLI's progress bar).

    Raises
    ------
    UnknownModelError
        The store has no model of that name.
    ModelNotReadyForActivationsError
        The model's own ingest has not finished.
    ActivationLayoutError
        The correlations come from a network with other layers.
    ActivationGraphExistsError
        The name is taken by a ready graph and ``replace`` is False (nothing is written).
    ModelBusyError
        Another process is writing or removing a graph of that name right now (nothing is written).
    """
    if not isinstance(name, str) or not name.strip():
        raise ActivationError(f"An activation graph needs a non-empty name, got {name!r}; pass --name.")
    check_name(name, "activation graph")
    if name == "weight":
        raise ActivationError(
            "'weight' names a model's own weight edges when clustering; choose another --name for the activation graph."
        )
    status = model_status(store, model)
    if status is None:
        raise UnknownModelError(model)
    if status != "ready":
        raise ModelNotReadyForActivationsError(model, status)
    _check_layout(store, model, edges)
    if graph_status(store, model, name) == "ready" and not replace:
        raise ActivationGraphExistsError(model, name)
    with leases.hold(store, model, "activations", graph=name) as lease:  # ModelBusyError names a running writer
        return _write_graph(store, model, name, edges, lease, replace, batch_size, workers, on_batch)


def _write_graph(
    store: Store,
    model: str,
    name: str,
    edges: ActivationEdges,
    lease: leases.Lease,
    replace: bool,
    batch_size: int,
    workers: int,
    on_batch: Callable[[int], None],
) -> int:
    existing = graph_status(store, model, name)  # again, now that the lease is ours
    if existing == "ready" and not replace:
        raise ActivationGraphExistsError(model, name)
    if existing is not None:
        # A graph being replaced, or the leftovers of a crashed run: start clean, so the writes below can CREATE.
        _delete_graph_parts(store, model, name, lease, DELETE_BATCH)
    try:
        store.run("activations.begin_graph", model=model, name=name, props=edges.properties())
    except neo4j.exceptions.ConstraintError:
        raise ActivationGraphExistsError(model, name, concurrent=True) from None
    try:
        batches = (
            (dict(model=model, graph=name, src_layer=src, dst_layer=dst, rows=rows), count)
            for src, dst, rows, count in edge_batches(edges, batch_size)
        )

        def committed(n_edges: int) -> None:
            lease.check()
            on_batch(n_edges)

        written = store.run_concurrently("activations.create_edges", batches, workers=workers, on_batch=committed)
        store.run("activations.mark_ready", model=model, name=name, n_edges=written)
    except BaseException as error:  # Ctrl-C too: say 'failed' if the store still listens, then re-raise
        if not leases.connection_lost(error):
            try:
                store.run(
                    "activations.mark_failed", model=model, name=name, reason=f"{type(error).__name__}: {error}"[:500]
                )
            except Exception:
                pass  # the graph stays 'loading', which analysis ignores just the same
        raise
    return written


def _delete_graph_parts(store: Store, model: str, name: str, lease: leases.Lease, batch: int) -> int:
    """Mark the graph 'deleting' (its own transaction), delete its edges ``batch`` per transaction, then its node."""
    store.run("activations.mark_deleting", model=model, name=name)
    cursor, total = 0, 0
    while True:
        lease.check()
        row = store.run("activations.delete_edges", model=model, name=name, limit=batch, **{"from": cursor})[0]
        total += int(row["deleted"])
        cursor = int(row["cursor"])
        if row["deleted"] < batch:
            break
    store.run("activations.delete_graph_node", model=model, name=name)
    return total


def delete_activation_graph(store: Store, model: str, name: str, *, batch_size: int = DELETE_BATCH) -> int:
    """Remove one activation graph (its edges and node); returns the number of edges deleted.

    It says ``'deleting'`` from the first transaction on, and each later one deletes at most ``batch_size`` edges;
    a removal stopped part-way is finished by running it again.
    """
    if graph_status(store, model, name) is None:
        raise UnknownActivationGraphError(model, name)
    with leases.hold(store, model, "activations", graph=name) as lease:
        if graph_status(store, model, name) is None:
            raise UnknownActivationGraphError(model, name)
        return _delete_graph_parts(store, model, name, lease, batch_size)
