"""What the benchmarks share: a Neo4j to measure against, and a markdown table printer."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator, Sequence

from neuronmap.cypher import Store, apply_schema
from neuronmap.service import local_neo4j
from neuronmap.service.config import Settings


@contextlib.contextmanager
def bench_store() -> Iterator[Store]:
    """NEO4J_URI if set, else a private server with benchmark-sized memory (heap 2g, page cache 2g)."""
    environ = dict(os.environ)
    environ.setdefault("NEURONMAP_NEO4J_HEAP", "2g")
    environ.setdefault("NEURONMAP_NEO4J_PAGECACHE", "2g")
    with local_neo4j.running(Settings.from_env(environ)) as connection:
        with Store.connect(connection.uri, connection.user, connection.password.get_secret_value(),
                           connection.database) as store:
            apply_schema(store)
            yield store


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    box: list[float] = []
    start = time.perf_counter()
    yield box
    box.append(time.perf_counter() - start)


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(f"{v:,.0f}" if isinstance(v, float) and v > 100 else
                                 (f"{v:.3g}" if isinstance(v, float) else str(v)) for v in row) + " |")
