"""The HTML report: written from a real store, self-contained, with valid PNG figures of the promised sizes."""

from __future__ import annotations

import base64
import re

import matplotlib.image
import numpy as np
import pytest
import scipy.sparse as sp

from neuronmap.service.errors import NoPartitionError, PartitionNotFoundError
from neuronmap.service.report import FIGURES, MAX_CELLS, aggregate, sorted_by_cluster, write_report
from tests.service.conftest import reference_ncut

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, which always comes first."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_report_is_self_contained_with_figures_of_fixed_size(store, library_models, tmp_path):
    model = library_models.a
    partition, labels = next(iter(model.partitions.items()))  # the planted one, with a null
    page = write_report(store, model.name, partition, tmp_path / "out")
    assert page == tmp_path / "out" / "report.html"
    text = page.read_text(encoding="utf-8")
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(embedded) == len(FIGURES)
    assert re.findall(r'(?:src|href)="(?!data:)', text) == []  # nothing to fetch: it opens offline
    for (name, size), encoded in zip(FIGURES.items(), embedded):
        data = (tmp_path / "out" / f"{name}.png").read_bytes()
        assert base64.b64decode(encoded) == data
        assert png_size(data) == size
        assert matplotlib.image.imread(tmp_path / "out" / f"{name}.png").shape[:2] == (size[1], size[0])
    assert partition in text and "no null computed" not in text.lower()
    total = float(re.search(r"n-cut terms: ([0-9.e+-]+)", text).group(1))
    assert total == pytest.approx(reference_ncut(model.graph, labels), rel=1e-5)


def test_report_of_the_latest_partition_says_when_no_null_was_computed(store, library_models, tmp_path):
    model = library_models.b
    page = write_report(store, model.name, "latest", tmp_path)
    text = page.read_text(encoding="utf-8")
    assert list(model.partitions)[0] in text and "No null computed" in text
    assert png_size((tmp_path / "null.png").read_bytes()) == FIGURES["null"]


def test_report_refuses_unknown_partitions(store, library_models, tmp_path):
    with pytest.raises(PartitionNotFoundError):
        write_report(store, library_models.a.name, "no-such-partition", tmp_path)
    with pytest.raises(NoPartitionError):
        write_report(store, library_models.unclustered, "latest", tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_big_adjacencies_are_averaged_into_at_most_max_cells():
    rng = np.random.default_rng(0)
    n = 2 * MAX_CELLS + 7
    upper = sp.random(n, n, density=0.01, random_state=0, format="csr")
    adjacency = (upper + upper.T).tocsr()
    labels = rng.integers(-1, 5, n)
    order, clusters, sizes = sorted_by_cluster(labels, np.zeros(n, dtype=np.int64))
    assert list(clusters) == [0, 1, 2, 3, 4] and sizes.sum() == order.size == np.count_nonzero(labels >= 0)
    assert np.all(np.diff(labels[order]) >= 0)
    cells, step = aggregate(adjacency, order)
    assert step == -(-order.size // MAX_CELLS) > 1 and cells.shape == (-(-order.size // step),) * 2
    assert cells.shape[0] <= MAX_CELLS
    per_cell = np.bincount(np.arange(order.size) // step)
    assert (cells * np.outer(per_cell, per_cell)).sum() == pytest.approx(adjacency[order][:, order].sum(), rel=1e-12)
    small, step = aggregate(adjacency[:50, :50], np.arange(50))
    assert step == 1 and np.array_equal(small, adjacency[:50, :50].toarray())
