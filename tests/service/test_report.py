"""The report: the explorer's partition page saved from a real store as one self-contained file, and PNG figures of
the promised sizes beside it."""

from __future__ import annotations

import re

import matplotlib.image
import numpy as np
import pytest
import scipy.sparse as sp

from neuronmap.service.errors import NoPartitionError, PartitionNotFoundError
from neuronmap.service.report import FIGURES, MAX_CELLS, aggregate, sorted_by_cluster, write_figures, write_report
from tests.service.conftest import reference_ncut

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, which always comes first."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def fetched(page: str) -> list[str]:
    """The page's attributes that would fetch something (src/href not a data: URI), scripts' bodies left out: Plotly
    and the explorer's script are inlined, and their code names attributes it never fetches."""
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "<script></script>", page, flags=re.S)
    return re.findall(r"""(?:src|href)\s*=\s*(?!["']?data:)["']?[^"'\s>]*""", markup)


def test_report_is_the_explorer_page_offline_with_figures_of_fixed_size(store, library_models, tmp_path):
    model = library_models.a
    partition, labels = next(iter(model.partitions.items()))  # the planted one, with a null
    written = write_report(store, model.name, partition, tmp_path / "out")
    assert written.partition == partition and written.page == tmp_path / "out" / "report.html"
    text = written.page.read_text(encoding="utf-8")
    assert fetched(text) == [] and "<script src" not in text  # nothing to fetch: it opens offline
    assert "Plotly.newPlot" in text and text.count("<script>") >= 2  # Plotly and the explorer's script, inlined
    for div in ("null", "span", "adjacency"):  # no spectrum: these partitions were written without eigenvalues
        assert f'id="{div}"' in text
    assert f"Partition {partition}" in text and "shuffled networks" in text and "No null computed" not in text
    total = float(re.search(r"n-cut terms: ([0-9.e+-]+)", text).group(1))
    assert total == pytest.approx(reference_ncut(model.graph, labels), rel=1e-5)
    assert list(written.figures) == list(FIGURES)
    for name, size in FIGURES.items():
        path = written.figures[name]
        assert path == tmp_path / "out" / f"{name}.png" and png_size(path.read_bytes()) == size
        assert matplotlib.image.imread(path).shape[:2] == (size[1], size[0])


def test_report_of_the_latest_partition_says_when_no_null_was_computed(store, library_models, tmp_path):
    model = library_models.b
    written = write_report(store, model.name, "latest", tmp_path)
    text = written.page.read_text(encoding="utf-8")
    assert written.partition == list(model.partitions)[0] and f"Partition {written.partition}" in text
    assert "No null computed" in text and "no verdict yet" in text and 'id="null"' not in text
    assert png_size(written.figures["null"].read_bytes()) == FIGURES["null"]


def test_report_refuses_unknown_partitions(store, library_models, tmp_path):
    with pytest.raises(PartitionNotFoundError):
        write_report(store, library_models.a.name, "no-such-partition", tmp_path)
    with pytest.raises(NoPartitionError):
        write_report(store, library_models.unclustered, "latest", tmp_path)
    with pytest.raises(PartitionNotFoundError):
        write_figures(store, library_models.a.name, "no-such-partition", tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the page nor a figure


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
