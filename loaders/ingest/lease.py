"""Leases: one writer per model (or per activation graph) at a time, and a crashed writer never blocks a rerun.

An ingest or a drop first creates a ``(:Lease {model, graph})`` node; the pair is unique in the store, so a second
run's claim fails at once and the run is refused with a line that names the holder (its operation, host, process
and start time). While the run lasts, a heartbeat thread extends the lease every ``ttl / 4`` seconds; the run
removes it when it ends, however it ends, as long as the server still answers.

A run that died (SIGKILL, a crash, a lost machine) leaves its lease behind. The next run takes it over at once
when the holder was a process on this host that no longer runs, or else once the lease has run out (``ttl``
seconds after the holder's last heartbeat, for a holder on another host).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import neo4j.exceptions

from neuronmap.cypher import Store
from neuronmap.loaders.errors import LeaseLostError, ModelBusyError

LEASE_SECONDS = 60  # how long a lease outlives its holder's last heartbeat (only a holder on another host waits it out)


def _process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, Linux), so a recycled pid does not pass for the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22, counted after the parenthesised command name


def _token() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}/{pid}/{_process_start(pid)}/{secrets.token_hex(4)}"


def holder_is_gone(row: dict[str, Any]) -> bool:
    """Whether the run that holds this lease has ended: its lease ran out, or it was a process on this host that
    no longer runs (the pid is gone, or now belongs to a process that started later)."""
    if row.get("expired"):
        return True
    host, pid, started, _ = (str(row.get("token") or "").split("/") + ["", "", "", ""])[:4]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # someone else's process: alive
    return bool(started) and _process_start(int(pid)) not in ("", started)


@dataclass
class Lease:
    """A lease this run holds; ``lost`` turns true if the heartbeat finds it gone (another run took it over)."""

    store: Store
    model: str
    graph: str
    token: str
    op: str
    ttl: int = LEASE_SECONDS
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        """Raise LeaseLostError if another run has taken the lease over (called between batches)."""
        if self.lost:
            raise LeaseLostError(self.model, self.graph)

    def renew(self) -> None:
        rows = self.store.run("ingest.renew_lease", model=self.model, graph=self.graph, token=self.token, ttl=self.ttl)
        if not rows:
            self.lost = True

    def release(self) -> None:
        self.store.run("ingest.release_lease", model=self.model, graph=self.graph, token=self.token)

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self.renew()
            except Exception:  # noqa: BLE001 - a missed beat is retried; a dead server fails the run itself
                continue


def read_lease(store: Store, model: str, graph: str = "") -> dict[str, Any] | None:
    """The lease on the model (graph '') or on one of its activation graphs, or None when nobody holds one."""
    rows = store.run("ingest.read_lease", model=model, graph=graph)
    return rows[0] if rows else None


def check_free(store: Store, model: str, graph: str = "") -> None:
    """Raise ModelBusyError if a live run holds the lease (a quick check before slow work, such as loading a file)."""
    row = read_lease(store, model, graph)
    if row is not None and not holder_is_gone(row):
        raise ModelBusyError(model, graph, row)


@contextlib.contextmanager
def hold(store: Store, model: str, op: str, *, graph: str = "", ttl: int = LEASE_SECONDS) -> Iterator[Lease]:
    """Hold the lease on ``model`` (or on its activation graph ``graph``) for the block, with a heartbeat.

    Raises ModelBusyError at once when a live run holds it; takes over a lease whose holder is gone.
    """
    token = _token()
    for _ in range(5):
        try:
            store.run(
                "ingest.claim_lease",
                model=model,
                graph=graph,
                token=token,
                op=op,
                host=socket.gethostname(),
                pid=os.getpid(),
                ttl=ttl,
            )
            break
        except neo4j.exceptions.ConstraintError:
            row = read_lease(store, model, graph)
            if row is None:
                continue  # released since: claim again
            if not holder_is_gone(row):
                raise ModelBusyError(model, graph, row) from None
            # The holder is gone: remove exactly its lease (a third run may have taken it meanwhile) and claim.
            store.run("ingest.release_lease", model=model, graph=graph, token=row["token"])
    else:
        row = read_lease(store, model, graph) or {}
        raise ModelBusyError(model, graph, row)
    lease = Lease(store, model, graph, token, op, ttl)
    beat = threading.Thread(target=lease._beat, name=f"lease-{op}", daemon=True)
    beat.start()
    try:
        yield lease
    except BaseException as error:
        lease._stop.set()
        if not connection_lost(error):  # a dead server cannot take the release; the rerun takes the lease over
            with contextlib.suppress(Exception):
                lease.release()
        raise
    else:
        lease._stop.set()
        lease.release()
    finally:
        lease._stop.set()


def connection_lost(error: BaseException) -> bool:
    """True for errors after which talking to the server again would only wait (and retry) in vain."""
    return isinstance(error, ConnectionError | neo4j.exceptions.ServiceUnavailable | neo4j.exceptions.SessionExpired)
