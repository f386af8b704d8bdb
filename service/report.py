"""`neuronmap report`: a partition's explorer page saved as one self-contained HTML file, and its figures as PNGs.

The page is the explorer's own partition page (:func:`neuronmap.service.http.export.export_partition_page`, one code
path with the server), so it shows the verdict, the null, the spectrum, the span, the sorted adjacency and what the
assessments found. Beside it, ``write_figures`` draws four static PNGs for papers: the adjacency sorted by cluster,
the clusters × layers span, the n-cut against its nulls, and the module flow between layers. Every figure reads the
graph the partition was cut from: the weights (|w|, above the partition's min_weight) or its activation graph (r²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from pydantic import BaseModel

from neuronmap.cypher import Store
from neuronmap.service.store import admin
from neuronmap.service.store.activation_pull import pull_activation_graph
from neuronmap.service.store.library import WEIGHT, resolve_partition, run_library_query
from neuronmap.service.store.pull import pull_subgraph
from neuronmap.service.store.writeback import read_labels

DPI = 100
FIGURES: dict[str, tuple[int, int]] = {  # name → (width, height) in pixels
    "adjacency": (800, 800),
    "span": (900, 500),
    "null": (800, 450),
    "flow": (1000, 600),
}
MAX_CELLS = 600  # the adjacency image has at most this many cells a side
MIN_FLOW_SHARE = 0.01  # flows under this share of the strongest one are not drawn
_PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


@dataclass
class ReportData:
    """Everything the figures show, read from the store once."""

    model: str
    partition: dict[str, Any]  # library.partition_stats
    layers: list[dict[str, Any]]  # admin.model_layers
    span: list[dict[str, Any]]  # library.module_span
    flow: list[dict[str, Any]]  # library.module_flow
    cohesion: list[dict[str, Any]]  # library.module_cohesion
    adjacency: sp.csr_matrix  # (n_neurons, n_neurons) the partition's graph over every neuron of the model, by ordinal
    labels: np.ndarray  # (n_neurons,) cluster by ordinal, −1 outside the partition


def _figure(name: str) -> Figure:
    width, height = FIGURES[name]
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _color(cluster: int) -> str:
    return _PALETTE[cluster % len(_PALETTE)]


def partition_adjacency(store: Store, model: str, stats: dict[str, Any], n_neurons: int) -> sp.csr_matrix:
    """The graph a partition was cut from, over every neuron of the model by ordinal: |w| of the weights (at least
    its min_weight), or r² of its activation graph."""
    if (stats.get("edges") or WEIGHT) == WEIGHT:
        subgraph = pull_subgraph(store, model, min_weight=float(stats.get("min_weight") or 0.0))
    else:
        subgraph = pull_activation_graph(store, model, str(stats["edges"]))
    local = subgraph.graph.to_scipy().tocoo()
    ordinals = np.asarray(subgraph.ordinals)
    return sp.csr_matrix((local.data, (ordinals[local.row], ordinals[local.col])), shape=(n_neurons, n_neurons))


def _weight_name(data: ReportData) -> str:
    return "|w|" if (data.partition.get("edges") or WEIGHT) == WEIGHT else "r²"


def read_report_data(store: Store, model: str, partition_id: str, *, edges: str = WEIGHT) -> ReportData:
    """Read what the figures show: the partition's statistics, its library queries, the adjacency and labels.

    Parameters
    ----------
    store : Store
    model : str
    partition_id : str
        A partition id of ``model``, or ``'latest'``.
    edges : str, default "weight"
        The graph whose newest partition ``'latest'`` means: ``"weight"``, or an activation graph's name.

    Returns
    -------
    ReportData
    """
    partition_id = resolve_partition(store, model, partition_id, edges=edges)
    stats = run_library_query(store, "partition_stats", partition=partition_id)[0]
    layers = admin.model_layers(store, model)
    n_neurons = int(sum(layer["size"] for layer in layers))
    return ReportData(
        model=model,
        partition=stats,
        layers=layers,
        span=run_library_query(store, "module_span", partition=partition_id),
        flow=run_library_query(store, "module_flow", partition=partition_id),
        cohesion=run_library_query(store, "module_cohesion", partition=partition_id),
        adjacency=partition_adjacency(store, model, stats, n_neurons),
        labels=read_labels(store, partition_id, n_neurons),
    )


def sorted_by_cluster(labels: np.ndarray, layer_of: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clustered neurons ordered by (cluster, layer, ordinal).

    Returns
    -------
    order : np.ndarray of shape (n_clustered,)
        Ordinals in display order.
    clusters : np.ndarray of shape (k,)
        The clusters present, ascending.
    sizes : np.ndarray of shape (k,)
        Their sizes, in the same order.
    """
    ordinals = np.flatnonzero(labels >= 0)
    order = ordinals[np.lexsort((ordinals, layer_of[ordinals], labels[ordinals]))]
    clusters, sizes = np.unique(labels[order], return_counts=True)
    return order, clusters, sizes


def aggregate(adjacency: sp.spmatrix, order: np.ndarray, max_cells: int = MAX_CELLS) -> tuple[np.ndarray, int]:
    """The adjacency restricted to ``order`` (in that order), averaged into at most ``max_cells`` cells a side.

    Returns
    -------
    cells : np.ndarray of shape (m, m)
        Mean |w| per cell, m = ceil(n / step).
    step : int
        Neurons per cell side (1: no aggregation).
    """
    n = order.size
    step = max(1, math.ceil(n / max_cells))
    m = math.ceil(n / step) if n else 0
    bins = np.arange(n) // step
    # P (m, N) sums the chosen neurons into their cells: cells = P A Pᵀ, then divide by the neurons per cell
    pick = sp.csr_matrix((np.ones(n), (bins, order)), shape=(m, adjacency.shape[0]))
    sums = (pick @ adjacency @ pick.T).toarray()
    per_cell = np.bincount(bins, minlength=m).astype(np.float64)
    return sums / np.outer(per_cell, per_cell), step


def plot_adjacency(data: ReportData) -> Figure:
    """The |w| adjacency of the clustered neurons, sorted by (cluster, layer), cluster blocks outlined."""
    layer_of = np.repeat([layer["index"] for layer in data.layers], [layer["size"] for layer in data.layers])
    order, clusters, sizes = sorted_by_cluster(data.labels, layer_of)
    cells, step = aggregate(data.adjacency, order)
    figure = _figure("adjacency")
    axes = figure.add_axes((0.08, 0.06, 0.80, 0.86))
    colorbar_axes = figure.add_axes((0.90, 0.06, 0.025, 0.86))
    weight = _weight_name(data)
    if cells.size:
        positive = cells[cells > 0]
        top = float(positive.max()) if positive.size else 1.0
        image = axes.imshow(cells, cmap="magma_r", norm=PowerNorm(0.5, vmin=0.0, vmax=top), interpolation="nearest")
        figure.colorbar(image, cax=colorbar_axes, label=f"mean {weight} per cell" if step > 1 else weight)
        start = 0
        for cluster, size in zip(clusters, sizes):
            lo, hi = start / step - 0.5, (start + size) / step - 0.5
            axes.add_patch(
                Rectangle((lo, lo), hi - lo, hi - lo, fill=False, edgecolor=_color(int(cluster)), linewidth=1.5)
            )
            start += size
    unit = f" ({step} neurons per cell)" if step > 1 else ""
    axes.set_title(f"{weight} adjacency sorted by cluster{unit}")
    axes.set_xlabel("neurons by cluster, then layer")
    axes.set_ylabel("neurons by cluster, then layer")
    return figure


def plot_span(data: ReportData) -> Figure:
    """Clusters × layers heatmap of neuron counts (``library.module_span``), counts written in small ones."""
    figure = _figure("span")
    axes = figure.add_axes((0.10, 0.15, 0.78, 0.75))
    colorbar_axes = figure.add_axes((0.90, 0.15, 0.02, 0.75))
    counts = np.array([row["per_layer"] for row in data.span], dtype=np.float64).reshape(len(data.span), -1)
    names = [layer["name"] for layer in data.layers]
    if counts.size:
        image = axes.imshow(counts, aspect="auto", cmap="Blues", interpolation="nearest")
        figure.colorbar(image, cax=colorbar_axes, label="neurons")
        if counts.shape[0] <= 24 and counts.shape[1] <= 24:
            for (i, j), value in np.ndenumerate(counts):
                if value:
                    axes.text(
                        j,
                        i,
                        f"{int(value)}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if value > counts.max() / 2 else "black",
                    )
    axes.set_xticks(range(len(names)), names, rotation=45 if len(names) > 8 else 0, fontsize=8)
    axes.set_yticks(range(len(data.span)), [str(row["cluster"]) for row in data.span], fontsize=8)
    axes.set_xlabel("layer")
    axes.set_ylabel("cluster")
    axes.set_title("neurons of each cluster per layer")
    return figure


def plot_null(data: ReportData) -> Figure:
    """The n-cut as a vertical line over the histogram of the shuffled n-cuts, or 'no null computed'."""
    figure = _figure("null")
    axes = figure.add_axes((0.10, 0.14, 0.85, 0.76))
    stats = data.partition
    nulls = [float(x) for x in (stats.get("null_ncuts") or [])]
    ncut = stats.get("ncut")
    if not nulls:
        if ncut is not None:
            axes.axvline(float(ncut), color="#e15759", linewidth=2, label=f"n-cut {float(ncut):.4g}")
            axes.set_xlim(float(ncut) - 1, float(ncut) + 1)
            axes.legend(loc="upper left", fontsize=9)
        axes.text(
            0.5,
            0.5,
            "no null computed",
            ha="center",
            va="center",
            fontsize=16,
            transform=axes.transAxes,
            bbox={"facecolor": "white", "edgecolor": "#999999", "boxstyle": "round"},
        )
        axes.set_yticks([])
    else:
        axes.hist(
            nulls,
            bins=min(30, max(5, len(nulls) // 3)),
            color="#bab0ac",
            edgecolor="white",
            label=f"shuffled ({stats.get('null_method') or 'null'}, n={len(nulls)})",
        )
        if ncut is not None:
            axes.axvline(float(ncut), color="#e15759", linewidth=2, label=f"n-cut {float(ncut):.4g}")
        axes.legend(loc="upper left", fontsize=9)
        axes.set_ylabel("shuffled networks")
    z, p_value = stats.get("z"), stats.get("p_value")
    detail = "".join(
        [
            f", z = {z:.3g}" if z is not None else "",
            f", p = {p_value:.3g}" if p_value is not None else "",
        ]
    )
    axes.set_title(f"n-cut against the shuffled null{detail}")
    axes.set_xlabel("n-cut (lower: more modular)")
    return figure


def plot_flow(data: ReportData) -> Figure:
    """Layers as columns of stacked cluster boxes, joined by lines with width ∝ summed |w| between them."""
    figure = _figure("flow")
    axes = figure.add_axes((0.03, 0.10, 0.94, 0.82))
    names = [layer["name"] for layer in data.layers]
    column = {name: i for i, name in enumerate(names)}
    sizes = {layer["name"]: layer["size"] for layer in data.layers}
    box_width, gap = 0.18, 0.01
    boxes: dict[tuple[str, int], tuple[float, float]] = {}  # (layer, cluster) → (bottom, top)
    for i, name in enumerate(names):
        members = [(row["cluster"], row["per_layer"][i]) for row in data.span if row["per_layer"][i] > 0]
        total = sum(count for _, count in members)
        usable = 1.0 - gap * max(0, len(members) - 1)
        y = 0.0
        for cluster, count in members:
            height = usable * count / total
            boxes[(name, cluster)] = (y, y + height)
            axes.add_patch(
                Rectangle(
                    (i - box_width / 2, y),
                    box_width,
                    height,
                    facecolor=_color(cluster),
                    edgecolor="white",
                    linewidth=0.5,
                )
            )
            if height > 0.04:
                axes.text(i, y + height / 2, str(cluster), ha="center", va="center", fontsize=7, color="white")
            y += height + gap
        axes.text(i, -0.04, f"{name}\n({sizes[name]})", ha="center", va="top", fontsize=8)
    strongest = max((row["weight"] for row in data.flow), default=0.0)
    for row in sorted(data.flow, key=lambda r: r["weight"]):  # heavy flows drawn last, on top
        source, target = (row["src_layer"], row["src_cluster"]), (row["dst_layer"], row["dst_cluster"])
        if strongest <= 0 or row["weight"] < MIN_FLOW_SHARE * strongest or source not in boxes or target not in boxes:
            continue
        if row["src_layer"] == row["dst_layer"]:
            continue  # an activation graph's within-layer correlations: the columns show layers, not their insides
        x0, x1 = column[row["src_layer"]] + box_width / 2, column[row["dst_layer"]] - box_width / 2
        y0, y1 = sum(boxes[source]) / 2, sum(boxes[target]) / 2
        share = row["weight"] / strongest
        axes.plot(
            [x0, x1],
            [y0, y1],
            color=_color(row["src_cluster"]),
            linewidth=0.3 + 8 * share,
            alpha=0.15 + 0.5 * share,
            solid_capstyle="butt",
        )
    axes.set_xlim(-0.5, len(names) - 0.5)
    axes.set_ylim(-0.12, 1.02)
    axes.axis("off")
    axes.set_title(f"module flow: box height = share of the layer's neurons, line width ∝ summed {_weight_name(data)}")
    return figure


PLOTS = {"adjacency": plot_adjacency, "span": plot_span, "null": plot_null, "flow": plot_flow}


class Report(BaseModel):
    """The files ``write_report`` wrote."""

    partition: str  # the partition's id ('latest' resolved)
    page: Path  # report.html: the explorer's partition page, self-contained
    figures: dict[str, Path]  # name → its PNG, in FIGURES' order


def write_figures(
    store: Store, model: str, partition_id: str, out_dir: str | Path, *, edges: str = WEIGHT
) -> dict[str, Path]:
    """Draw the four figures of one partition as ``NAME.png`` in ``out_dir`` (created if missing), each of the size
    FIGURES gives; returns name → path.

    Raises
    ------
    ModelNotFoundError, ModelNotReadyError, PartitionNotFoundError, NoPartitionError
        As ``resolve_partition`` and ``pull_subgraph`` raise them.
    """
    data = read_report_data(store, model, partition_id, edges=edges)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in FIGURES:
        written[name] = out / f"{name}.png"
        PLOTS[name](data).savefig(written[name], dpi=DPI, format="png")
    return written


def write_report(store: Store, model: str, partition_id: str, out_dir: str | Path, *, edges: str = WEIGHT) -> Report:
    """Write ``report.html`` (the explorer's partition page, self-contained) and the PNG figures into ``out_dir``.

    Parameters
    ----------
    store : Store
    model : str
        The model's name.
    partition_id : str
        A partition id of ``model``, or ``'latest'``.
    out_dir : str or Path
        Created if missing; files of an earlier report there are overwritten.
    edges : str, default "weight"
        The graph whose newest partition ``'latest'`` means: ``"weight"``, or an activation graph's name.

    Returns
    -------
    Report
        The partition's id and the files written.

    Raises
    ------
    ModelNotFoundError, ModelNotReadyError, PartitionNotFoundError, NoPartitionError
        As ``resolve_partition`` and ``pull_subgraph`` raise them; an unknown partition writes nothing.
    """
    # imported here: the explorer brings plotly, which the figures alone do not need
    from neuronmap.service.http.export import export_partition_page

    resolved = resolve_partition(store, model, partition_id, edges=edges)
    out = Path(out_dir)
    page = export_partition_page(store, model, resolved, out / "report.html")
    return Report(partition=resolved, page=page, figures=write_figures(store, model, resolved, out))
