"""The partition page: the verdict, the null, the spectrum, the span, the sorted adjacency, and what the partition's
assessments found (importance points, per-class lesions, coherence with example images)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from neuronmap.cypher import Store
from neuronmap.errors import NeuronmapError
from neuronmap.service.http import figures
from neuronmap.service.http.cache import PartitionCache
from neuronmap.service.http.markup import esc, link, plot, shell, table
from neuronmap.service.http.tokens import token_tables
from neuronmap.service.store import admin, explorer
from neuronmap.service.store.assessments import latest_assessment
from neuronmap.service.store.library import WEIGHT, graph_name, library_query, run_library_query

COHERENCE = ("coherence_features", "coherence_examples")


ADJACENCY_CELLS = 300  # the sorted adjacency's cells a side: enough to see blocks, small enough to load fast


def verdict(stats: dict[str, Any], alpha: float = 0.05) -> str:
    """The partition's clusterability in one sentence: its n-cut against the shuffled networks, with the p-value."""
    ncut, n_null, p = stats.get("ncut"), stats.get("n_null") or 0, stats.get("p_value")
    if not n_null or p is None:
        return (
            f"n-cut {figures._fmt(ncut)} with k={stats.get('k')}; no null was computed, so there is no verdict yet "
            f"(<code>neuronmap cluster {esc(stats.get('model'))} --shuffles 100</code> adds one)."
        )
    side = "lower" if ncut is not None and ncut < (stats.get("null_mean") or 0.0) else "not lower"
    meaning = (
        "more clusterable than chance" if p < alpha and side == "lower" else "no more clusterable than its shuffles"
    )
    return (
        f"n-cut {figures._fmt(ncut)} is {side} than the mean of {n_null} shuffled networks "
        f"({figures._fmt(stats.get('null_mean'))} ± {figures._fmt(stats.get('null_sd'))}, "
        f"z = {figures._fmt(stats.get('z'))}, p = {figures._fmt(p)}): {meaning} at α = {alpha}."
    )


def _adjacency_figure(store: Store, stats: dict[str, Any], layers: Sequence[dict[str, Any]]) -> Any:
    """The sorted adjacency of a partition's own graph, averaged into at most ADJACENCY_CELLS cells a side."""
    import numpy as np

    from neuronmap.service.report import aggregate, partition_adjacency, sorted_by_cluster
    from neuronmap.service.store.writeback import read_labels

    n_neurons = int(sum(int(layer["size"]) for layer in layers))
    labels = read_labels(store, str(stats["id"]), n_neurons)
    names = [str(layer["name"]) for layer in layers]
    layer_of = np.repeat(np.arange(len(layers)), [int(layer["size"]) for layer in layers])
    order, _, _ = sorted_by_cluster(labels, layer_of)
    adjacency = partition_adjacency(store, str(stats["model"]), stats, n_neurons)
    cells, step = aggregate(adjacency, order, ADJACENCY_CELLS)
    weight = "|w|" if (stats.get("edges") or WEIGHT) == WEIGHT else "r²"
    return figures.sorted_adjacency(cells, step, labels[order], [names[i] for i in layer_of[order]], weight)


def _assessment_plots(store: Store, partition: str, model: str) -> list[str]:
    importance = latest_assessment(store, partition, "importance")  # never cached: new runs arrive
    if not importance:
        return [f"<p class='note'>Not assessed: <code>neuronmap importance {esc(model)}</code> adds lesions.</p>"]
    parts = [plot(figures.importance_points(importance[1]), "importance")]
    per_class = figures.class_lesion_heatmap(importance[1], importance[0].get("class_accuracy") or [])
    return parts + ([plot(per_class, "lesions")] if per_class else [])


EXAMPLE_ROWS, EXAMPLE_IMAGES = 4, 8  # the most coherent sub-clusters shown as images, and inputs per row


def _images(dataset: str, split: str, rows: Sequence[dict[str, Any]]) -> str:
    """The top inputs of the most coherent sub-clusters as images, when the data set loads (by name, offline) and
    its inputs are images (a square of pixels, or one or three channels)."""
    import math

    from neuronmap.loaders.datasets import load_dataset

    try:
        part: Literal["train", "test", "all"] = split if split in ("train", "test", "all") else "test"  # type: ignore[assignment]
        inputs = load_dataset(dataset).inputs(part)
    except (NeuronmapError, OSError, ValueError):
        return ""
    shape = tuple(inputs.shape[1:])
    side = math.isqrt(int(inputs[0].numel()))
    if not (len(shape) == 3 and shape[0] in (1, 3)) and side * side != int(inputs[0].numel()):
        return ""
    groups = []
    for row in rows[:EXAMPLE_ROWS]:
        top = (row.get("stats") or {}).get("top_inputs") or []
        pictures = []
        for index in top[:EXAMPLE_IMAGES]:
            x = inputs[int(index)]
            pictures.append((x.mean(0) if x.ndim == 3 else x.reshape(side, side)).float().numpy())
        if pictures:
            groups.append((f"m{row['cluster']}·{row.get('layer_name')}", pictures))
    return plot(figures.example_images(groups), "examples") if groups else ""


def _coherence_section(store: Store, partition: str) -> list[str]:
    """Per coherence method, its newest run: the sub-clusters by adjusted p-value, with what they respond to (top
    labels, tokens and windows), and the top inputs as images for an image data set."""
    parts: list[str] = []
    for method in (*COHERENCE, "coherence_logits", "coherence_inputs"):
        found = latest_assessment(store, partition, method)
        if not found:
            continue
        summary, rows = found
        rows = sorted(rows, key=lambda row: (row.get("stats") or {}).get("p_adjusted", 1.0))
        shown = []
        for row in rows:
            stats = row.get("stats") or {}
            shown.append(
                {
                    "module": row["cluster"],
                    "layer": row.get("layer_name"),
                    "size": row.get("size"),
                    "p_adjusted": stats.get("p_adjusted"),
                    "statistic": stats.get("statistic"),
                    "responds to": ", ".join(
                        str(v) for v in (stats.get("top_labels") or stats.get("top_tokens") or [])[:10]
                    ),
                    "windows": " | ".join(str(w) for w in (stats.get("windows") or [])[:3]),
                }
            )
        columns = ["module", "layer", "size", "p_adjusted", "statistic", "responds to", "windows"]
        parts += [f"<h2>{esc(method.replace('_', ' '))}</h2>", table(shown, columns, sortable=True)]
        if method == "coherence_examples" and summary.get("dataset"):
            parts.append(_images(str(summary["dataset"]), str(summary.get("split") or "test"), rows))
    return parts


def _ncut_terms(stats: dict[str, Any], cohesion: Sequence[dict[str, Any]]) -> str:
    """Which graph the partition was cut from, and its clusters' n-cut terms against the stored n-cut (they add up)."""
    weight = "|w|" if (stats.get("edges") or WEIGHT) == WEIGHT else "r²"
    total = sum(float(row["ncut_term"]) for row in cohesion)
    ncut = stats.get("ncut")
    stored = f"{float(ncut):.6g}" if ncut is not None else "—"
    return (
        f"<p id='ncut-terms'>Cut from the {esc(graph_name(stats.get('edges')))} ({weight}). Sum of the clusters' "
        f"n-cut terms: {total:.6g} (stored n-cut: {stored}).</p>"
    )


def render_partition(store: Store, partition: str, *, static: bool = False, cache: PartitionCache | None = None) -> str:
    cache = cache or PartitionCache()
    stats = run_library_query(store, "partition_stats", partition=partition)[0]  # PartitionNotFoundError
    model = str(stats["model"])
    layers = admin.model_layers(store, model)
    span, cohesion = cache.many(store, partition, ("module_span", "module_cohesion"))
    adjacency = cache.get(("adjacency", partition), lambda: plot(_adjacency_figure(store, stats, layers), "adjacency"))
    spectrum = explorer.partition_spectrum(store, partition)
    parts = [
        f"<p class='verdict' id='verdict'>{verdict(stats)}</p>",
        "<p>"
        + (link(f"/models/{model}", f"model {model}", partition=partition) if not static else esc(model))
        + "</p>",
        "<div class='grid'>",
        plot(figures.null_histogram(stats), "null") if stats.get("null_ncuts") else "<p>No null computed.</p>",
        plot(figures.eigen_spectrum(spectrum), "spectrum")
        if spectrum
        else "<p class='note'>No eigenvalues stored on this partition, so no spectrum to choose k by.</p>",
        "</div>",
        plot(figures.span_heatmap(layers, span), "span"),
        adjacency,
        *_assessment_plots(store, partition, model),
        *_coherence_section(store, partition),
        *token_tables(store, partition),
        "<h2>module cohesion</h2>",
        _ncut_terms(stats, cohesion),
        table(cohesion, library_query("module_cohesion").columns, sortable=True),
    ]
    return shell(f"Partition {partition}", "".join(parts), static=static)
