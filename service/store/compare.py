"""How alike two partitions of one model are: their contingency table (``library.compare_partitions``), with the
adjusted Rand index and normalised mutual information computed from it, as scikit-learn defines them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuronmap.cypher import Store
from neuronmap.service.store.library import resolve_partition, run_library_query


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


def _comb2(x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float((x * (x - 1) / 2).sum())


def adjusted_rand_index(table: np.ndarray) -> float:
    """Adjusted Rand index (Hubert & Arabie, 1985) of the labellings behind a contingency table.

    Parameters
    ----------
    table : np.ndarray of shape (n_a, n_b)
        Neuron counts per pair of clusters; every entry belongs to both labellings.

    Returns
    -------
    float
        1.0 for identical partitions (up to renumbering), about 0 for independent ones; equals
        ``sklearn.metrics.adjusted_rand_score``. Like sklearn, two labellings that each put everything in one
        cluster (or each neuron in its own) score 1.0.
    """
    table = np.asarray(table, dtype=np.int64)
    n = int(table.sum())
    sum_cells = _comb2(table)
    sum_a, sum_b = _comb2(table.sum(axis=1)), _comb2(table.sum(axis=0))
    total = n * (n - 1) / 2
    if total == 0:
        return 1.0
    expected = sum_a * sum_b / total
    maximum = (sum_a + sum_b) / 2
    if maximum == expected:  # both labellings trivial: sklearn's special case
        return 1.0
    return float((sum_cells - expected) / (maximum - expected))


def _entropy(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalized_mutual_info(table: np.ndarray) -> float:
    """Mutual information over the arithmetic mean of the two entropies (sklearn's default normalisation).

    Parameters
    ----------
    table : np.ndarray of shape (n_a, n_b)

    Returns
    -------
    float
        In [0, 1]; equals ``sklearn.metrics.normalized_mutual_info_score``. 1.0 when both labellings have a
        single cluster, as in sklearn.
    """
    table = np.asarray(table, dtype=np.float64)
    n = table.sum()
    if n == 0:
        return 1.0
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    h_a, h_b = _entropy(rows), _entropy(cols)
    if h_a == 0 and h_b == 0:
        return 1.0
    i, j = np.nonzero(table)
    cells = table[i, j]
    mi = float((cells / n * (np.log(cells) + np.log(n) - np.log(rows[i]) - np.log(cols[j]))).sum())
    mi = max(mi, 0.0)  # rounding can leave a tiny negative
    return float(mi / max((h_a + h_b) / 2, np.finfo(np.float64).eps))


def compare_partitions(
    store: Store, partition_a: str, partition_b: str, *, model: str | None = None
) -> PartitionComparison:
    """Contingency table, ARI and NMI of two partitions of one model.

    Parameters
    ----------
    store : Store
    partition_a, partition_b : str
        Partition ids, or ``'latest'`` (which needs ``model``).
    model : str, optional
        The model both partitions must belong to.

    Returns
    -------
    PartitionComparison

    Raises
    ------
    PartitionNotFoundError
        Either partition is missing, or (with ``model``) belongs to another model.
    LibraryQueryInputError
        The two partitions belong to different models.
    """
    first = resolve_partition(store, model, partition_a)
    second = resolve_partition(store, model, partition_b)
    rows = run_library_query(store, "compare_partitions", partition_a=first, partition_b=second)
    table, clusters_a, clusters_b = contingency_table(rows)
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
