"""The token tables of a transformer partition's page (and of ``neuronmap report``): per sub-cluster, the tokens its
neurons write (``coherence_logits``), read (``coherence_inputs``) and peak on (``coherence_examples``), and the
windows around its top contexts, under its ablation's Δ loss (methods.md §11)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from neuronmap.cypher import Store
from neuronmap.service.http import figures
from neuronmap.service.http.markup import esc, table
from neuronmap.service.store.assessments import latest_assessment

METHODS = {  # what each coherence method's top tokens are, in the order shown
    "coherence_logits": "writes (output tokens, W_out·γ·W_U)",
    "coherence_inputs": "reads (input tokens, W_E·γ·W_in)",
    "coherence_examples": "peaks on (data-set examples)",
}
MAX_MODULES, TOKENS, WINDOWS = 64, 12, 5


def _tokens(values: Sequence[Any]) -> str:
    return " ".join(f"<code>{esc(v)}</code>" for v in values[:TOKENS]) or "—"


def _window(text: Any) -> str:
    """A window with its peak token (in [brackets]) in bold."""
    shown = esc(text)
    start, end = shown.find("["), shown.rfind("]")
    if 0 <= start < end:
        shown = f"{shown[:start]}<b>{shown[start : end + 1]}</b>{shown[end + 1 :]}"
    return f"<code>{shown}</code>"


def _heading(key: tuple[str, int], size: Any, scored: dict[str, Any] | None) -> str:
    layer, cluster = key
    text = f"module {cluster} · {esc(layer)} ({esc(size)} neurons"
    if scored:
        text += (
            f"; ablation Δ loss {figures._fmt(scored.get('delta_loss'))} nats, "
            f"p_adjusted {figures._fmt(scored.get('p_adjusted'))}, {esc(scored.get('category'))}"
        )
    return f"<h3>{text})</h3>"


def _module_table(runs: dict[str, dict[str, Any]]) -> str:
    rows: list[dict[str, Any]] = []
    for method, label in METHODS.items():
        stats = runs.get(method)
        if stats is not None:
            rows.append(
                {
                    "what": label,
                    "p_adjusted": stats.get("p_adjusted"),
                    "tokens__html": _tokens(stats.get("top_tokens") or []),
                }
            )
    windows = (runs.get("coherence_examples") or {}).get("windows") or []
    rows += [{"what": "example window", "tokens__html": _window(w)} for w in windows[:WINDOWS]]
    return table(rows, ["what", "p_adjusted", "tokens"])


def token_tables(store: Store, partition: str) -> list[str]:
    """The section's HTML parts: nothing unless the partition has a transformer coherence run."""
    found = {m: latest_assessment(store, partition, m) for m in METHODS}
    runs = {m: rows for m, f in found.items() if f and f[0].get("kind") == "transformer" for rows in (f[1],)}
    if not runs:
        return []
    importance = latest_assessment(store, partition, "importance")
    scored = (
        {(str(r.get("layer_name")), int(r["cluster"])): r.get("stats") or {} for r in importance[1]}
        if importance and importance[0].get("kind") == "transformer"
        else {}
    )
    modules: dict[tuple[str, int], dict[str, Any]] = {}
    sizes: dict[tuple[str, int], Any] = {}
    layer_index: dict[tuple[str, int], int] = {}
    for method, rows in runs.items():
        for row in rows:
            key = (str(row.get("layer_name")), int(row["cluster"]))
            modules.setdefault(key, {})[method] = row.get("stats") or {}
            sizes[key] = row.get("size")
            layer_index[key] = int(row.get("layer") or 0)
    order = sorted(modules, key=lambda k: (layer_index[k], k[1]))
    parts = [
        "<h2 id='tokens'>tokens per module</h2>",
        "<p class='note'>What each sub-cluster (a cluster's MLP neurons in one block) writes to the logits, reads from "
        "the embedding, and peaks on in text, from the newest coherence runs; the windows show its top contexts "
        "with the peak token in [brackets].</p>",
    ]
    for key in order[:MAX_MODULES]:
        parts += [_heading(key, sizes[key], scored.get(key)), _module_table(modules[key])]
    if len(order) > MAX_MODULES:
        parts.append(f"<p class='note'>{len(order) - MAX_MODULES} more modules: <code>neuronmap coherence</code>.</p>")
    return parts
