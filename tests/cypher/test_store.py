"""The store against the real server: parameters only, explicit transactions, clear connection errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from neuronmap.cypher import QueryParameterError, Store, StoreAuthError, StoreUnavailableError, apply_schema
from neuronmap.loaders.ingest.weights import model_status
from neuronmap.service.store.local_neo4j import free_port
from tests.cypher.proxy import Proxy


def test_schema_is_safe_to_apply_twice(store):
    first = apply_schema(store)
    assert apply_schema(store) == first
    assert "schema.neuron_key_unique" in first


def test_bad_parameters_are_refused_before_reaching_the_server(store):
    with pytest.raises(QueryParameterError, match="missing model"):
        store.run("ingest.model_status")


def test_user_input_travels_as_a_parameter_never_as_query_text(store, model_id):
    hostile = model_id + "'}) DETACH DELETE n //"
    store.run("ingest.begin_model", model=hostile, meta={}, layers=[])
    try:
        assert model_status(store, hostile) == "loading"
    finally:
        store.run("admin.delete_model", model=hostile)
    assert model_status(store, hostile) is None


def test_a_transaction_that_raises_writes_nothing(store, model_id):
    with pytest.raises(RuntimeError):
        with store.transaction("test") as tx:
            tx.run("ingest.begin_model", model=model_id, meta={}, layers=[])
            raise RuntimeError("stop")
    assert model_status(store, model_id) is None
    with store.transaction("test") as tx:
        tx.run("ingest.begin_model", model=model_id, meta={}, layers=[])
    assert model_status(store, model_id) == "loading"


def test_a_closed_port_says_how_to_start_a_server():
    with pytest.raises(StoreUnavailableError, match="neuronmap db start"):
        Store.connect(f"bolt://127.0.0.1:{free_port()}", "neo4j", "whatever")


def test_wrong_password_is_an_auth_error(connection):
    with pytest.raises(StoreAuthError, match="refused the credentials"):
        Store.connect(connection.uri, "neo4j", "not-the-password")


_DIES = """
import json, sys, time
from neuronmap.cypher import Store
store = Store.connect(sys.argv[1], "neo4j", sys.argv[2])
store.run("admin.list_models")
print("ready", flush=True)
sys.stdin.readline()  # the test cuts the server off now
started = time.monotonic()
try:
    store.run("admin.list_models")
    error = None
except Exception as caught:
    error = [type(caught).__name__, str(caught)]
print(json.dumps({"seconds": time.monotonic() - started, "error": error}), flush=True)
"""


def test_a_server_that_dies_fails_the_next_query_fast_with_one_line(connection):
    """The driver's own retry loop took ~60 s and printed ~120 lines of warnings; the Store gives up in seconds."""
    host, port = connection.uri.rsplit("/", 1)[1].rsplit(":", 1)
    with Proxy(host, int(port)) as proxy:
        child = subprocess.Popen(
            [sys.executable, "-c", _DIES, f"bolt://127.0.0.1:{proxy.port}", connection.password.get_secret_value()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        proxy.kill()  # as a killed server: the port refuses, the open connections are reset
        out, err = child.communicate("go\n", timeout=60)
    report = json.loads(out)
    assert report["error"][0] == "StoreUnavailableError", report
    assert "neuronmap db logs" in report["error"][1] and "\n" not in report["error"][1]
    assert report["seconds"] < 10, report
    assert err.strip() == ""  # no driver warnings on stderr
