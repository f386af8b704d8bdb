"""The store against the real server: parameters only, explicit transactions, clear connection errors."""

from __future__ import annotations

import pytest

from neuronmap.cypher import QueryParameterError, Store, StoreAuthError, StoreUnavailableError, apply_schema
from neuronmap.loaders.ingest.weights import model_status
from neuronmap.service.store.local_neo4j import free_port


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
