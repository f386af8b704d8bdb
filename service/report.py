"""A partition as one self-contained HTML page: four figures and the numbers behind them.

``write_report`` writes ``report.html`` with its PNG figures embedded (it opens offline and mails as one file), and
the same PNGs beside it: the adjacency sorted by cluster, the clusters × layers span, the n-cut against its nulls,
and the module flow between layers. Every figure and table reads the graph the partition was cut from: the weights
(|w|, above the partition's min_weight) or its activation graph (r²). An assessed partition adds its newest
importance and coherence tables and images.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from neuronmap.cypher import Store
from neuronmap.service.store import admin
from neuronmap.service.store.activation_pull import pull_activation_graph
from neuronmap.service.store.assessments import latest_assessment
from neuronmap.service.store.library import WEIGHT, graph_name, resolve_partition, run_library_query
from neuronmap.service.store.pull import layer_label, pull_subgraph
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
    """Everything the page shows, read from the store once."""

    model: str
    partition: dict[str, Any]  # library.partition_stats
    layers: list[dict[str, Any]]  # admin.model_layers
    span: list[dict[str, Any]]  # library.module_span
    flow: list[dict[str, Any]]  # library.module_flow
    cohesion: list[dict[str, Any]]  # library.module_cohesion
    adjacency: sp.csr_matrix  # (n_neurons, n_neurons) the partition's graph over every neuron of the model, by ordinal
    labels: np.ndarray  # (n_neurons,) cluster by ordinal, −1 outside the partition
    # method → (the newest assessment's properties, its per-sub-cluster rows); empty when never assessed
    assessments: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = field(default_factory=dict)


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
    """Read what the report shows: the partition's statistics, its library queries, the adjacency and labels.

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
        assessments={
            method: found
            for method in _ASSESSMENTS
            if (found := latest_assessment(store, partition_id, method)) is not None
        },
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


def _png(figure: Figure, path: Path) -> bytes:
    figure.savefig(path, dpi=DPI, format="png")
    return path.read_bytes()


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return html.escape(str(value))


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STAT_KEYS = [
    "id",
    "model",
    "k",
    "n_clusters",
    "method",
    "edges",
    "layers",
    "min_weight",
    "seed",
    "ncut",
    "null_method",
    "n_null",
    "null_mean",
    "null_sd",
    "z",
    "p_value",
    "n_neurons",
    "n_isolated",
    "solver",
    "device",
    "eigen_residual",
    "pull_seconds",
    "cluster_seconds",
    "null_seconds",
    "created_at",
]
_MODULE_COLUMNS = ["cluster", "size", "first layer", "last layer", "thickest", "within", "cut", "vol", "cut/vol"]
_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1040px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}figure{margin:1.5em 0}figcaption{color:#555;font-size:0.9em}
img{max-width:100%;height:auto}"""


_ASSESSMENTS = {  # method → (title, network statistics, per-sub-cluster columns)
    "importance": (
        "Importance (lesions)",
        [
            "dataset",
            "n_null",
            "seed",
            "accuracy",
            "n_tested",
            "n_important",
            "fisher_p",
            "chi2_p",
            "fisher_p_range",
            "chi2_p_range",
        ],
        ["delta_accuracy", "null_delta_mean", "p_value", "p_adjusted", "range_statistic", "p_range", "category"],
    ),
    "coherence_features": (
        "Coherence: feature visualisation",
        [
            "n_null",
            "seed",
            "n_coherent",
            "fisher_p",
            "fisher_p_entropy",
            "chi2_p_entropy",
            "fisher_p_activation",
            "chi2_p_activation",
        ],
        [
            "activation",
            "null_activation_mean",
            "p_activation",
            "entropy",
            "null_entropy_mean",
            "p_entropy",
            "p_adjusted",
        ],
    ),
    "coherence_examples": (
        "Coherence: data-set examples",
        [
            "dataset",
            "n_null",
            "seed",
            "n_coherent",
            "fisher_p",
            "fisher_p_entropy",
            "fisher_p_activation",
            "fisher_p_similarity",
        ],
        [
            "entropy",
            "null_entropy_mean",
            "p_entropy",
            "activation",
            "p_activation",
            "similarity",
            "p_similarity",
            "p_adjusted",
        ],
    ),
}
MAX_ASSESSMENT_IMAGES = 24  # per method: larger partitions show the first ones only


def render_assessments(data: ReportData) -> str:
    """One section per assessed method: network tests, a sub-cluster table and the run's saved images."""
    parts = []
    for method, (title, network, columns) in _ASSESSMENTS.items():
        if method not in data.assessments:
            continue
        summary, rows = data.assessments[method]
        table = _table(
            ["layer", "cluster", "size", *columns],
            [[row["layer_name"], row["cluster"], row["size"], *[row["stats"].get(c) for c in columns]] for row in rows],
        )
        images: list[str] = []
        for row in rows:
            path = row["stats"].get("image")
            if path and Path(path).is_file() and len(images) < MAX_ASSESSMENT_IMAGES:
                encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                images.append(
                    f'<figure><img alt="{html.escape(Path(path).name)}" '
                    f'src="data:image/png;base64,{encoded}"><figcaption>{html.escape(row["layer_name"])}'
                    f", cluster {row['cluster']}</figcaption></figure>"
                )
        parts.append(
            f"<h2>{html.escape(title)}</h2><p>Assessment {html.escape(str(summary.get('id')))}, "
            f"{html.escape(str(summary.get('created_at', '')))}.</p>"
            f"{_table(['statistic', 'value'], [[k, summary.get(k)] for k in network])}{table}" + "".join(images)
        )
    return "\n".join(parts)


def render_html(data: ReportData, images: dict[str, bytes]) -> str:
    """The page: title, statistics, module table and the figures as ``data:image/png;base64`` URIs."""
    stats = data.partition
    span = {row["cluster"]: row for row in data.span}
    labels = {layer["name"]: layer_label(layer) for layer in data.layers}

    def layer(cluster: int, column: str) -> str | None:
        name = span.get(cluster, {}).get(column)
        return labels.get(name, name)

    module_rows = [
        [
            row["cluster"],
            row["size"],
            layer(row["cluster"], "first_layer"),
            layer(row["cluster"], "last_layer"),
            layer(row["cluster"], "thickest_layer"),
            row["within"],
            row["cut"],
            row["vol"],
            row["ncut_term"],
        ]
        for row in data.cohesion
    ]
    total = sum(row["ncut_term"] for row in data.cohesion)
    weight, graph = _weight_name(data), graph_name(stats.get("edges"))
    captions = {
        "adjacency": (
            f"Adjacency of the {graph} ({weight}) with neurons sorted by cluster, then layer; each cluster's block "
            "outlined."
        ),
        "span": "How many neurons each cluster has in each layer (library.module_span).",
        "null": (
            "The partition's n-cut against the n-cuts of shuffled networks."
            if stats.get("null_ncuts")
            else "No null computed for this partition: run `neuronmap cluster` with shuffles to get one."
        ),
        "flow": (
            f"Clusters per layer and the summed {weight} between them (library.module_flow); flows under "
            f"{MIN_FLOW_SHARE:.0%} of the strongest are not drawn."
        ),
    }
    figures = "".join(
        f'<figure><img alt="{name}" width="{FIGURES[name][0]}" height="{FIGURES[name][1]}" '
        f'src="data:image/png;base64,{base64.b64encode(images[name]).decode("ascii")}">'
        f"<figcaption>{html.escape(captions[name])} ({name}.png)</figcaption></figure>"
        for name in FIGURES
    )
    title = f"neuronmap: {data.model}, partition {stats['id']}"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
        f"<h2>Partition</h2>{_table(['statistic', 'value'], [[k, stats.get(k)] for k in _STAT_KEYS])}\n"
        f"<h2>Modules</h2><p>Cut from the {html.escape(graph)}. Sum of the clusters' n-cut terms: {total:.6g} "
        f"(stored n-cut: {_fmt(stats.get('ncut'))}).</p>"
        f"{_table(_MODULE_COLUMNS, module_rows)}\n"
        f"<h2>Figures</h2>{figures}\n{render_assessments(data)}</body></html>\n"
    )


def write_report(store: Store, model: str, partition_id: str, out_dir: str | Path, *, edges: str = WEIGHT) -> Path:
    """Write ``report.html`` (self-contained) and its PNG figures into ``out_dir``.

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
    Path
        The ``report.html`` written.

    Raises
    ------
    ModelNotFoundError, ModelNotReadyError, PartitionNotFoundError
        As :func:`neuronmap.service.library.resolve_partition` and ``pull_subgraph`` raise them.
    """
    data = read_report_data(store, model, partition_id, edges=edges)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = {"adjacency": plot_adjacency, "span": plot_span, "null": plot_null, "flow": plot_flow}
    images = {name: _png(plots[name](data), out / f"{name}.png") for name in FIGURES}
    page = out / "report.html"
    page.write_text(render_html(data, images), encoding="utf-8")
    return page
