"""The HTTP API against the real Neo4j, in-process (FastAPI's TestClient): every endpoint, JSON and CSV, and errors
as one JSON line with the status that fits."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from neuronmap.cypher import catalog
from neuronmap.service.http import create_app
from neuronmap.service.store.library import run_library_query
from tests.service.conftest import reference_ncut

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def client(store) -> Iterator[TestClient]:
    with TestClient(create_app(store, TOKEN), raise_server_exceptions=False) as client:
        yield client


def one_line_error(response, status: int, *needles: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "status"} and body["status"] == status
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    for needle in needles:
        assert needle in body["error"], body["error"]
    return body["error"]


def test_models_layers_and_partitions(client, library_models):
    a = library_models.a
    models = {row["name"]: row for row in client.get("/api/models").json()}
    assert models[a.name]["family"] == "MLP" and models[a.name]["n_partitions"] == 2
    assert models[a.name]["n_neurons"] == a.graph.n_neurons and models[library_models.unclustered]["n_partitions"] == 0
    table = list(csv.DictReader(io.StringIO(client.get("/api/models", params={"format": "csv"}).text)))
    assert {row["name"] for row in table} >= {a.name, library_models.b.name}
    detail = client.get(f"/api/models/{a.name}").json()
    assert [layer["name"] for layer in detail["layers"]] == a.names
    assert [p["id"] for p in detail["partitions"]] == list(a.partitions)[::-1]  # newest first
    layers = client.get(f"/api/models/{a.name}/layers").json()
    assert [layer["size"] for layer in layers] == [layer.size for layer in a.graph.layers]
    partitions = client.get(f"/api/models/{a.name}/partitions", params={"format": "csv"}).text.splitlines()
    assert partitions[0].startswith("id,k,edges") and len(partitions) == 3
    first = list(a.partitions)[0]  # the id holds a slash: the path takes it whole
    stats = client.get(f"/api/partitions/{first}").json()
    assert stats["id"] == first and stats["k"] == 3 and len(stats["null_ncuts"]) == 40
    assert stats["eigenvalues"] is None  # written by hand, not by a clustering run (test_pipeline checks those)


def test_unknown_things_are_404_with_one_line(client, library_models):
    one_line_error(client.get("/api/models/no-such-model"), 404, "no model 'no-such-model'")
    one_line_error(client.get("/api/models/no-such-model/layers"), 404, "no model")
    one_line_error(client.get("/api/partitions/no/such"), 404, "no partition 'no/such'")
    one_line_error(client.get(f"/api/models/{library_models.unclustered}/clusters"), 404, "no partition")
    one_line_error(client.get(f"/api/models/{library_models.a.name}/clusters/99"), 404, "no cluster 99")
    one_line_error(client.get("/api/assessments/nope/importance-1"), 404)
    one_line_error(client.get("/api/nothing-here"), 404, "/docs")


def test_clusters_and_one_module(client, library_models):
    a = library_models.a
    first, labels = next(iter(a.partitions.items()))
    rows = client.get(f"/api/models/{a.name}/clusters", params={"partition": first}).json()
    assert sorted(row["cluster"] for row in rows) == [0, 1, 2]
    for row in rows:
        in_layers = [int(np.sum(labels[s:e] == row["cluster"])) for s, e in zip(a.graph.offsets, a.graph.offsets[1:])]
        assert row["per_layer"] == in_layers and row["size"] == sum(in_layers)
    assert sum(row["ncut_term"] for row in rows) == pytest.approx(reference_ncut(a.graph, labels), rel=1e-5)
    latest = client.get(f"/api/models/{a.name}/clusters").json()  # latest: the k=4 partition
    assert {row["partition"] for row in latest} == {list(a.partitions)[1]} and len(latest) == 4
    module = client.get(f"/api/models/{a.name}/clusters/1", params={"partition": first}).json()
    assert module["size"] == int(np.sum(labels == 1))
    assert sum(layer["count"] for layer in module["members"]) == module["size"]
    offsets = a.graph.offsets
    expected = [int(u) for u in np.flatnonzero(labels[offsets[1] : offsets[2]] == 1)]
    assert next(m["units"] for m in module["members"] if m["layer"] == a.names[1]) == expected
    assert 1 <= len(module["core"]) <= 5 and all(row["cluster"] == 1 for row in module["core"])
    edges = module["core"][0]["edges"]
    assert edges and {edge["kind"] for edge in edges} <= {"in", "out"} and len(edges) <= 6
    assert [row["within"] for row in module["core"]] == sorted((row["within"] for row in module["core"]), reverse=True)
    assessed = client.get(f"/api/models/{a.name}/assessments", params={"partition": first})
    assert assessed.status_code == 200 and assessed.json() == []


def test_compare_gives_sklearns_ari_and_nmi(client, library_models):
    a = library_models.a
    (first, la), (second, lb) = a.partitions.items()
    body = client.get("/api/compare", params={"a": first, "b": second}).json()
    both = (la >= 0) & (lb >= 0)
    assert body["ari"] == pytest.approx(adjusted_rand_score(la[both], lb[both]), abs=1e-12)
    assert body["nmi"] == pytest.approx(normalized_mutual_info_score(la[both], lb[both]), abs=1e-12)
    assert np.array(body["table"]).sum() == a.graph.n_neurons and body["n_common"] == int(both.sum())
    same = client.get("/api/compare", params={"a": first, "b": first}).json()
    assert same["ari"] == 1.0
    one_line_error(client.get("/api/compare", params={"a": "latest"}), 422, "needs the model")


def test_every_library_query_is_an_endpoint(client, store, library_models):
    a = library_models.a
    listed = client.get("/api/query").json()
    assert {q["name"] for q in listed} == {
        q.name.removeprefix("library.").replace("_", "-")
        for q in catalog.all_queries()
        if q.name.startswith("library.")
    }
    span = client.get("/api/query/module-span", params={"model": a.name, "partition": "latest"})
    assert span.json() == run_library_query(store, "module_span", model=a.name)
    flow = client.get("/api/query/module_flow", params={"model": a.name, "format": "csv"})
    assert flow.headers["content-type"].startswith("text/csv")
    assert flow.text.splitlines()[0] == "src_layer,dst_layer,src_cluster,dst_cluster,weight,n_edges,share_out,share_in"
    core = client.get("/api/query/module-core", params={"model": a.name, "limit": "2"}).json()
    assert max(row["rank"] for row in core) <= 2
    neuron = client.get("/api/query/neuron", params={"model": a.name, "layer": a.names[1], "unit": "3"}).json()
    assert neuron[0]["kind"] == "neuron" and neuron[0]["unit"] == 3
    compare = client.get("/api/query/compare-models", params={"models": f"{a.name},{library_models.b.name}"}).json()
    assert [row["model"] for row in compare] == [a.name, library_models.b.name]


def test_query_errors_say_what_is_wrong(client, library_models):
    a = library_models.a.name
    one_line_error(client.get("/api/query/modul-span"), 404, "Did you mean", "library.module_span")
    one_line_error(client.get("/api/query/module-core", params={"model": a, "limit": "lots"}), 422, "limit must be int")
    one_line_error(client.get("/api/query/module-core", params={"model": a, "limit": "0"}), 422, "limit must be >= 1")
    one_line_error(client.get("/api/query/module-span", params={"model": a, "colour": "red"}), 422, "'colour'")
    one_line_error(client.get("/api/query/module-span", params={"model": a + "-x"}), 404, "no model")
    one_line_error(client.get("/api/query/module-span", params={"model": a, "partition": "nope"}), 404, "'nope'")
    one_line_error(client.get("/api/query/module-span", params={"model": a, "format": "xml"}), 422, "format")
    one_line_error(client.get("/api/jobs", params={"limit": "0"}), 422, "limit")


def test_jobs_are_queued_only_with_the_token(client, store, library_models):
    model = library_models.b.name
    job = {"model": model, "k": 3, "shuffles": 0}
    one_line_error(client.post("/api/jobs", json=job), 403, "token")
    one_line_error(client.post("/api/jobs", json=job, headers={"Authorization": "Bearer wrong"}), 403, "token")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    one_line_error(client.post("/api/jobs", json={**job, "model": "nope"}, headers=auth), 404, "no model")
    one_line_error(client.post("/api/jobs", json={**job, "k": 1}, headers=auth), 422, "k")
    queued = client.post("/api/jobs", json=job, headers=auth)
    assert queued.status_code == 201, queued.text
    job_id = queued.json()["id"]
    try:
        listed = {row["id"]: row for row in client.get("/api/jobs").json()}
        assert listed[job_id]["model"] == model and listed[job_id]["status"] == "queued"
        assert job_id in client.get("/api/jobs", params={"format": "csv"}).text
    finally:
        store.run("explorer.delete_job", id=job_id)  # no worker of a later test may pick it up
    with TestClient(create_app(store, None, writes_open=False)) as read_only:
        one_line_error(read_only.post("/api/jobs", json=job), 403, "read-only")


def test_docs_work_offline_and_reads_are_read_transactions(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "/api/query/{name}" in page.text and "/api/jobs" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from a CDN
    schema = client.get("/openapi.json").json()
    assert {"/api/models", "/api/compare", "/api/query/{name}"} <= set(schema["paths"])
    # Every statement the API reads with is declared mode: read, so the Store runs it in a read transaction.
    for name in (
        "admin.list_models",
        "admin.model_layers",
        "admin.list_partitions",
        "admin.partition_labels",
        "explorer.model_overview",
        "explorer.partition_spectrum",
        "jobs.list",
    ):
        assert catalog.get(name).mode == "read"
    assert all(q.mode == "read" for q in catalog.all_queries() if q.name.startswith("library."))


def test_pages_render_from_the_store(client, library_models):
    a = library_models.a
    first, second = list(a.partitions)
    store_page = client.get("/")
    assert store_page.status_code == 200 and a.name in store_page.text and "compare-models" in store_page.text
    model_page = client.get(f"/models/{a.name}", params={"partition": first})
    assert model_page.status_code == 200 and 'id="diagram"' in model_page.text and "module 2" in model_page.text
    assert "/static/plotly.min.js" in model_page.text and "cdn" not in model_page.text.lower()
    partition_page = client.get(f"/partitions/{first}")
    assert partition_page.status_code == 200, partition_page.text
    assert "40 shuffled networks" in partition_page.text and 'id="adjacency"' in partition_page.text
    compare_page = client.get("/compare", params={"model": a.name, "a": first, "b": second})
    assert compare_page.status_code == 200 and 'id="contingency"' in compare_page.text
    query_page = client.get("/queries/module-span", params={"model": a.name})
    assert query_page.status_code == 200 and "format=csv" in query_page.text
    assert client.get("/queries").status_code == 200 and client.get("/jobs").status_code == 200
    missing = client.get("/models/no-such-model")
    assert missing.status_code == 404 and "no model" in missing.text
    script = client.get("/static/plotly.min.js")
    assert script.status_code == 200 and len(script.text) > 1_000_000


def test_binds_beyond_this_machine_say_who_may_write(tmp_path):
    from neuronmap.service.cli.http import TokenFileError, read_token
    from neuronmap.service.http.app import is_loopback, write_policy

    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    assert "read-only" in write_policy("0.0.0.0", None) and "--token-file" in write_policy("0.0.0.0", None)
    assert "needs the token" in write_policy("0.0.0.0", "t" * 12)
    (tmp_path / "token.txt").write_text("  a-long-enough-token \n")
    assert read_token(tmp_path / "token.txt") == "a-long-enough-token" and read_token(None) is None
    (tmp_path / "short.txt").write_text("abc\n")
    with pytest.raises(TokenFileError, match="at least 8"):
        read_token(tmp_path / "short.txt")
    with pytest.raises(TokenFileError, match="Cannot read"):
        read_token(tmp_path / "missing.txt")


def test_the_server_runs_beside_another_main_loop(connection):
    """`serve --http` runs the explorer in a thread while its main loop runs jobs: it answers, then stops."""
    import json
    import urllib.request

    import click

    from neuronmap.service.cli.http import start_http
    from neuronmap.service.config import Settings
    from neuronmap.service.http.app import HttpStartError
    from neuronmap.service.store.local_neo4j import free_port

    environ = {
        "NEO4J_URI": connection.uri,
        "NEO4J_USERNAME": connection.user,
        "NEO4J_PASSWORD": connection.password.get_secret_value(),
    }
    ctx = click.Context(click.Command("serve"), obj=Settings.from_env(environ))
    port = free_port()
    stop = start_http(ctx, "127.0.0.1", port, None)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/query", timeout=10) as answer:
            assert {row["name"] for row in json.load(answer)} >= {"module-span", "module-flow"}
        with pytest.raises(HttpStartError, match="in use"):
            start_http(ctx, "127.0.0.1", port, None)
    finally:
        stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/query", timeout=2)


def test_compare_two_checkpoints_of_one_architecture(client, store, library_models):
    """A second model with the same layers (a checkpoint) compares neuron by neuron; other layers are refused."""
    from neuronmap.loaders.ingest.weights import ingest
    from neuronmap.service.store.writeback import write_partition

    a = library_models.a
    first, labels = next(iter(a.partitions.items()))
    copy = f"{a.name}-ckpt"
    ingest(store, copy, a.graph)
    try:
        relabelled = np.where(labels >= 0, (labels + 1) % 3, -1)  # the same modules, numbered otherwise
        write_partition(store, copy, f"{copy}/p-0", {"k": 3, "method": "planted"}, relabelled, np.arange(labels.size))
        page = client.get("/compare", params={"model": a.name, "a": first, "model_b": copy, "b": f"{copy}/p-0"})
        assert page.status_code == 200 and "ARI <b id='ari' data-value='1.0'>1.0000</b>" in page.text
        other = client.get(
            "/compare", params={"model": a.name, "a": first, "model_b": library_models.b.name, "b": "latest"}
        )
        assert other.status_code == 422 and "different layers" in other.text
    finally:
        store.run("admin.delete_model", model=copy)
