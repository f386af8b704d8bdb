"""Store: one Neo4j database, spoken to only through named queries."""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, NamedTuple

import neo4j
import neo4j.exceptions

from neuronmap.cypher import catalog
from neuronmap.cypher.adhoc import AdHocResult, AdHocStatement, plain
from neuronmap.cypher.errors import AdHocStatementError, StoreAuthError, StoreUnavailableError

CONNECTION_TIMEOUT = 5.0  # seconds to open a connection: a local or LAN server answers in milliseconds
RETRY_TIME = 30.0  # how long a transient error (a lock conflict, a deadlock) is retried, as the driver would
RECONNECT_TIME = 2.0  # how long a lost connection is retried: enough for a pooled one the server has since closed
_COUNTERS = (  # what a write reports, in the order `neuronmap cypher` prints it
    "nodes_created",
    "nodes_deleted",
    "relationships_created",
    "relationships_deleted",
    "properties_set",
    "labels_added",
    "labels_removed",
    "indexes_added",
    "indexes_removed",
    "constraints_added",
    "constraints_removed",
)
_LOST = (neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.SessionExpired)

# The driver logs its retries and dropped connections as warnings. An application that configures logging still
# gets them; without that, Python's last-resort handler would print each one to stderr (120 lines for one dead
# server), so the library's own handler swallows them and the Store says what happened in one error.
if not any(isinstance(h, logging.NullHandler) for h in logging.getLogger("neo4j").handlers):
    logging.getLogger("neo4j").addHandler(logging.NullHandler())


class _Ran(NamedTuple):
    """What one statement gave: its records, its column names (known even without rows) and its summary."""

    records: list[neo4j.Record]
    keys: list[str]
    summary: neo4j.ResultSummary

    @classmethod
    def of(cls, result: neo4j.Result) -> _Ran:
        records = list(result)
        return cls(records, list(result.keys()), result.consume())


def _metadata(name: str) -> dict[str, str]:
    # Tag every transaction with the query's name, so the server's query log shows who ran what.
    return {"app": "neuronmap", "query": name}


def _reason(error: BaseException) -> str:
    """The useful part of a driver error's text: "[Errno 111] Connection refused" rather than three lines."""
    text = str(error)
    errno = re.search(r"\(reason (.+?)\)?\s*$", text, re.S)
    if errno:
        return errno.group(1).strip()
    return text.strip().split("\n")[0] or type(error).__name__


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
        # Retries are the Store's own (see _execute): the driver would retry a dead server for 30 s or more.
        driver = neo4j.GraphDatabase.driver(
            uri,
            auth=(user, password),
            max_connection_lifetime=3600,
            notifications_min_severity="OFF",
            connection_timeout=CONNECTION_TIMEOUT,
            max_transaction_retry_time=RETRY_TIME,
        )
        try:
            driver.verify_connectivity()
        except neo4j.exceptions.AuthError:
            driver.close()
            raise StoreAuthError(uri, user) from None
        except (neo4j.exceptions.ServiceUnavailable, OSError, ValueError) as error:
            driver.close()
            raise StoreUnavailableError(uri, _reason(error)) from None
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
        return self._execute(
            name,
            query.text,
            full,
            read=query.mode == "read",
            # CALL { … } IN TRANSACTIONS needs an implicit transaction: the explicit ones refuse it.
            autocommit=query.mode == "autocommit",
            database="system" if query.mode == "system" else self.database,
        ).records

    def run_ad_hoc(self, statement: AdHocStatement, params: dict[str, Any] | None = None) -> AdHocResult:
        """Run a statement a person typed (``neuronmap cypher``): the one statement that is not a named file.

        It runs as one auto-commit transaction in READ access mode unless ``statement.write``, so the server itself
        refuses a write. Neo4j's refusals (syntax, access mode, a missing procedure) become AdHocStatementError.
        """
        try:
            ran = self._execute(
                "adhoc",
                statement.text,
                dict(params or {}),
                read=not statement.write,
                autocommit=True,
                database=self.database,
                retry=not statement.write,  # a write is not repeated behind the user's back
            )
        except neo4j.exceptions.Neo4jError as error:
            raise AdHocStatementError(
                error.code or type(error).__name__, error.message or str(error), statement.write
            ) from None
        counters = {
            what: count
            for what in _COUNTERS
            if isinstance(count := getattr(ran.summary.counters, what, 0), int) and count > 0
        }
        return AdHocResult(
            columns=ran.keys,
            rows=[{key: plain(value) for key, value in record.items()} for record in ran.records],
            counters=counters,
        )

    def _execute(
        self,
        name: str,
        text: str,
        params: dict[str, Any],
        *,
        read: bool,
        autocommit: bool,
        database: str,
        retry: bool = True,
    ) -> _Ran:
        """Run one statement in one transaction, retrying what is worth retrying, and fail fast on a lost server.

        A transient error (a lock conflict between concurrent batches, a deadlock) is retried with backoff for up to
        RETRY_TIME, as the driver's managed transactions do. A lost connection is retried for RECONNECT_TIME only,
        then raises StoreUnavailableError: a dead server fails the command in seconds, with one line.
        """
        started = time.monotonic()
        delay = 0.1
        while True:
            try:
                with self._driver.session(
                    database=database, default_access_mode=neo4j.READ_ACCESS if read else neo4j.WRITE_ACCESS
                ) as session:
                    if autocommit:
                        return _Ran.of(session.run(neo4j.Query(text, metadata=_metadata(name)), params))
                    with session.begin_transaction(metadata=_metadata(name)) as tx:
                        ran = _Ran.of(tx.run(text, params))
                        tx.commit()
                    return ran
            except neo4j.exceptions.IncompleteCommit as error:
                raise StoreUnavailableError(
                    self.uri, f"{_reason(error)}; the commit may or may not have happened", during=name
                ) from None
            except _LOST as error:
                if not retry or time.monotonic() - started >= RECONNECT_TIME:
                    raise StoreUnavailableError(self.uri, _reason(error), during=name) from None
            except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError) as error:
                if not retry or not error.is_retryable() or time.monotonic() - started >= RETRY_TIME:
                    raise
            time.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 5.0)

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
        try:
            with self._driver.session(database=self.database) as session:
                tx = session.begin_transaction(metadata=_metadata(name))
                try:
                    yield Transaction(tx)
                    tx.commit()
                finally:
                    if tx.closed() is False:
                        tx.rollback()
        except _LOST as error:  # not retried: the block's work is the caller's
            raise StoreUnavailableError(self.uri, _reason(error), during=name) from None


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
