"""What the HTTP API and the explorer read beyond the library queries: the store overview with each model's
family, a partition's stored spectrum, and one module's members and core neurons with their strongest edges."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from neuronmap.cypher import Store
from neuronmap.results import Rows
from neuronmap.service.errors import ServiceError
from neuronmap.service.store import admin
from neuronmap.service.store.library import run_library_query
from neuronmap.service.store.writeback import read_labels

MEMBERS_SHOWN = 200  # units listed per layer in a module's details; the count is always whole


class ClusterNotFoundError(ServiceError, LookupError):
    def __init__(self, partition: str, cluster: int, known: Sequence[int]) -> None:
        shown = ", ".join(str(c) for c in known[:30])
        super().__init__(f"Partition {partition!r} has no cluster {cluster}; its clusters are {shown}.")


def family(kinds: Sequence[str]) -> str:
    """A model's family from its layers' kinds: ``transformer`` (residual dims), ``CNN`` (convolutions) or ``MLP``."""
    if "residual" in kinds:
        return "transformer"
    if "conv" in kinds:
        return "CNN"
    return "MLP"


def store_overview(store: Store) -> Rows:
    """Every model as ``admin.list_models`` gives it, with ``family`` and ``n_partitions``."""
    extra = {row["name"]: row for row in store.run("explorer.model_overview")}
    rows = []
    for row in admin.list_models(store):
        more = extra.get(row["name"], {"kinds": [], "n_partitions": 0})
        rows.append({**row, "family": family(more["kinds"] or []), "n_partitions": int(more["n_partitions"] or 0)})
    return Rows(rows, query="store_overview")


def partition_spectrum(store: Store, partition: str) -> list[float] | None:
    """The Laplacian eigenvalues stored on a partition, ascending; None when it was stored without them."""
    rows = store.run("explorer.partition_spectrum", partition=partition)
    values = rows[0]["eigenvalues"] if rows else None
    return [float(v) for v in values] if values else None


def cluster_members(layers: Sequence[dict[str, Any]], labels: np.ndarray, cluster: int) -> list[dict[str, Any]]:
    """One row per layer holding members of ``cluster``: the layer, the count and the first units (ascending)."""
    offsets = np.cumsum([0] + [int(layer["size"]) for layer in layers])
    members = np.flatnonzero(labels == cluster)
    rows = []
    for layer, start, stop in zip(layers, offsets[:-1], offsets[1:]):
        units = members[(members >= start) & (members < stop)] - start
        if units.size:
            shown = [int(u) for u in units[:MEMBERS_SHOWN]]
            rows.append({"layer": layer["name"], "kind": layer["kind"], "count": int(units.size), "units": shown})
    return rows


def module_detail(
    store: Store,
    model: str,
    partition: str,
    cluster: int,
    *,
    core: int = 5,
    edges: int = 3,
    core_rows: Sequence[dict[str, Any]] | None = None,
    labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """One module of a resolved partition: its members per layer, and its core neurons (most within-module
    weight, ``library.module_core``) each with its ``edges`` strongest incoming and outgoing weight edges
    (``library.neuron``), marked within or across modules. ``core_rows`` (module_core's rows for the whole partition)
    and ``labels`` (by ordinal) may be passed when the caller already holds them.

    Raises
    ------
    ClusterNotFoundError
        The partition has no such cluster.
    """
    layers = admin.model_layers(store, model)
    if labels is None:
        labels = read_labels(store, partition, int(sum(layer["size"] for layer in layers)))
    if not np.any(labels == cluster):
        raise ClusterNotFoundError(partition, cluster, sorted(int(c) for c in np.unique(labels[labels >= 0])))
    if core_rows is None:
        core_rows = run_library_query(store, "module_core", partition=partition, limit=core)
    core_rows = [dict(row) for row in core_rows if row["cluster"] == cluster]
    for row in core_rows:
        neighbours = run_library_query(
            store, "neuron", model=model, ordinal=int(row["ordinal"]), partition=partition, limit=edges
        )
        row["edges"] = [edge for edge in neighbours if edge["kind"] in ("in", "out")]
    return {
        "model": model,
        "partition": partition,
        "cluster": cluster,
        "size": int(np.count_nonzero(labels == cluster)),
        "members": cluster_members(layers, labels, cluster),
        "core": core_rows,
    }


def compare_checkpoints(store: Store, model_a: str, partition_a: str, model_b: str, partition_b: str) -> Any:
    """Two partitions of two models with the same layers (checkpoints of one architecture), neuron by neuron: a
    :class:`~neuronmap.service.store.compare.PartitionComparison` as ``compare_partitions`` gives for one model.

    Raises
    ------
    LibraryQueryInputError
        The two models' layers differ (names or sizes), so their neurons do not correspond.
    """
    from neuronmap.service.errors import LibraryQueryInputError
    from neuronmap.service.store.compare import comparison
    from neuronmap.service.store.library import resolve_partition

    first = resolve_partition(store, model_a, partition_a)
    second = resolve_partition(store, model_b, partition_b)
    layers_a, layers_b = admin.model_layers(store, model_a), admin.model_layers(store, model_b)
    shape_a = [(row["name"], row["size"]) for row in layers_a]
    if shape_a != [(row["name"], row["size"]) for row in layers_b]:
        raise LibraryQueryInputError(
            f"Models {model_a!r} and {model_b!r} have different layers, so their neurons do not correspond; "
            "compare checkpoints of one architecture, or two partitions of one model."
        )
    n = int(sum(size for _, size in shape_a))
    labels_a, labels_b = read_labels(store, first, n), read_labels(store, second, n)
    held = (labels_a >= 0) | (labels_b >= 0)
    clusters_a, rows = np.unique(labels_a[held], return_inverse=True)
    clusters_b, cols = np.unique(labels_b[held], return_inverse=True)
    table = np.zeros((clusters_a.size, clusters_b.size), dtype=np.int64)
    np.add.at(table, (rows, cols), 1)
    return comparison(first, second, table, clusters_a, clusters_b)
