"""The one way to open a store: a Connection (NEO4J_URI, or the managed local server) → a Store with the schema."""

from __future__ import annotations

from collections.abc import Callable

from neuronmap.cypher import Store, apply_schema
from neuronmap.service.config import Settings
from neuronmap.service.store import local_neo4j


def connect(connection: local_neo4j.Connection) -> Store:
    """A connected Store with the schema in place (constraints and indexes are IF NOT EXISTS, so this is cheap)."""
    store = Store.connect(connection.uri, connection.user, connection.password.get_secret_value(), connection.database)
    try:
        apply_schema(store)
    except BaseException:
        store.close()
        raise
    return store


def open_store(
    settings: Settings | None = None,
    *,
    autostart: bool = True,
    on_start: Callable[[local_neo4j.LocalServer], None] | None = None,
) -> Store:
    """The store the settings point at (default: read from the environment); the local server starts on first use.

    >>> import neuronmap as nm
    >>> with nm.open_store() as store:          # doctest: +SKIP
    ...     print(nm.run_query(store, "compare-models"))
    """
    settings = settings or Settings.from_env()
    return connect(local_neo4j.resolve_connection(settings, autostart=autostart, on_start=on_start))
