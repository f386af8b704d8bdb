"""The one way to open a store: a Connection (NEO4J_URI, or the managed local server) → a Store with the schema."""

from __future__ import annotations

import sys
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


def _say_waiting(server: local_neo4j.LocalServer) -> None:
    status = server.status()
    sys.stderr.write(
        f"The local Neo4j (pid {status.pid}) is still starting, perhaps recovering after an unclean stop; "
        "waiting for it (`neuronmap db logs` shows its progress)…\n"
    )


def open_store(
    settings: Settings | None = None,
    *,
    autostart: bool = True,
    on_start: Callable[[local_neo4j.LocalServer], None] | None = None,
    on_wait: Callable[[local_neo4j.LocalServer], None] | None = _say_waiting,
) -> Store:
    """The store the settings point at (default: read from the environment); the local server starts on first use.

    A local server that is still starting (another command started it, or it recovers after an unclean stop) is
    waited for; ``on_wait(server)`` says so first (by default one line on stderr).

    >>> import neuronmap as nm
    >>> with nm.open_store() as store:          # doctest: +SKIP
    ...     print(nm.run_query(store, "compare-models"))
    """
    settings = settings or Settings.from_env()
    return connect(local_neo4j.resolve_connection(settings, autostart=autostart, on_start=on_start, on_wait=on_wait))
