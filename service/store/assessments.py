"""Sub-clusters and assessments in the store: read a partition's sub-clusters, write and read assessment runs.

A SubCluster is a cluster's neurons within one layer, created the first time an assessment scores it; an Assessment
is one run of one method with its settings and network-level statistics, never overwritten; SCORED carries one
sub-cluster's statistics in one run. The graph model is in docs/architecture.md.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np

from neuronmap.cypher import Store
from neuronmap.service.assessment.layout import LayerInfo, PartitionLayout, SubClusterRef
from neuronmap.service.errors import AssessmentInputError, AssessmentNotFoundError, PartitionWriteError
from neuronmap.service.store.library import resolve_partition


def read_partition_layout(store: Store, model: str | None, partition: str, *, edges: str = "weight") -> PartitionLayout:
    """The sub-clusters of a partition's hidden layers (methods.md §5: inputs and outputs are never lesioned).

    Parameters
    ----------
    store : Store
    model : str or None
        The model; required for ``partition='latest'``, else checked against the partition's.
    partition : str
        A partition id, or ``'latest'``.
    edges : str, default "weight"
        The graph whose newest partition ``'latest'`` means: ``"weight"``, or an activation graph's name.

    Returns
    -------
    PartitionLayout
        Its ``partition`` is the resolved id.

    Raises
    ------
    ModelNotFoundError, PartitionNotFoundError, NoPartitionError, LibraryQueryInputError
        As ``library.resolve_partition`` raises them.
    AssessmentInputError
        The partition has no neuron in any hidden layer.
    """
    partition_id = resolve_partition(store, model, partition, edges=edges)
    model = store.run("library.partition_stats", partition=partition_id)[0]["model"]
    layers = tuple(
        LayerInfo(index=row["index"], name=row["name"], kind=row["kind"], role=row["role"] or "", size=row["size"])
        for row in store.run("admin.model_layers", model=model)
    )
    offsets = np.cumsum([0] + [layer.size for layer in layers])
    rows = store.run("admin.partition_labels", partition=partition_id)
    ordinals = np.array([row["ordinal"] for row in rows], dtype=np.int64)
    clusters = np.array([row["cluster"] for row in rows], dtype=np.int64)
    layer_of = np.searchsorted(offsets, ordinals, side="right") - 1
    subclusters, pools = [], {}
    for layer in layers:
        if layer.role != "hidden":
            continue
        here = layer_of == layer.index
        units = ordinals[here] - offsets[layer.index]
        if units.size == 0:
            continue
        pools[layer.index] = np.sort(units)
        for cluster in np.unique(clusters[here]):
            members = np.sort(units[clusters[here] == cluster])
            subclusters.append(
                SubClusterRef(
                    cluster=int(cluster),
                    layer=layer.index,
                    layer_name=layer.name,
                    units=tuple(int(u) for u in members),
                    pool_size=int(units.size),
                )
            )
    if not subclusters:
        raise AssessmentInputError(
            f"Partition {partition_id!r} has no neuron in a hidden layer of model {model!r}, "
            "so it has no sub-cluster to assess. Cluster the hidden layers (--layers)."
        )
    return PartitionLayout(
        model=model, partition=partition_id, layers=layers, subclusters=tuple(subclusters), pools=pools
    )


def _storable(value: Any, in_list: bool = False) -> Any:
    if isinstance(value, (np.floating, float)):
        # A missing scalar is left out; inside a list (which cannot hold null) it stays NaN to keep the positions.
        return float(value) if (in_list or math.isfinite(float(value))) else None
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_storable(v, in_list=True) for v in value]
    return value


def storable(props: dict[str, Any]) -> dict[str, Any]:
    """``props`` as Neo4j stores them: numpy values as Python ones, scalar NaN/inf and None left out.

    Neo4j properties are primitives or lists of primitives; a list keeps NaN where a value is undefined (e.g. the
    recall of a class without test inputs).
    """
    out = {key: _storable(value) for key, value in props.items()}
    return {key: value for key, value in out.items() if value is not None}


def new_assessment_id(partition: str, method: str, key: str | None = None) -> str:
    """``{partition}/{method}-{key}``; a random key by default."""
    return f"{partition}/{method}-{key or secrets.token_hex(4)}"


def write_assessment(
    store: Store,
    layout: PartitionLayout,
    method: str,
    props: dict[str, Any],
    scores: Sequence[dict[str, Any]],
    *,
    interactions: Sequence[dict[str, Any]] = (),
    key: str | None = None,
) -> str:
    """Store one assessment run in one transaction; returns its id.

    Parameters
    ----------
    store : Store
    layout : PartitionLayout
        The partition the run assessed.
    method : str
        ``importance``, ``importance_pairs``, ``coherence_features`` or ``coherence_examples``.
    props : dict
        Settings and network-level statistics, stored on the (:Assessment).
    scores : sequence of dict
        One per sub-cluster: ``cluster``, ``layer`` and ``stats`` (a flat dict), stored on ``SCORED``.
    interactions : sequence of dict, optional
        Double lesions: ``cluster_a``, ``layer_a``, ``cluster_b``, ``layer_b`` and ``stats``.
    key : str, optional
        The id's last part (a job's id, so that a retry cannot store the run twice: ids are unique); random by default.

    Raises
    ------
    PartitionWriteError
        A score found no sub-cluster (the partition changed meanwhile); nothing is stored.
    """
    assessment_id = new_assessment_id(layout.partition, method, key)
    names = {layer.index: layer.name for layer in layout.layers}
    keys = {(s.cluster, s.layer): s for s in layout.subclusters}
    rows = [
        {"cluster": s.cluster, "layer": s.layer, "layer_name": names[s.layer], "size": s.size} for s in keys.values()
    ]
    scores = [
        {"cluster": int(row["cluster"]), "layer": int(row["layer"]), "stats": storable(row["stats"])} for row in scores
    ]
    pairs = [
        {**{k: int(row[k]) for k in ("cluster_a", "layer_a", "cluster_b", "layer_b")}, "stats": storable(row["stats"])}
        for row in interactions
    ]
    with store.transaction("assessment.write") as tx:
        merged = tx.run("assessment.merge_subclusters", model=layout.model, partition=layout.partition, rows=rows)
        if not merged or merged[0]["subclusters"] != len(rows):
            raise PartitionWriteError(layout.model, len(rows), merged[0]["subclusters"] if merged else 0)
        tx.run(
            "assessment.create_assessment",
            partition=layout.partition,
            id=assessment_id,
            method=method,
            props=storable(props),
        )
        if scores:
            written = tx.run(
                "assessment.create_scores", assessment=assessment_id, partition=layout.partition, rows=scores
            )
            if written[0]["scores"] != len(scores):
                raise PartitionWriteError(layout.model, len(scores), written[0]["scores"])
        if pairs:
            written = tx.run(
                "assessment.create_interactions", assessment=assessment_id, partition=layout.partition, rows=pairs
            )
            if written[0]["pairs"] != len(pairs):
                raise PartitionWriteError(layout.model, len(pairs), written[0]["pairs"])
    return assessment_id


def list_assessments(
    store: Store, partition: str, model: str | None = None, *, edges: str = "weight"
) -> list[dict[str, Any]]:
    """The assessments of a partition (an id, or ``'latest'`` with ``model``: the newest of the ``edges`` graph),
    newest first."""
    partition_id = resolve_partition(store, model, partition, edges=edges)
    return store.run("assessment.list_assessments", partition=partition_id)


def read_assessment(store: Store, assessment_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the Assessment's properties, its per-sub-cluster rows with ``stats``) of one run.

    Raises
    ------
    AssessmentNotFoundError
    """
    partition = assessment_id.rsplit("/", 1)[0]
    found = [row for row in store.run("assessment.list_assessments", partition=partition) if row["id"] == assessment_id]
    if not found:
        raise AssessmentNotFoundError(repr(assessment_id))
    if found[0]["method"] == "importance_pairs":
        return found[0]["summary"], store.run("assessment.assessment_interactions", assessment=assessment_id)
    return found[0]["summary"], store.run("assessment.assessment_scores", assessment=assessment_id)


def latest_assessment(store: Store, partition: str, method: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The newest assessment of ``method`` for a partition id, or None."""
    for row in store.run("assessment.list_assessments", partition=partition):
        if row["method"] == method:
            return read_assessment(store, row["id"])
    return None
