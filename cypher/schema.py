"""Constraints and indexes: every statement under queries/schema/, all IF NOT EXISTS, so safe to run twice."""

from __future__ import annotations

from neuronmap.cypher import catalog
from neuronmap.cypher.store import Store


def apply_schema(store: Store) -> list[str]:
    """Create the constraints and indexes the graph model needs, then wait until they are online."""
    names = [q.name for q in catalog.all_queries() if q.name.startswith("schema.") and q.name != "schema.await_indexes"]
    for name in names:
        store.run(name)
    store.run("schema.await_indexes")
    return names
