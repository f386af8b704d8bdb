"""The explorer: server-rendered pages over the store, with Plotly figures whose JavaScript comes from the plotly
package (``/static/plotly.min.js``), so nothing is fetched from the internet.

Pages: the store (``/``), a model (``/models/NAME``: the architecture diagram with module-flow ribbons), a
partition (``/partitions/ID``: verdict, null, spectrum, span, sorted adjacency, importance), two partitions side by
side (``/compare``), the named queries as forms (``/queries``) and the job queue (``/jobs``).
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from neuronmap.cypher import Store
from neuronmap.errors import NeuronmapError
from neuronmap.service.http import assets, figures
from neuronmap.service.http.cache import MODEL_PAGE, PartitionCache
from neuronmap.service.http.markup import esc, link, plot, plotly_js, shell, table
from neuronmap.service.http.partition import COHERENCE, render_partition
from neuronmap.service.http.responses import one_line, status_of
from neuronmap.service.store import admin, explorer
from neuronmap.service.store import jobs as job_store
from neuronmap.service.store.assessments import latest_assessment
from neuronmap.service.store.library import LATEST, WEIGHT, library_queries, library_query, run_library_query


def page(render: Callable[..., str]) -> Callable[..., Response]:
    """A page handler whose NeuronmapError becomes the page's one line, with the status the API would give."""

    @functools.wraps(render)
    def handler(*args: Any, **kwargs: Any) -> Response:
        try:
            return HTMLResponse(render(*args, **kwargs))
        except NeuronmapError as error:
            body = f"<p class='error'>{esc(one_line(str(error)))}</p><p><a href='/'>Back to the store</a></p>"
            return HTMLResponse(shell("Not available", body), status_code=status_of(error))

    return handler


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


# ---------------------------------------------------------------------------------------------- store


def render_store(store: Store) -> str:
    models = explorer.store_overview(store)
    for row in models:
        row["name__html"] = link(f"/models/{row['name']}", row["name"])
    columns = ["name", "status", "family", "n_layers", "n_neurons", "n_edges", "n_partitions", "source", "created_at"]
    ready = [row["name"] for row in models if row["status"] == "ready"]
    compare = run_library_query(store, "compare_models", models=ready) if ready else []
    compare = [
        {
            **row,
            "partition__html": link(f"/partitions/{row['partition']}", row["partition"]) if row["partition"] else "",
        }
        for row in compare
    ]
    body = (
        f"<p>{len(models)} model(s). Click a name for its modules; click a column head to sort.</p>"
        + table(models, columns, sortable=True, id="models")
        + "<h2>compare-models: the clusterability of each model's newest partition</h2>"
        + "<p class='note'>Lower n-cut than the shuffled networks (z below 0, small p_value) = more clusterable.</p>"
        + table(compare, library_query("compare_models").columns, sortable=True, id="compare-models")
    )
    return shell("The store", body)


# ---------------------------------------------------------------------------------------------- model


def _coherence_notes(store: Store, partition: str) -> dict[int, str]:
    notes: dict[int, list[str]] = {}
    for method in COHERENCE:
        found = latest_assessment(store, partition, method)
        for row in found[1] if found else []:
            p = (row.get("stats") or {}).get("p_adjusted", (row.get("stats") or {}).get("p_value"))
            text = f"{method.removeprefix('coherence_')} {row.get('layer_name')} p={figures._fmt(p)}"
            notes.setdefault(int(row["cluster"]), []).append(text)
    return {cluster: "; ".join(texts[:4]) for cluster, texts in notes.items()}


def _partition_picker(model: str, partitions: Sequence[dict[str, Any]], chosen: str) -> str:
    options = "".join(
        f"<option value='{esc(row['id'])}'{' selected' if row['id'] == chosen else ''}>"
        f"{esc(row['id'])} (k={row['k']}, {esc(row['edges'])})</option>"
        for row in partitions
    )
    return (
        f"<form method='get' action='/models/{esc(urllib.parse.quote(model))}'>partition "
        f"<select name='partition' onchange='this.form.submit()'>{options}</select></form>"
    )


def render_model(
    store: Store, model: str, partition: str = LATEST, edges: str = WEIGHT, cache: PartitionCache | None = None
) -> str:
    partitions = admin.list_partitions(store, model)  # ModelNotFoundError
    layers = admin.model_layers(store, model)
    if not partitions:
        figure = figures.model_diagram(layers, [], [], [])
        body = "<p>No partition yet: <code>neuronmap cluster " + esc(model) + " --k 8</code> makes one.</p>"
        return shell(
            f"Model {model}", body + plot(figure, "diagram") + table(layers, ["index", "name", "kind", "size"])
        )
    from neuronmap.service.store.library import resolve_partition

    cache = cache or PartitionCache()
    partition_id = resolve_partition(store, model, partition, edges=edges)
    (stats, *_), span, cohesion, flow = cache.many(store, partition_id, MODEL_PAGE)
    importance = latest_assessment(store, partition_id, "importance")
    weight = "|w|" if (stats.get("edges") or WEIGHT) == WEIGHT else "r²"
    figure = figures.model_diagram(
        layers, span, flow, cohesion, importance[1] if importance else (), _coherence_notes(store, partition_id), weight
    )
    body = (
        _partition_picker(model, partitions, partition_id)
        + f"<p>{link(f'/partitions/{partition_id}', 'the partition page')} · "
        + link("/compare", "compare with another partition", model=model, a=partition_id)
        + f" · k={stats['k']}, n-cut {figures._fmt(stats['ncut'])}. Hover a module for its numbers; click it to list "
        "its members and core neurons.</p>"
        + f"<div class='module-plot' data-model='{esc(model)}' data-partition='{esc(partition_id)}'>"
        + plot(figure, "diagram")
        + "</div><h2>module details</h2><div id='details'>Click a module in the diagram.</div>"
        + "<h2>layers</h2>"
        + table(layers, ["index", "name", "kind", "role", "size"])
        + "<h2>partitions</h2>"
        + table(
            [{**row, "id__html": link(f"/partitions/{row['id']}", row["id"])} for row in partitions],
            ["id", "k", "edges", "layers", "ncut", "z", "p_value", "created_at"],
            sortable=True,
        )
    )
    return shell(f"Model {model}", body)


# ---------------------------------------------------------------------------------------------- compare


def _options(rows: Sequence[dict[str, Any]], chosen: str | None) -> str:
    return "".join(
        f"<option value='{esc(row['id'])}'{' selected' if row['id'] == chosen else ''}>{esc(row['id'])} "
        f"(k={row['k']})</option>"
        for row in rows
    )


def _compare_form(store: Store, model: str | None, model_b: str | None, a: str | None, b: str | None) -> str:
    names = [row["name"] for row in admin.list_models(store)]
    model_options = "".join(f"<option{' selected' if n == model else ''}>{esc(n)}</option>" for n in names)
    other_options = "<option value=''>(the same model)</option>" + "".join(
        f"<option{' selected' if n == model_b else ''}>{esc(n)}</option>" for n in names
    )
    own = admin.list_partitions(store, model) if model else []
    other = admin.list_partitions(store, model_b) if model_b else own
    return (
        "<form method='get' action='/compare' class='params'>"
        f"<label>model <select name='model' onchange='this.form.submit()'>{model_options}</select></label>"
        f"<label>partition a <select name='a'>{_options(own, a)}</select></label>"
        f"<label>model b <select name='model_b' onchange='this.form.submit()'>{other_options}</select></label>"
        f"<label>partition b <select name='b'>{_options(other, b)}</select></label>"
        "<button type='submit'>compare</button></form>"
    )


def render_compare(
    store: Store, model: str | None = None, a: str | None = None, b: str | None = None, model_b: str | None = None
) -> str:
    from neuronmap.service.store.compare import compare_partitions

    if model is None:
        ready = [row["name"] for row in admin.list_models(store) if row["status"] == "ready"]
        model = ready[0] if ready else None
    form = _compare_form(store, model, model_b, a, b)
    if not (model and a and b):
        return shell("Compare two partitions", form + "<p>Choose two partitions.</p>")
    if model_b and model_b != model:
        result = explorer.compare_checkpoints(store, model, a, model_b, b)
    else:
        result = compare_partitions(store, a, b, model=model)
    other = model_b or model
    scores = (
        f"<p class='verdict'>ARI <b id='ari' data-value='{result.ari!r}'>{result.ari:.4f}</b> · "
        f"NMI <b id='nmi' data-value='{result.nmi!r}'>{result.nmi:.4f}</b> over {result.n_common:,} neurons in both "
        "(1: the same modules up to renumbering; about 0: unrelated).</p>"
    )
    heat = figures.contingency_heatmap(
        result.table, result.clusters_a.tolist(), result.clusters_b.tolist(), result.partition_a, result.partition_b
    )
    layers = admin.model_layers(store, model)
    spans = [
        plot(
            figures.span_heatmap(layers, run_library_query(store, "module_span", partition=p), f"{p}: span"),
            f"span-{i}",
        )
        for i, p in enumerate((result.partition_a, result.partition_b))
    ]
    body = form + scores + plot(heat, "contingency") + "<div class='grid'>" + "".join(spans) + "</div>"
    return shell(f"Compare {model} / {other}", body)


# ---------------------------------------------------------------------------------------------- queries, jobs


def render_queries() -> str:
    rows = [
        {
            "query__html": link(f"/queries/{q.name.replace('_', '-')}", q.name.replace("_", "-")),
            "summary": q.summary,
            "parameters": ", ".join(p.name for p in q.params),
            "columns": ", ".join(q.columns),
        }
        for q in library_queries()
    ]
    body = "<p>Each named query as a form; its rows as a table, CSV or JSON.</p>"
    return shell("Named queries", body + table(rows, ["query", "summary", "parameters", "columns"]))


def render_query(store: Store, name: str, given: dict[str, str]) -> str:
    from neuronmap.service.http.api import library_params

    described = library_query(name)  # UnknownQueryError: "did you mean"
    spelled = described.name.replace("_", "-")
    fields = "".join(
        f"<label title='{esc(p.doc)}'>{esc(p.name)} <input name='{esc(p.name)}' "
        f"value='{esc(given.get(p.name, '' if p.default is None else p.default))}'"
        f"{' required' if not p.has_default else ''}></label>"
        for p in described.params
    )
    form = (
        f"<p>{esc(described.description)}</p><form method='get' class='params' id='query-form'>{fields}"
        "<button type='submit'>run</button></form>"
    )
    if not given and any(not p.has_default for p in described.params):
        return shell(f"Query {spelled}", form)
    values = {key: value for key, value in given.items() if value != ""}
    try:
        rows = run_library_query(store, name, **library_params(name, values))
    except NeuronmapError as error:
        return shell(f"Query {spelled}", form + f"<p class='error' id='query-error'>{esc(one_line(str(error)))}</p>")
    query = urllib.parse.urlencode(values)
    downloads = (
        f"<p>{len(rows)} row(s) · <a id='csv' href='/api/query/{spelled}?{esc(query)}&amp;format=csv'>CSV</a> · "
        f"<a id='json' href='/api/query/{spelled}?{esc(query)}'>JSON</a></p>"
    )
    return shell(f"Query {spelled}", form + downloads + table(rows, described.columns, sortable=True, id="rows"))


def render_jobs(store: Store) -> str:
    rows = job_store.list_jobs(store, 100)
    columns = list(rows.columns) or ["id", "model", "status", "partition", "error", "attempts", "created_at"]
    body = (
        "<p>The queue, newest first; it refreshes every 2 s (last: <span id='jobs-updated'>now</span>). "
        "<code>POST /api/jobs</code> queues one (with the token).</p>"
    )
    return shell("Jobs", body + table(rows, columns, id="jobs-table"))


def build_router() -> APIRouter:
    """The explorer's pages and its two scripts."""
    router = APIRouter(include_in_schema=False)

    @router.get("/static/plotly.min.js")
    def plotly_script() -> Response:
        return Response(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @router.get("/static/explorer.js")
    def explorer_script() -> Response:
        return Response(assets.JS, media_type="text/javascript")

    @router.get("/")
    @page
    def store_page(request: Request) -> str:
        return render_store(store_of(request))

    @router.get("/models/{model}")
    @page
    def model_page(request: Request, model: str, partition: str = LATEST, edges: str = WEIGHT) -> str:
        return render_model(store_of(request), model, partition, edges, request.app.state.cache)

    @router.get("/partitions/{partition:path}")
    @page
    def partition_page(request: Request, partition: str) -> str:
        return render_partition(store_of(request), partition, cache=request.app.state.cache)

    @router.get("/compare")
    @page
    def compare_page(
        request: Request,
        model: str | None = None,
        a: str | None = None,
        b: str | None = None,
        model_b: str | None = None,
    ) -> str:
        return render_compare(store_of(request), model, a, b, model_b or None)

    @router.get("/queries")
    @page
    def queries_page() -> str:
        return render_queries()

    @router.get("/queries/{name}")
    @page
    def query_page(request: Request, name: str) -> str:
        return render_query(store_of(request), name, dict(request.query_params))

    @router.get("/jobs")
    @page
    def jobs_page(request: Request) -> str:
        return render_jobs(store_of(request))

    return router
