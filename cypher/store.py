"""Store: one Neo4j database, spoken to only through named queries."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import neo4j
import neo4j.exceptions

from neuronmap.cypher import catalog
from neuronmap.cypher.errors import StoreAuthError, StoreUnavailableError


def _metadata(name: str) -> dict[str, str]:
    # Tag every transaction with the query's name, so the server's query log shows who ran what.
    return {"app": "neuronmap", "query": name}


class Transaction:
    """Several named queries in one explicit transaction: all of them commit, or none does."""

    def __init__(self, tx: neo4j.Transaction) -> None:
        self._tx = tx

    def run(self, name: str, /, **params: Any) -> list[dict[str, Any]]:
        query = catalog.get(name)
        full = query.check(params)
        return [record.data() for record in self._tx.run(query.text, full)]


class Store:
    """One Neo4j database, spoken to only through named queries.

    Statements run only by name, so user input can reach one only as a ``$param``, never as query text.
    """

    def __init__(self, driver: neo4j.Driver, database: str = "neo4j", uri: str = "") -> None:
        self._driver, self.database, self.uri = driver, database, uri

    @classmethod
    def connect(cls, uri: str, user: str, password: str, database: str = "neo4j") -> Store:
        """Open a driver and check that the server answers; raises StoreUnavailableError / StoreAuthError."""
        # Notifications off: the server's hints (e.g. "relationship type does not exist yet" on an empty store)
        # would otherwise be logged as warnings on every query.
        driver = neo4j.GraphDatabase.driver(
            uri, auth=(user, password), max_connection_lifetime=3600, notifications_min_severity="OFF"
        )
        try:
            driver.verify_connectivity()
        except neo4j.exceptions.AuthError:
            driver.close()
            raise StoreAuthError(uri, user) from None
        except (neo4j.exceptions.ServiceUnavailable, OSError, ValueError) as error:
            driver.close()
            reason = str(error).split("\n")[0] or type(error).__name__
            raise StoreUnavailableError(uri, reason) from None
        return cls(driver, database, uri)

    def close(self) -> None:
        self._driver.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, name: str, /, **params: Any) -> list[dict[str, Any]]:
        """Run a named query and return its records as dicts."""
        return [record.data() for record in self._records(name, params)]

    def run_values(self, name: str, /, **params: Any) -> list[dict[str, Any]]:
        """Like :meth:`run`, for queries that return only scalars and lists (no nodes or relationships).

        ``Record.data()`` walks every element of every list to convert graph types; on fat rows of 100k-element
        lists that walk costs 3× the query itself, so bulk pulls take the values as they come.
        """
        return [dict(zip(record.keys(), record.values())) for record in self._records(name, params)]

    def _records(self, name: str, params: dict[str, Any]) -> list[neo4j.Record]:
        query = catalog.get(name)  # UnknownQueryError suggests near names
        full = query.check(params)  # QueryParameterError lists missing, unexpected and ill-typed ones
        if query.mode == "autocommit":
            # CALL { … } IN TRANSACTIONS needs an implicit transaction: the managed ones refuse it.
            with self._driver.session(database=self.database) as session:
                return list(session.run(neo4j.Query(query.text, metadata=_metadata(name)), full))
        result = self._driver.execute_query(  # a managed transaction: the driver retries transient errors
            neo4j.Query(query.text, metadata=_metadata(name)),
            parameters_=full,
            routing_=neo4j.RoutingControl.READ if query.mode == "read" else neo4j.RoutingControl.WRITE,
            database_="system" if query.mode == "system" else self.database,
        )
        return result.records

    def run_batched(self, name: str, rows: Iterable[Any], batch_size: int, /, **params: Any) -> int:
        """Run a ``UNWIND $rows`` query once per batch of rows, one transaction each; returns the rows sent."""
        sent = 0
        for batch in batched(rows, batch_size):
            self.run(name, rows=batch, **params)
            sent += len(batch)
        return sent

    def run_concurrently(
        self,
        name: str,
        batches: Iterable[tuple[dict[str, Any], int]],
        /,
        *,
        workers: int = 2,
        on_batch: Callable[[int], None] = lambda count: None,
    ) -> int:
        """Run a write query once per ``(params, count)`` batch on ``workers`` concurrent transactions.

        One transaction runs on one server thread, so a second writer uses the second core. At most 2×workers
        batches are in flight (memory stays bounded); a lock conflict between batches is a transient error that
        the driver retries. ``on_batch(count)`` is called in this thread after each committed batch; the sum of
        the counts is returned. On any error the batches not yet started are cancelled and the error re-raised.
        """
        written = 0
        workers = max(1, workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
            pending: set[Future[int]] = set()

            def settle(done: Iterable[Future[int]]) -> None:
                nonlocal written
                for future in done:
                    count = future.result()
                    written += count
                    on_batch(count)

            try:
                for params, count in batches:
                    if len(pending) >= 2 * workers:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        settle(done)
                    pending.add(pool.submit(self._run_counted, name, params, count))
                settle(pending)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        return written

    def _run_counted(self, name: str, params: dict[str, Any], count: int) -> int:
        self.run(name, **params)
        return count

    @contextlib.contextmanager
    def transaction(self, name: str) -> Iterator[Transaction]:
        """An explicit write transaction, committed when the block ends without an exception."""
        with self._driver.session(database=self.database) as session:
            tx = session.begin_transaction(metadata=_metadata(name))
            try:
                yield Transaction(tx)
                tx.commit()
            finally:
                if tx.closed() is False:
                    tx.rollback()


def batched(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]
