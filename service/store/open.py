"""Open the store the settings point at: NEO4J_URI, or the managed local server (started on first use)."""

from __future__ import annotations

from typing import Callable

from neuronmap.cypher import Store, apply_schema

from neuronmap.service.store import local_neo4j
from neuronmap.service.config import Settings


def open_store(settings: Settings, *, autostart: bool = True,
               on_start: Callable[[local_neo4j.LocalServer], None] | None = None) -> Store:
    """A connected Store with the schema in place (constraints and indexes are IF NOT EXISTS, so this is cheap)."""
    connection = local_neo4j.resolve_connection(settings, autostart=autostart, on_start=on_start)
    store = Store.connect(connection.uri, connection.user, connection.password.get_secret_value(),
                          connection.database)
    try:
        apply_schema(store)
    except BaseException:
        store.close()
        raise
    return store
