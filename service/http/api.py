"""The JSON API: models, layers, partitions, clusters, assessments, jobs, and every library query by name.

Everything here only reads, in read transactions (each named query's header says ``mode: read``), except
``POST /api/jobs``, which queues a clustering job and needs the token (see :mod:`.app`). Partition parameters take
an id or ``latest``, as on the command line.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from neuronmap.cypher import Store
from neuronmap.service.http.cache import PartitionCache
from neuronmap.service.http.responses import json_rows, plain, rows_response
from neuronmap.service.store import admin, explorer
from neuronmap.service.store import jobs as job_store
from neuronmap.service.store.assessments import list_assessments, read_assessment
from neuronmap.service.store.compare import compare_partitions
from neuronmap.service.store.library import (
    LATEST,
    WEIGHT,
    library_queries,
    library_query,
    resolve_partition,
    run_library_query,
)
from neuronmap.service.store.writeback import read_labels

Format = Literal["json", "csv"]
_TEXT_PARAMS = ("model", "layer", "models", "edges")  # taken as typed, as the CLI does; resolved by the library
RESERVED = ("format",)  # query-string keys that are not a library query's parameters


class JobRequest(BaseModel):
    """A clustering job, with the options of ``neuronmap jobs add``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    k: int = Field(default=12, ge=2, le=10_000)
    shuffles: int = Field(default=0, ge=0, le=100_000)
    layers: str | None = None
    edges: str = WEIGHT
    seed: int = Field(default=0, ge=0, le=2**32 - 1)


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def cache_of(request: Request) -> PartitionCache:
    cache: PartitionCache = request.app.state.cache
    return cache


StoreDep = Annotated[Store, Depends(store_of)]
CacheDep = Annotated[PartitionCache, Depends(cache_of)]


def library_params(name: str, raw: dict[str, str]) -> dict[str, Any]:
    """Query-string values cast by the ``.cypher`` header's types and bounds (LibraryParam.cast), as ``-p`` does."""
    described = library_query(name)  # UnknownQueryError ("did you mean") for a wrong name
    params: dict[str, Any] = {}
    for key, text in raw.items():
        if key in RESERVED:
            continue
        param = described.param(key.replace("-", "_"))  # an unknown name fails, listing the known ones
        keep = param.name.startswith("partition") or param.name in _TEXT_PARAMS
        params[param.name] = text if keep else param.cast(text)
    return params


def build_router(require_write: Any) -> APIRouter:
    """The ``/api`` routes; ``require_write`` is the dependency that guards the one writing endpoint."""
    api = APIRouter(prefix="/api")

    @api.get("/models", summary="Every model: status, size, family and partitions")
    def models(store: StoreDep, format: Format = "json") -> Response:
        rows = explorer.store_overview(store)
        columns = ["name", "status", "family", "n_layers", "n_neurons", "n_edges", "n_partitions", "arch", "source"]
        return rows_response(rows, [*columns, "created_at"], format, "models")

    @api.get("/models/{model}", summary="One model with its layers and partitions")
    def model(model: str, store: StoreDep) -> JSONResponse:
        partitions = admin.list_partitions(store, model)  # ModelNotFoundError → 404
        found = [row for row in explorer.store_overview(store) if row["name"] == model]
        body = {**found[0], "layers": admin.model_layers(store, model), "partitions": partitions}
        return JSONResponse(plain(body))

    @api.get("/models/{model}/layers", summary="A model's layers in order")
    def layers(model: str, store: StoreDep, format: Format = "json") -> Response:
        admin.require_model(store, model)
        rows = admin.model_layers(store, model)
        return rows_response(rows, ["index", "name", "kind", "role", "size", "shape"], format, "layers")

    @api.get("/models/{model}/partitions", summary="A model's partitions, newest first")
    def partitions(model: str, store: StoreDep, format: Format = "json") -> Response:
        rows = admin.list_partitions(store, model)
        columns = ["id", "k", "edges", "layers", "seed", "ncut", "n_null", "null_mean", "z", "p_value", "created_at"]
        return rows_response(rows, columns, format, "partitions")

    @api.get("/partitions/{partition:path}", summary="One partition's settings and statistics")
    def partition(partition: str, store: StoreDep) -> JSONResponse:
        stats = dict(run_library_query(store, "partition_stats", partition=partition)[0])  # unknown id → 404
        stats["eigenvalues"] = explorer.partition_spectrum(store, partition)
        return JSONResponse(plain(stats))

    @api.get("/models/{model}/clusters", summary="The modules of a partition: span per layer and cohesion")
    def clusters(
        model: str,
        store: StoreDep,
        cache: CacheDep,
        partition: str = LATEST,
        edges: str = WEIGHT,
        format: Format = "json",
    ) -> Response:
        partition_id = resolve_partition(store, model, partition, edges=edges)
        span, cohesion_rows = cache.many(store, partition_id, ("module_span", "module_cohesion"))
        cohesion = {row["cluster"]: row for row in cohesion_rows}
        rows = []
        for row in span:
            more = cohesion.get(row["cluster"], {})
            rows.append({"partition": partition_id, **row, **{k: more.get(k) for k in ("within", "cut", "ncut_term")}})
        columns = ["partition", "cluster", "size", "first_layer", "last_layer", "n_layers", "thickest_layer"]
        return rows_response(rows, [*columns, "per_layer", "within", "cut", "ncut_term"], format, "clusters")

    @api.get("/models/{model}/clusters/{cluster}", summary="One module: members per layer, core neurons, their edges")
    def cluster(
        model: str, cluster: int, store: StoreDep, cache: CacheDep, partition: str = LATEST, edges: str = WEIGHT
    ) -> JSONResponse:
        partition_id = resolve_partition(store, model, partition, edges=edges)
        n_neurons = sum(int(layer["size"]) for layer in admin.model_layers(store, model))
        labels = cache.get(("labels", partition_id), lambda: read_labels(store, partition_id, n_neurons))
        core = cache.rows(store, "module_core", partition_id, limit=5)
        detail = explorer.module_detail(store, model, partition_id, cluster, core_rows=core, labels=labels)
        return JSONResponse(plain(detail))

    @api.get("/models/{model}/assessments", summary="The assessments of a partition, newest first")
    def assessments(model: str, store: StoreDep, partition: str = LATEST, edges: str = WEIGHT) -> JSONResponse:
        partition_id = resolve_partition(store, model, partition, edges=edges)
        return JSONResponse(json_rows(list_assessments(store, partition_id)))

    @api.get("/assessments/{assessment:path}", summary="One assessment: its settings and per-sub-cluster scores")
    def assessment(assessment: str, store: StoreDep) -> JSONResponse:
        summary, rows = read_assessment(store, assessment)  # AssessmentNotFoundError → 404
        return JSONResponse(plain({"id": assessment, "summary": summary, "subclusters": rows}))

    @api.get("/compare", summary="Two partitions of one model: contingency table, ARI and NMI")
    def compare(
        store: StoreDep,
        a: str = Query(LATEST, description="a partition id, or latest (with model)"),
        b: str = Query(LATEST, description="a partition id, or latest (with model)"),
        model: str | None = None,
        edges: str = WEIGHT,
    ) -> JSONResponse:
        result = compare_partitions(store, a, b, model=model, edges=edges)
        body = {
            "partition_a": result.partition_a,
            "partition_b": result.partition_b,
            "ari": result.ari,
            "nmi": result.nmi,
            "n_common": result.n_common,
            "clusters_a": result.clusters_a,
            "clusters_b": result.clusters_b,
            "table": result.table,
        }
        return JSONResponse(plain(body))

    @api.get("/jobs", summary="The job queue, newest first")
    def jobs(store: StoreDep, limit: int = Query(50, ge=1, le=10_000), format: Format = "json") -> Response:
        rows = job_store.list_jobs(store, limit)
        columns = rows.columns or ("id", "model", "status", "partition", "error", "attempts", "created_at")
        return rows_response(rows, columns, format, "jobs")

    @api.post(
        "/jobs",
        status_code=201,
        summary="Queue a clustering job (needs the token)",
        dependencies=[Depends(require_write)],
    )
    def add_job(job: JobRequest, store: StoreDep) -> JSONResponse:
        from neuronmap.service.runs import ClusterConfig  # torch: only when a job is queued

        admin.require_model(store, job.model)
        config = ClusterConfig(
            n_clusters=job.k, n_shuffles=job.shuffles, layers=job.layers, edges=job.edges, random_state=job.seed
        )
        job_id = job_store.enqueue(store, job.model, config.model_dump_json())
        return JSONResponse({"id": job_id, "model": job.model, "status": "queued"}, status_code=201)

    @api.get("/query", summary="The named library queries: parameters and columns")
    def queries() -> JSONResponse:
        return JSONResponse(
            [
                {
                    "name": q.name.replace("_", "-"),
                    "summary": q.summary,
                    "params": [
                        {"name": p.name, "type": p.type, "default": plain(p.default), "required": not p.has_default}
                        for p in q.params
                    ],
                    "columns": list(q.columns),
                }
                for q in library_queries()
            ]
        )

    @api.get(
        "/query/{name}",
        summary="Run a named library query; its parameters go in the query string, checked against its header",
    )
    def run_query(name: str, request: Request, store: StoreDep, format: Format = "json") -> Response:
        raw = dict(request.query_params)
        params = library_params(name, raw)
        described = library_query(name)
        rows = run_library_query(store, name, **params)
        return rows_response(rows, described.columns, format, described.name.replace("_", "-"))

    return api
