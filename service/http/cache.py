"""What the pages read of a partition, kept in memory: a stored partition never changes (it is written in one
transaction and only ever deleted), so its span, flow, cohesion, core and labels are read once per server.

Reads still check first that the partition exists (``resolve_partition``, a cheap lookup), so a dropped partition
is never served from here. Assessments are not cached: new ones arrive on old partitions.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from neuronmap.cypher import Store
from neuronmap.service.store.library import run_library_query

MAX_ENTRIES = 256  # results kept; a 400k-edge model's flow is a few thousand rows


class PartitionCache:
    """A small least-recently-used map from (what, partition, …) to what the store gave; safe across threads."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()  # outside the lock: two first readers may both compute, and get the same answer
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return value

    def rows(self, store: Store, query: str, partition: str, **params: Any) -> list[dict[str, Any]]:
        """A library query's rows for one (resolved) partition id."""
        key = (query, partition, tuple(sorted(params.items())))
        return list(self.get(key, lambda: run_library_query(store, query, partition=partition, **params)))

    def many(self, store: Store, partition: str, queries: tuple[str, ...]) -> list[list[dict[str, Any]]]:
        """Several library queries of one partition, run side by side (each in its own read transaction)."""
        with ThreadPoolExecutor(max_workers=len(queries)) as pool:
            futures = [pool.submit(self.rows, store, query, partition) for query in queries]
            return [future.result() for future in futures]


MODEL_PAGE = ("partition_stats", "module_span", "module_cohesion", "module_flow")


def prewarm(store: Store, cache: PartitionCache) -> threading.Thread:
    """Read what the model pages of the newest partitions show, in a background thread, so that a server that has
    just started is already warm; the pages work (reading for themselves) while it runs, and a failure only logs."""
    from neuronmap.service.store import admin

    def run() -> None:
        try:
            for model in admin.list_models(store):
                if model["status"] != "ready":
                    continue
                partitions = admin.list_partitions(store, model["name"])
                if partitions:
                    cache.many(store, str(partitions[0]["id"]), MODEL_PAGE)
        except Exception as error:  # a dropped model, a lost or closed store: the pages will say so themselves
            logging.getLogger("neuronmap.http").info("prewarming the explorer's cache stopped: %s", error)

    thread = threading.Thread(target=run, name="neuronmap-http-prewarm", daemon=True)
    thread.start()
    return thread
