"""Write one model's neurons and edges into the store, in batches. Safe to re-run after any crash.

A model is ``status: 'loading'`` from its first write until its last batch commits, then ``'ready'``; analysis
reads only ready models. If an ingest stops part-way (an error, Ctrl-C, a killed process, a dead server), the
leftovers stay ``loading`` (or ``failed``, when we got the chance to say so) and the next ingest of that name
removes them first.

One run at a time writes a model: an ingest or a drop holds the model's lease (:mod:`.lease`), so a second run is
refused at once, and a run that died gives the lease up to the next one.

A drop (and a replace) marks the model ``'deleting'`` in its own first transaction, so analysis refuses it while
it goes; then every transaction deletes a bounded number of relationships (not neurons: one wide neuron can carry
hundreds of thousands), then the neurons, and the model node last. A drop stopped part-way leaves a model that
says ``deleting``, and a rerun of the drop or of the ingest finishes the job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from neuronmap.cypher import Store
from neuronmap.loaders.errors import LoadError
from neuronmap.loaders.ingest import lease as leases
from neuronmap.loaders.ingest.blocks import chunk_params
from neuronmap.loaders.ingest.names import check_name
from neuronmap.loaders.records import ModelGraph

NEURONS_PER_BATCH = 20_000
# Relationships (or neurons) per delete transaction: ~42 MiB of transaction heap (bench/drop.py), against the 687 MiB
# that all transactions may hold on the default 1g heap. The CLI uses twice NEURONMAP_BATCH_SIZE (default 10,000).
DELETE_BATCH = 20_000
BLOCKS_PER_DELETE = 4  # packed edge chunks per delete transaction: up to 64 MB of arrays


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
    """'loading', 'ready', 'failed' or 'deleting'; None when the store has no such model."""
    rows = store.run("ingest.model_status", model=model)
    return rows[0]["status"] if rows else None


def model_counts(store: Store, model: str) -> dict[str, int]:
    """What the store really holds for ``model``, counted from the graph: n_layers, n_neurons, n_edges (WEIGHT)."""
    return store.run("admin.model_counts", model=model)[0]


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


def part_names(graph: ModelGraph) -> list[str]:
    """The named components every edge carries (a gated MLP's "v_gate" and "v_up"), the same for all blocks."""
    names = {tuple(sorted(block.parts)) for block in graph.blocks}
    if len(names) > 1:
        raise ValueError(f"The edge blocks carry different parts: {sorted(names)}; a graph's edges share theirs.")
    return list(names.pop()) if names else []


def edge_batches(graph: ModelGraph, batch_size: int) -> Iterator[tuple[int, int, list[dict[str, Any]], int]]:
    """(src_layer, dst_layer, rows, n_edges) with at most ``batch_size`` edges per batch, one row per source neuron.

    A source neuron with more than ``batch_size`` edges is split over several rows (and batches), so that no
    transaction creates more relationships than ``batch_size``, however wide the layer. Blocks with parts give
    each row ``parts``: one list per name of ``part_names(graph)``, aligned with ``w``.
    """
    names = part_names(graph)
    for block in graph.blocks:
        rows: list[dict[str, Any]] = []
        count = 0
        for i, targets, weights, parts in block.row_entries():
            start = 0
            while start < targets.size:
                stop = start + batch_size - count
                row: dict[str, Any] = {"src": i, "dst": targets[start:stop].tolist(), "w": weights[start:stop].tolist()}
                if names:
                    row["parts"] = [parts[name][start:stop].tolist() for name in names]
                rows.append(row)
                count += len(row["dst"])
                start = stop
                if count >= batch_size:
                    yield block.src_layer, block.dst_layer, rows, count
                    rows, count = [], 0
        if rows:
            yield block.src_layer, block.dst_layer, rows, count


def ordinal_ranges(graph: ModelGraph, src_layer: int, dst_layer: int, rows: list[dict[str, Any]]) -> dict[str, int]:
    """The ordinals that ``ingest.create_edges`` looks up for one batch: its source neurons (rows come in unit
    order) and the whole target layer."""
    src_base, dst_base = int(graph.offsets[src_layer]), int(graph.offsets[dst_layer])
    first, last = int(rows[0]["src"]), int(rows[-1]["src"])
    return {
        "src_lo": src_base + first,
        "src_hi": src_base + last,
        "src_first": first,
        "dst_lo": dst_base,
        "dst_hi": dst_base + graph.layers[dst_layer].size - 1,
    }


def _check_finite(graph: ModelGraph) -> None:
    from neuronmap.loaders.errors import NonFiniteWeightsError

    for block in graph.blocks:
        values = block.weight.data if block.is_sparse else block.weight
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            size = block.weight.shape[0] * block.weight.shape[1]
            raise NonFiniteWeightsError(graph.layers[block.dst_layer].name, bad, size)


def ingest(
    store: Store,
    model: str,
    graph: ModelGraph,
    *,
    replace: bool = False,
    batch_size: int = 10_000,
    workers: int = 3,
    on_batch: Callable[[int], None] = lambda n_edges: None,
    delete_batch: int = DELETE_BATCH,
    stop: threading.Event | None = None,
    relationships: bool = True,
) -> int:
    """Write ``graph`` as model ``model``; returns the number of edges written.

    Every edge goes into the packed EDGE_BLOCK chunks that pulls read (:mod:`.blocks`), and, unless
    ``relationships`` is False, also into a WEIGHT relationship for Cypher that walks single neurons.

    Parameters
    ----------
    store : Store
    model : str
        The model's name, unique in the store: at most 200 characters, not blank, no control characters.
    graph : ModelGraph
    replace : bool, default=False
        Replace a ready model of the same name. Leftovers of a failed, interrupted or half-dropped model are
        always replaced.
    batch_size : int, default=10_000
        Edges per write transaction (a wide neuron's edges are split over batches); keep it under the server's
        transaction memory limit.
    workers : int, default=3
        Concurrent write transactions (measured best on 2 cores: one more than the cores keeps them busy
        while Python packs the next batch).
    on_batch : callable
        Called with the number of edges after each committed batch (the CLI's progress bar).
    delete_batch : int, default=DELETE_BATCH
        Relationships per delete transaction when an old copy or leftovers go first.
    stop : threading.Event, optional
        Once set, the ingest stops after the batch in flight, as if by Ctrl-C (KeyboardInterrupt), so that a
        caller's signal handler never interrupts the driver in the middle of a read.
    relationships : bool, default=True
        Also write one WEIGHT relationship per edge. Without them the model clusters, assesses and answers the
        layer- and module-level queries as usual, writes ~5× faster at GPT-2-small scale, and takes ~5× less
        disk; the queries that walk single edges refuse it (``WeightRelationshipsMissingError``).

    Raises
    ------
    ModelExistsError
        The name is taken by a ready model and ``replace`` is False. Nothing is written.
    ModelBusyError
        Another ingest or drop of this name is running. Nothing is written.
    BadNameError
        The name is empty, blank, too long or holds control characters. Nothing is written.

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
    check_name(model, "model")
    _check_finite(graph)  # before anything is written
    if model_status(store, model) == "ready" and not replace:
        raise ModelExistsError(model)  # before the lease, so that a refusal writes nothing at all
    with leases.hold(store, model, "ingest") as lease:
        status = model_status(store, model)  # again: it may have changed before the lease was ours
        if status == "ready" and not replace:
            raise ModelExistsError(model)
        if status is not None:
            # A model being replaced, or the leftovers of a crashed run: start clean, so the writes below can
            # CREATE (fast) and still never duplicate anything.
            _delete_parts(store, model, lease, delete_batch, stop=stop)
        layers = [layer.model_dump() for layer in graph.layers]
        meta = {**graph.meta.model_dump(), "weight_relationships": relationships}
        store.run("ingest.begin_model", model=model, meta=meta, layers=layers)
        try:
            store.run_batched("ingest.create_neurons", neuron_rows(graph), 1, model=model)

            def committed(n_edges: int) -> None:
                lease.check()
                _check_stop(stop)
                on_batch(n_edges)

            def packed(n_edges: int) -> None:  # the progress bar follows the WEIGHT relationships when written
                if relationships:
                    lease.check()
                    _check_stop(stop)
                else:
                    committed(n_edges)

            chunks = ((dict(model=model, **params), n) for params, n in chunk_params(graph))
            written = store.run_concurrently("ingest.create_edge_block", chunks, workers=2, on_batch=packed)
            if relationships:
                written = _create_relationships(store, model, graph, batch_size, workers, committed)
            lease.check()
            store.run("ingest.mark_ready", model=model, n_neurons=graph.n_neurons, n_edges=written)
        except BaseException as error:  # Ctrl-C too: say 'failed' if the store still listens, then re-raise
            if not leases.connection_lost(error):  # a dead server: asking would only wait; 'loading' says as much
                try:
                    store.run("ingest.mark_failed", model=model, reason=f"{type(error).__name__}: {error}"[:500])
                except Exception:
                    pass  # the model stays 'loading', which analysis ignores just the same
            raise
    return written


def _create_relationships(
    store: Store,
    model: str,
    graph: ModelGraph,
    batch_size: int,
    workers: int,
    committed: Callable[[int], None],
) -> int:
    """One WEIGHT relationship per edge, ``batch_size`` per transaction on ``workers`` writers; returns the count."""
    names = part_names(graph)
    extra: dict[str, Any] = {"parts": names} if names else {}
    batches = (
        (dict(model=model, rows=rows, **ordinal_ranges(graph, src, dst, rows), **extra), count)
        for src, dst, rows, count in edge_batches(graph, batch_size)
    )
    query = "ingest.create_edges_with_parts" if names else "ingest.create_edges"
    return store.run_concurrently(query, batches, workers=workers, on_batch=committed)


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise KeyboardInterrupt


def _delete_parts(
    store: Store,
    model: str,
    lease: leases.Lease,
    batch: int,
    on_batch: Callable[[int], None] = lambda n: None,
    *,
    stop: threading.Event | None = None,
) -> int:
    """Delete a model under its lease: marked 'deleting' first, then bounded batches; returns the neurons deleted.

    1. ``admin.mark_model_deleting``: its own transaction; analysis refuses the model (and its activation graphs).
    2. Each partition, with its clusters, memberships and assessments, in one transaction: a partition is there
       whole or not at all.
    3. The packed edge chunks, a few per transaction; then the relationships of its neurons, ``batch`` per
       transaction; ``on_batch`` gets each batch's count.
    4. The neurons, ``batch`` per transaction.
    5. Activation-graph nodes, layers and the model node, in one transaction.
    """
    store.run("admin.mark_model_deleting", model=model)
    for row in store.run("admin.partition_ids", model=model):
        lease.check()
        _check_stop(stop)
        store.run("admin.delete_partition", partition=row["id"])
    while int(store.run("admin.delete_model_blocks", model=model, limit=BLOCKS_PER_DELETE)[0]["deleted"]):
        lease.check()
        _check_stop(stop)
    while True:
        lease.check()
        _check_stop(stop)
        deleted = int(store.run("admin.delete_model_edges", model=model, limit=batch)[0]["deleted"])
        on_batch(deleted)
        if deleted < batch:
            break
    neurons = 0
    while True:
        lease.check()
        _check_stop(stop)
        deleted = int(store.run("admin.delete_model_neurons", model=model, limit=batch)[0]["deleted"])
        neurons += deleted
        if deleted < batch:
            break
    store.run("admin.delete_model_node", model=model)
    return neurons


def delete_model(
    store: Store,
    model: str,
    *,
    batch_size: int = DELETE_BATCH,
    on_batch: Callable[[int], None] = lambda n_relationships: None,
    stop: threading.Event | None = None,
) -> int:
    """Remove a model and everything it owns; returns the number of neurons deleted.

    The model says ``'deleting'`` from the first transaction on, and each later transaction deletes at most
    ``batch_size`` relationships (``on_batch`` gets each count), so a model of any width can go, and Ctrl-C
    stops it between batches. A drop stopped part-way is finished by running it again (or by an ingest of the
    name). Once ``stop`` is set, the drop stops after the batch in flight (KeyboardInterrupt), as Ctrl-C would.

    Raises
    ------
    UnknownModelError
        The store has no model of that name.
    ModelBusyError
        An ingest or another drop of the model is running.
    """
    if model_status(store, model) is None:
        raise UnknownModelError(model)
    with leases.hold(store, model, "drop") as lease:
        if model_status(store, model) is None:  # dropped by the run that held the lease before us
            raise UnknownModelError(model)
        return _delete_parts(store, model, lease, batch_size, on_batch, stop=stop)
