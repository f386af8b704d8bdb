"""The explorer's Plotly figures, built from rows the store gave (no database here).

Every figure is returned as a ``plotly.graph_objects.Figure``; :mod:`.pages` places it with ``to_html``. Modules
keep one colour everywhere (:func:`.assets.palette`), with no repeats however many there are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from neuronmap.service.http.assets import UNCLUSTERED, colour, rgba

BAR_WIDTH = 0.34
MIN_RIBBON_SHARE = 0.02  # ribbons carrying less than this share of both ends' weight are not drawn
MAX_RIBBONS = 600
_LAYOUT: dict[str, Any] = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 50, "b": 60}}


def layer_tick(layer: dict[str, Any]) -> str:
    return f"<b>{layer['name']}</b><br>{layer['kind']} · {layer['size']:,}"


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _module_notes(
    cluster: int,
    cohesion: dict[int, dict[str, Any]],
    importance: dict[tuple[int, str], dict[str, Any]],
    coherence: dict[int, str],
    layer: str,
) -> list[str]:
    row = cohesion.get(cluster, {})
    within, cut = row.get("within") or 0.0, row.get("cut") or 0.0
    share = within / (within + cut) if within + cut > 0 else float("nan")
    scored = importance.get((cluster, layer))
    lesion = (
        f"Δacc {_fmt(scored.get('delta_accuracy'))} vs null {_fmt(scored.get('null_delta_mean'))}, "
        f"p_adj {_fmt(scored.get('p_adjusted'))} ({scored.get('category', '')})"
        if scored
        else "not assessed here"
    )
    return [
        f"cohesion {_fmt(share)} (within {_fmt(within)}, cut {_fmt(cut)})",
        f"n-cut term {_fmt(row.get('ncut_term'))}",
        f"importance: {lesion}",
        f"coherence: {coherence.get(cluster, 'not assessed')}",
    ]


def _segments(layers: Sequence[dict[str, Any]], span: Sequence[dict[str, Any]]) -> dict[tuple[int, int], tuple]:
    """(layer position, cluster) → (bottom, top) of its bar segment, as shares of the layer (clusters stacked)."""
    bounds: dict[tuple[int, int], tuple[float, float]] = {}
    for i, layer in enumerate(layers):
        bottom = 0.0
        for row in span:
            height = row["per_layer"][i] / max(int(layer["size"]), 1)
            bounds[(i, row["cluster"])] = (bottom, bottom + height)
            bottom += height
    return bounds


def _ribbon(x0: float, x1: float, a: tuple[float, float], b: tuple[float, float]) -> str:
    middle = (x0 + x1) / 2
    return (
        f"M {x0},{a[0]} C {middle},{a[0]} {middle},{b[0]} {x1},{b[0]} L {x1},{b[1]} "
        f"C {middle},{b[1]} {middle},{a[1]} {x0},{a[1]} Z"
    )


def _ribbons(
    layers: Sequence[dict[str, Any]], span: Sequence[dict[str, Any]], flow: Sequence[dict[str, Any]], k: int
) -> list[dict[str, Any]]:
    """Module-flow ribbons as filled paths: each leaves its source segment with a width proportional to its share of
    the weight that segment sends to that layer (share_out), and reaches its target segment in proportion to its
    share of what that segment receives (share_in)."""
    position = {layer["name"]: i for i, layer in enumerate(layers)}
    bounds = _segments(layers, span)
    kept = [r for r in flow if max(r["share_out"] or 0.0, r["share_in"] or 0.0) >= MIN_RIBBON_SHARE]
    kept = sorted(kept, key=lambda r: -(r["weight"] or 0.0))[:MAX_RIBBONS]
    used_out: dict[tuple, float] = {}
    used_in: dict[tuple, float] = {}
    shapes = []
    for row in sorted(kept, key=lambda r: (r["src_layer"], r["dst_layer"], r["src_cluster"], r["dst_cluster"])):
        i, j = position.get(row["src_layer"]), position.get(row["dst_layer"])
        if i is None or j is None or i == j:
            continue
        src, dst = bounds[(i, row["src_cluster"])], bounds[(j, row["dst_cluster"])]
        key_out, key_in = (i, j, row["src_cluster"]), (i, j, row["dst_cluster"])
        start = src[0] + used_out.get(key_out, 0.0)
        width_out = (src[1] - src[0]) * (row["share_out"] or 0.0)
        end = dst[0] + used_in.get(key_in, 0.0)
        width_in = (dst[1] - dst[0]) * (row["share_in"] or 0.0)
        used_out[key_out] = used_out.get(key_out, 0.0) + width_out
        used_in[key_in] = used_in.get(key_in, 0.0) + width_in
        alpha = 0.55 if row["src_cluster"] == row["dst_cluster"] else 0.16
        x0, x1 = (i + BAR_WIDTH / 2, j - BAR_WIDTH / 2) if i < j else (i - BAR_WIDTH / 2, j + BAR_WIDTH / 2)
        shapes.append(
            {
                "type": "path",
                "path": _ribbon(x0, x1, (start, start + width_out), (end, end + width_in)),
                "fillcolor": rgba(colour(row["src_cluster"], k), alpha),
                "line": {"width": 0},
                "layer": "below",
            }
        )
    return shapes


def model_diagram(
    layers: Sequence[dict[str, Any]],
    span: Sequence[dict[str, Any]],
    flow: Sequence[dict[str, Any]],
    cohesion: Sequence[dict[str, Any]],
    importance: Sequence[dict[str, Any]] = (),
    coherence: dict[int, str] | None = None,
    weight_name: str = "|w|",
) -> go.Figure:
    """The architecture: one column per layer (name, kind, size), its neurons stacked by module (as shares of the
    layer), with module-flow ribbons between the columns; hover a segment for the module's numbers, click it for
    its members (the page's script asks the API)."""
    span = sorted(span, key=lambda row: row["cluster"])
    k = max([row["cluster"] + 1 for row in span] or [0])
    by_cluster = {row["cluster"]: row for row in cohesion}
    scored = {(int(row["cluster"]), str(row.get("layer_name"))): row.get("stats", {}) for row in importance}
    x = list(range(len(layers)))
    figure = go.Figure()
    for row in span:
        c = row["cluster"]
        per_layer = ", ".join(f"{layer['name']}: {n}" for layer, n in zip(layers, row["per_layer"]) if n)
        custom = []
        for layer, n in zip(layers, row["per_layer"]):
            notes = _module_notes(c, by_cluster, scored, coherence or {}, str(layer["name"]))
            custom.append([c, n, layer["name"], row["size"], per_layer, *notes])
        figure.add_bar(
            x=x,
            y=[n / max(int(layer["size"]), 1) for layer, n in zip(layers, row["per_layer"])],
            width=BAR_WIDTH,
            name=f"module {c} ({row['size']:,})",
            marker={"color": colour(c, k), "line": {"width": 0.5, "color": "#fff"}},
            customdata=custom,
            hovertemplate=(
                "<b>module %{customdata[0]}</b> in %{customdata[2]}: %{customdata[1]} neurons<br>"
                "size %{customdata[3]} · per layer: %{customdata[4]}<br>%{customdata[5]}<br>%{customdata[6]}<br>"
                "%{customdata[7]}<br>%{customdata[8]}<br><i>click: members and core neurons</i><extra></extra>"
            ),
        )
    outside = [
        1 - sum(row["per_layer"][i] for row in span) / max(int(layer["size"]), 1) for i, layer in enumerate(layers)
    ]
    if any(share > 1e-9 for share in outside):
        figure.add_bar(
            x=x,
            y=outside,
            width=BAR_WIDTH,
            name="not in the partition",
            marker={"color": UNCLUSTERED},
            customdata=[[-1] for _ in x],
            hovertemplate="outside the partition (isolated or out of its layers)<extra></extra>",
        )
    figure.update_layout(
        **_LAYOUT,
        barmode="stack",
        height=560,
        shapes=_ribbons(layers, span, flow, k),
        title=f"Layers and modules; ribbons: module flow (width ∝ share of {weight_name})",
        xaxis={"tickmode": "array", "tickvals": x, "ticktext": [layer_tick(layer) for layer in layers]},
        yaxis={"title": "share of the layer's neurons", "range": [0, 1.02]},
        legend={"title": "modules"},
        hoverlabel={"align": "left"},
    )
    return figure


def null_histogram(stats: dict[str, Any]) -> go.Figure:
    """The n-cut of the shuffled networks, with the partition's own n-cut as a line."""
    figure = go.Figure(go.Histogram(x=stats.get("null_ncuts") or [], name="shuffled networks", marker_color="#778AAE"))
    ncut = stats.get("ncut")
    if ncut is not None:
        figure.add_vline(x=ncut, line={"color": "#FB0D0D", "width": 3}, annotation_text=f"this partition {ncut:.4g}")
    figure.update_layout(
        **_LAYOUT, height=380, title="n-cut against its null", xaxis_title="n-cut", yaxis_title="networks"
    )
    return figure


def eigen_spectrum(eigenvalues: Sequence[float]) -> go.Figure:
    """The smallest Laplacian eigenvalues with the largest gap marked: a k just before the gap is well separated."""
    values = np.asarray(eigenvalues, dtype=float)
    gaps = np.diff(values)
    best = int(np.argmax(gaps)) + 1 if gaps.size else 1
    figure = go.Figure(go.Scatter(x=np.arange(1, values.size + 1), y=values, mode="lines+markers", name="eigenvalue"))
    figure.add_vrect(x0=best + 0.05, x1=best + 0.95, fillcolor="#FB0D0D", opacity=0.15, line_width=0)
    figure.add_annotation(x=best + 0.5, y=float(values.max()), text=f"eigengap after k={best}", showarrow=False)
    figure.update_layout(**_LAYOUT, height=380, title="Laplacian spectrum", xaxis_title="i", yaxis_title="λ_i")
    return figure


def span_heatmap(layers: Sequence[dict[str, Any]], span: Sequence[dict[str, Any]], title: str = "") -> go.Figure:
    """Clusters × layers: how many neurons of each module lie in each layer."""
    span = sorted(span, key=lambda row: row["cluster"])
    z = [row["per_layer"] for row in span]
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(layer["name"]) for layer in layers],
            y=[f"module {row['cluster']}" for row in span],
            colorscale="Blues",
            text=z,
            texttemplate="%{text}",
            hovertemplate="%{y} in layer %{x}: %{z} neurons<extra></extra>",
        )
    )
    figure.update_layout(
        **_LAYOUT, height=max(300, 40 + 22 * len(span)), title=title or "modules × layers", yaxis_autorange="reversed"
    )
    return figure


def sorted_adjacency(
    cells: np.ndarray, step: int, labels_sorted: np.ndarray, layers_sorted: Sequence[str], weight_name: str
) -> go.Figure:
    """The adjacency sorted by (cluster, layer) and averaged into cells; ticks at each module's middle, a line at each
    module's edge, and the layer of every cell in its hover."""
    n = labels_sorted.size
    starts = np.flatnonzero(np.r_[True, labels_sorted[1:] != labels_sorted[:-1]]) if n else np.array([], dtype=int)
    ends = np.r_[starts[1:], n] if n else starts
    tick_at = [((s + e) / 2) / step - 0.5 for s, e in zip(starts, ends)]
    ticks = [f"module {labels_sorted[s]}" for s in starts]
    m = cells.shape[0]
    where = [f"module {labels_sorted[min(i * step, n - 1)]}, {layers_sorted[min(i * step, n - 1)]}" for i in range(m)]
    hover = [[f"{where[i]} → {where[j]}" for j in range(m)] for i in range(m)]
    figure = go.Figure(
        go.Heatmap(
            z=np.sqrt(cells),
            customdata=hover,
            colorscale="Magma",
            reversescale=True,
            colorbar={"title": f"√ mean {weight_name}"},
            hovertemplate="%{customdata}<br>√ mean weight %{z:.3g}<extra></extra>",
        )
    )
    for s in starts[1:]:
        edge = s / step - 0.5
        figure.add_hline(y=edge, line={"color": "#2E91E5", "width": 1})
        figure.add_vline(x=edge, line={"color": "#2E91E5", "width": 1})
    axis = {"tickmode": "array", "tickvals": tick_at, "ticktext": ticks, "showgrid": False}
    figure.update_layout(
        **_LAYOUT,
        height=620,
        width=680,
        title=f"adjacency sorted by module and layer ({step} neuron{'s' if step > 1 else ''} per cell)",
        xaxis=axis,
        yaxis={**axis, "autorange": "reversed", "scaleanchor": "x"},
    )
    return figure


def importance_points(rows: Sequence[dict[str, Any]], alpha: float = 0.05) -> go.Figure:
    """Each sub-cluster's change of accuracy when lesioned (a point) against its random same-size sets (mean ± 2 sd);
    significant ones (BH-adjusted p below alpha) as red stars."""
    names = [f"m{row['cluster']}·{row.get('layer_name')}" for row in rows]
    stats = [row.get("stats") or {} for row in rows]
    null_mean = [s.get("null_delta_mean") for s in stats]
    null_sd = [2 * (s.get("null_delta_sd") or 0.0) for s in stats]
    figure = go.Figure()
    figure.add_scatter(
        x=names,
        y=null_mean,
        mode="markers",
        name="random sets: mean ± 2 sd",
        marker={"color": "#b0b0b0", "size": 14, "symbol": "line-ew-open"},
        error_y={"type": "data", "array": null_sd, "color": "#b0b0b0", "thickness": 6, "width": 0},
    )
    significant = [(s.get("p_adjusted") is not None and s["p_adjusted"] < alpha) for s in stats]
    figure.add_scatter(
        x=names,
        y=[s.get("delta_accuracy") for s in stats],
        mode="markers",
        name="sub-cluster lesioned",
        marker={
            "color": ["#FB0D0D" if sig else "#2E91E5" for sig in significant],
            "size": [14 if sig else 9 for sig in significant],
            "symbol": ["star" if sig else "circle" for sig in significant],
        },
        customdata=[[_fmt(s.get("p_adjusted")), s.get("category", "")] for s in stats],
        hovertemplate="%{x}: Δacc %{y:.4g}<br>p_adj %{customdata[0]} · %{customdata[1]}<extra></extra>",
    )
    figure.update_layout(
        **_LAYOUT, height=420, title="importance: lesion of each sub-cluster vs its null", yaxis_title="Δ accuracy"
    )
    return figure


def class_lesion_heatmap(rows: Sequence[dict[str, Any]], intact: Sequence[float]) -> go.Figure | None:
    """Per class: the recall lost when each sub-cluster is lesioned (None when the rows carry no per-class recall)."""
    z, names = [], []
    for row in rows:
        per_class = (row.get("stats") or {}).get("class_accuracy")
        if per_class and len(per_class) == len(intact):
            z.append([(a - b) if a is not None and b is not None else None for a, b in zip(per_class, intact)])
            names.append(f"m{row['cluster']}·{row.get('layer_name')}")
    if not z:
        return None
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(i) for i in range(len(intact))],
            y=names,
            colorscale="RdBu",
            zmid=0,
            hovertemplate="%{y}, class %{x}: Δ recall %{z:.3g}<extra></extra>",
        )
    )
    figure.update_layout(
        **_LAYOUT, height=max(300, 60 + 18 * len(names)), title="per-class lesion effect", xaxis_title="class"
    )
    return figure


def contingency_heatmap(
    table: np.ndarray, clusters_a: Sequence[int], clusters_b: Sequence[int], a: str, b: str
) -> go.Figure:
    """The neurons shared by each pair of modules of two partitions (−1: outside that partition)."""
    figure = go.Figure(
        go.Heatmap(
            z=table,
            x=[f"b{c}" for c in clusters_b],
            y=[f"a{c}" for c in clusters_a],
            colorscale="Viridis",
            text=table,
            texttemplate="%{text}",
            hovertemplate="%{y} ∩ %{x}: %{z} neurons<extra></extra>",
        )
    )
    figure.update_layout(
        **_LAYOUT,
        height=max(320, 80 + 24 * len(clusters_a)),
        title=f"contingency: {a} (rows) × {b} (columns)",
        yaxis_autorange="reversed",
    )
    return figure


def example_images(groups: Sequence[tuple[str, Sequence[np.ndarray]]]) -> go.Figure:
    """Rows of small grey images: each row one sub-cluster's top data-set inputs, labelled on the left."""
    from plotly.subplots import make_subplots

    cols = max(len(images) for _, images in groups)
    figure = make_subplots(rows=len(groups), cols=cols, horizontal_spacing=0.01, vertical_spacing=0.04)
    for row, (_, images) in enumerate(groups, 1):
        for col, image in enumerate(images, 1):
            figure.add_heatmap(
                z=np.asarray(image)[::-1], colorscale="Greys", showscale=False, row=row, col=col, hoverinfo="skip"
            )
    figure.update_xaxes(visible=False)
    figure.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    for row, (name, _) in enumerate(groups, 1):
        figure.update_yaxes(title_text=name, row=row, col=1)
    figure.update_layout(**_LAYOUT, height=110 * len(groups) + 80, title="coherence: each sub-cluster's top inputs")
    return figure
