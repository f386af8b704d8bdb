"""One real Neo4j for the whole test run (NEO4J_URI if set, else a private managed server on a free port)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import torch

from neuronmap.cypher import Store
from neuronmap.service.config import Settings
from neuronmap.service.store import local_neo4j
from neuronmap.service.store.open import connect

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # the same test body runs on both


@pytest.fixture(scope="session")
def connection() -> Iterator[local_neo4j.Connection]:
    settings = Settings.from_env()
    with local_neo4j.running(settings) as connection:  # the error carries the server's log if start-up fails
        yield connection


@pytest.fixture(scope="session")
def store(connection: local_neo4j.Connection) -> Iterator[Store]:
    with connect(connection) as store:
        yield store


@pytest.fixture
def model_id(store: Store, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh model name per test, deleted afterwards: tests share a server, never data."""
    name = f"test-{request.node.name[:40]}-{secrets.token_hex(3)}"
    yield name
    store.run("admin.delete_model", model=name)
