"""How alike two partitions of one model are: their contingency table (``library.compare_partitions``), with the
adjusted Rand index and normalised mutual information of the neurons both hold, from ``sklearn.metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from neuronmap.cypher import Store
from neuronmap.service.store.library import LATEST, resolve_partition, run_library_query


@dataclass(frozen=True)
class PartitionComparison:
    """Two partitions of one model side by side.

    ``table[i, j]`` counts the neurons in cluster ``clusters_a[i]`` of partition_a and ``clusters_b[j]`` of
    partition_b; cluster −1 collects the neurons that only the other partition holds. The scores use only the
    neurons that both partitions hold.
    """

    partition_a: str
    partition_b: str
    clusters_a: np.ndarray  # (n_a,) cluster indexes, −1 first when present
    clusters_b: np.ndarray  # (n_b,)
    table: np.ndarray  # (n_a, n_b) int64
    ari: float
    nmi: float

    @property
    def n_common(self) -> int:
        """Neurons that both partitions hold."""
        return int(self.table[np.ix_(self.clusters_a >= 0, self.clusters_b >= 0)].sum())

    def rows(self) -> list[dict[str, Any]]:
        """One row per non-empty cell, with the two partitions' ids and the scores on every row (for JSON and CSV)."""
        i, j = np.nonzero(self.table)
        return [
            {
                "partition_a": self.partition_a,
                "partition_b": self.partition_b,
                "cluster_a": int(self.clusters_a[a]),
                "cluster_b": int(self.clusters_b[b]),
                "n": int(self.table[a, b]),
                "ari": self.ari,
                "nmi": self.nmi,
            }
            for a, b in zip(i, j)
        ]

    def matrix_columns(self) -> list[str]:
        """The columns of :meth:`matrix_rows`: ``cluster_a``, then one per cluster of partition_b (``-1``: none)."""
        return ["cluster_a", *(str(int(c)) for c in self.clusters_b)]

    def matrix_rows(self) -> list[dict[str, Any]]:
        """The contingency table as a k_a × k_b matrix: one row per cluster of partition_a, one column per cluster
        of partition_b, keyed by the cluster's index as text (``-1``: neurons the other partition lacks)."""
        return [
            {"cluster_a": int(a), **{str(int(b)): int(n) for b, n in zip(self.clusters_b, row)}}
            for a, row in zip(self.clusters_a, self.table)
        ]


def contingency_table(rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn ``library.compare_partitions`` rows into a dense table.

    Parameters
    ----------
    rows : sequence of dict
        Each with ``cluster_a``, ``cluster_b`` and ``n``.

    Returns
    -------
    table : np.ndarray of shape (n_a, n_b), int64
    clusters_a : np.ndarray of shape (n_a,)
        The cluster index of each row of the table, ascending (−1, the neurons partition_a lacks, first).
    clusters_b : np.ndarray of shape (n_b,)
    """
    clusters_a = np.unique(np.array([row["cluster_a"] for row in rows], dtype=np.int64))
    clusters_b = np.unique(np.array([row["cluster_b"] for row in rows], dtype=np.int64))
    table = np.zeros((clusters_a.size, clusters_b.size), dtype=np.int64)
    for row in rows:
        table[np.searchsorted(clusters_a, row["cluster_a"]), np.searchsorted(clusters_b, row["cluster_b"])] += row["n"]
    return table, clusters_a, clusters_b


def _labellings(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two label arrays whose contingency table is ``table`` (one entry per counted neuron)."""
    table = np.asarray(table, dtype=np.int64)
    i, j = np.nonzero(table)
    counts = table[i, j]
    return np.repeat(i, counts), np.repeat(j, counts)


def adjusted_rand_index(table: np.ndarray) -> float:
    """Adjusted Rand index (Hubert & Arabie, 1985) of the labellings behind a contingency table.

    Parameters
    ----------
    table : np.ndarray of shape (n_a, n_b)
        Neuron counts per pair of clusters; every entry belongs to both labellings.

    Returns
    -------
    float
        ``sklearn.metrics.adjusted_rand_score`` of the two labellings: 1.0 for identical partitions (up to
        renumbering), about 0 for independent ones.
    """
    return float(adjusted_rand_score(*_labellings(table)))


def normalized_mutual_info(table: np.ndarray) -> float:
    """Normalised mutual information (arithmetic-mean normalisation) of the labellings behind a contingency table.

    Parameters
    ----------
    table : np.ndarray of shape (n_a, n_b)

    Returns
    -------
    float
        ``sklearn.metrics.normalized_mutual_info_score`` of the two labellings, in [0, 1].
    """
    return float(normalized_mutual_info_score(*_labellings(table)))


def compare_partitions(
    store: Store, partition_a: str, partition_b: str, *, model: str | None = None, edges: str = "weight"
) -> PartitionComparison:
    """Contingency table, ARI and NMI of two partitions of one model.

    Parameters
    ----------
    store : Store
    partition_a, partition_b : str
        Partition ids, or ``'latest'`` (which needs ``model``).
    model : str, optional
        The model both partitions must belong to.
    edges : str, default "weight"
        Which graph's newest partition ``'latest'`` means: ``"weight"``, or an activation graph's name.

    Returns
    -------
    PartitionComparison
        With the resolved partition ids.

    Raises
    ------
    PartitionNotFoundError
        Either partition is missing, or (with ``model``) belongs to another model.
    LibraryQueryInputError
        The two partitions belong to different models.
    """
    first = resolve_partition(store, model, partition_a, edges=edges)
    same = partition_b == partition_a == LATEST
    second = first if same else resolve_partition(store, model, partition_b, edges=edges)
    rows = run_library_query(store, "compare_partitions", partition_a=first, partition_b=second)
    table, clusters_a, clusters_b = contingency_table(rows)
    return comparison(first, second, table, clusters_a, clusters_b)


def comparison(
    first: str, second: str, table: np.ndarray, clusters_a: np.ndarray, clusters_b: np.ndarray
) -> PartitionComparison:
    """The comparison of two partitions from their contingency table (row −1 / column −1: neurons left out by one
    side, counted in the table but not in ARI and NMI)."""
    common = table[np.ix_(clusters_a >= 0, clusters_b >= 0)]
    return PartitionComparison(
        partition_a=first,
        partition_b=second,
        clusters_a=clusters_a,
        clusters_b=clusters_b,
        table=table,
        ari=adjusted_rand_index(common),
        nmi=normalized_mutual_info(common),
    )
