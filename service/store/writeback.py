"""Write a partition back to the store: one (:Partition), its (:Cluster)s and the memberships, in one transaction.

A reader never sees half a partition: every batch runs inside the one explicit transaction, which commits last.
Deleting one is one transaction too (``admin.delete_partition``, also the way a model's drop removes each of its
partitions first), so a partition is there whole or not at all: its memberships number at most the model's
neurons, far fewer than the edges that bound the other transactions. A partition is written only onto a model
that is still ready: one that a drop or replace marked 'deleting' while it was being clustered is refused.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from neuronmap.cypher import Store
from neuronmap.service.errors import ModelNotFoundError, ModelNotReadyError, PartitionWriteError

MEMBERS_PER_ROW = 5_000


def new_partition_id(model: str) -> str:
    return f"{model}/p-{secrets.token_hex(4)}"


def membership_rows(labels: np.ndarray, ordinals: np.ndarray) -> list[dict[str, Any]]:
    """One row per cluster (split into chunks of MEMBERS_PER_ROW ordinals); label −1 (isolated) gets no row."""
    rows = []
    for cluster in np.unique(labels[labels >= 0]):
        members = ordinals[labels == cluster]
        for start in range(0, members.size, MEMBERS_PER_ROW):
            rows.append(
                {
                    "index": int(cluster),
                    "size": int(members.size),
                    "ordinals": members[start : start + MEMBERS_PER_ROW].tolist(),
                }
            )
    return rows


def write_partition(
    store: Store,
    model: str,
    partition_id: str,
    props: dict[str, Any],
    labels: np.ndarray,
    ordinals: np.ndarray,
    rows_per_batch: int = 16,
) -> int:
    """Store the partition; returns the number of memberships written."""
    rows = membership_rows(np.asarray(labels), np.asarray(ordinals))
    written = 0
    with store.transaction("writeback.partition") as tx:
        status = tx.run("ingest.model_status", model=model)
        if not status:
            raise ModelNotFoundError(model)
        if status[0]["status"] != "ready":  # dropped or replaced while it was being clustered
            raise ModelNotReadyError(model, status[0]["status"])
        tx.run("writeback.create_partition", model=model, id=partition_id, props=props)
        for start in range(0, len(rows), rows_per_batch):
            result = tx.run(
                "writeback.create_clusters",
                model=model,
                partition=partition_id,
                rows=rows[start : start + rows_per_batch],
            )
            written += int(result[0]["members"]) if result else 0
        expected = int(np.count_nonzero(np.asarray(labels) >= 0))
        if written != expected:
            # Raising inside the block rolls the whole partition back.
            raise PartitionWriteError(model, expected, written)
    return written


def read_labels(store: Store, partition_id: str, n_neurons: int) -> np.ndarray:
    """The stored labels by ordinal, −1 for neurons outside the partition."""
    labels = np.full(n_neurons, -1, dtype=np.int64)
    for row in store.run("admin.partition_labels", partition=partition_id):
        labels[row["ordinal"]] = row["cluster"]
    return labels
