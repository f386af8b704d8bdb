"""The dispatcher: claims queued jobs from Neo4j under a lease, runs each as Ray tasks, and records the outcome.

It never touches tensors: a task gets the job's id and settings and the Neo4j connection, pulls from the store and
writes back itself; the dispatcher only sees the small outcome. While jobs run it renews their leases in one query
per beat (every third of the lease), and at each beat it acts on `jobs cancel` (``ray.cancel``) and drops the jobs
another dispatcher took over. A dispatcher that dies stops beating; its jobs' leases lapse and any other
dispatcher of the same store claims them again (Ray has cancelled the dead driver's tasks; a task that had written
its result is found by the rerun, see ``tasks``). A Ray worker that dies mid-task is Ray's to retry
(``max_retries``).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from neuronmap.cypher import Store
from neuronmap.options import JOB_LEASE_SECONDS
from neuronmap.service.dispatch.specs import Job, JobOutcome
from neuronmap.service.runs.clustering import ClusterConfig
from neuronmap.service.store import jobs as jobs_store
from neuronmap.service.store.local_neo4j import Connection

log = logging.getLogger(__name__)


class DispatcherConfig(BaseModel):
    """How a dispatcher runs its jobs."""

    lease_seconds: float = Field(default=JOB_LEASE_SECONDS, ge=1.0)  # a claim's life without a heartbeat
    poll_seconds: float = Field(default=1.0, gt=0.0)  # between looks at the queue
    max_in_flight: int | None = Field(default=None, ge=1)  # jobs at once; default: the Ray cluster's CPUs
    max_retries: int = Field(default=3, ge=0)  # Ray's re-runs of a task whose worker died
    max_attempts: int = Field(default=3, ge=1)  # dispatcher claims of a job before a lapsed lease fails it
    null_chunk: int = Field(default=100, ge=0)  # shuffles per task when a null is split (0: never split)


class JobEvent(BaseModel):
    """What happened to a job this dispatcher holds: started, done, failed, cancelled or lost (taken over)."""

    id: str
    kind: str
    model: str
    status: str
    detail: str = ""


@dataclass
class _InFlight:
    job: Job
    ref: Any  # the ObjectRef of run_job
    chunks: list[Any] = field(default_factory=list)  # the ObjectRefs of its null chunks


def chunk_ranges(n_shuffles: int, chunk: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of a null split into chunks of at most ``chunk`` shuffles, as even as possible."""
    if chunk <= 0 or n_shuffles <= chunk:
        return []
    n = -(-n_shuffles // chunk)
    bounds = [round(i * n_shuffles / n) for i in range(n + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def one_line(error: BaseException) -> str:
    """A task's failure as the one line the job records: the message of a neuronmap error, else its type too."""
    import ray.exceptions as rx

    if isinstance(error, rx.TaskCancelledError):
        return "cancelled"
    if isinstance(error, (rx.WorkerCrashedError, rx.NodeDiedError, rx.OutOfMemoryError)):
        first = (str(error).strip().split("\n") or [""])[0]
        return f"its Ray worker died on every try: {type(error).__name__}: {first}"[:1000]
    cause = getattr(error, "cause", None) if isinstance(error, rx.RayTaskError) else error
    cause = cause if isinstance(cause, BaseException) else error
    from neuronmap.errors import NeuronmapError

    text = str(cause).strip().split("\n")[0] if str(cause).strip() else ""
    if isinstance(cause, NeuronmapError) and text:
        return text[:1000]
    return f"{type(cause).__name__}: {text}"[:1000] if text else type(cause).__name__


class Dispatcher:
    """Claims jobs from one store and runs them on the Ray this process started or joined (see ``ray_session``).

    Several dispatchers, on one machine or many, may serve one store: claims are exclusive and leased.
    """

    def __init__(
        self,
        store: Store,
        connection: Connection,
        config: DispatcherConfig | None = None,
        *,
        name: str | None = None,
        on_event: Callable[[JobEvent], None] = lambda event: None,
    ) -> None:
        self.store, self.connection = store, connection
        self.config = config or DispatcherConfig()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        self.on_event = on_event
        self._running: dict[str, _InFlight] = {}
        self._gpus = 0.0

    # -- the loop -------------------------------------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool] = lambda: False, *, exit_when_idle: bool = False) -> int:
        """Run jobs until ``should_stop()`` (or, with ``exit_when_idle``, until the queue is empty and nothing runs).

        Returns the number of jobs this dispatcher finished. On the way out (Ctrl-C included) the jobs still
        running are cancelled on Ray and put back in the queue, so another dispatcher takes them at once.
        """
        import ray

        from neuronmap.service.dispatch.ray_runtime import cluster_resources

        resources = cluster_resources()
        self._gpus = float(resources.get("GPU", 0.0))
        capacity = self.config.max_in_flight or max(1, int(resources.get("CPU", 1)))
        beat_every = self.config.lease_seconds / 3
        next_beat = time.monotonic() + beat_every
        finished = 0
        try:
            while not should_stop():
                claimed = self._fill(capacity)
                if not self._running:
                    if exit_when_idle and not claimed:
                        break
                    time.sleep(self.config.poll_seconds)
                    continue
                refs = [flight.ref for flight in self._running.values()]
                wait = self.config.poll_seconds if len(self._running) >= capacity or not claimed else 0.0
                ready, _ = ray.wait(refs, num_returns=1, timeout=wait, fetch_local=False)
                if ready:
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
                finished += sum(self._collect(ref) for ref in ready)
                if time.monotonic() >= next_beat:
                    self._beat()
                    next_beat = time.monotonic() + beat_every
        finally:
            self._release_all()
        return finished

    def _fill(self, capacity: int) -> int:
        """Claim and submit jobs while there is room; returns how many were claimed."""
        claimed = 0
        while len(self._running) < capacity:
            row = jobs_store.claim(
                self.store,
                self.name,
                lease_seconds=self.config.lease_seconds,
                max_attempts=self.config.max_attempts,
            )
            if row is None:
                break
            claimed += 1
            job = Job.model_validate(row)
            try:
                self._running[job.id] = self._submit(job)
            except Exception as error:  # noqa: BLE001 - a job that cannot even be submitted fails alone
                self._finish(job, "failed", error=one_line(error))
                continue
            self._event(job, "started")
        return claimed

    # -- submitting and collecting ---------------------------------------------------------------------------------

    def _options(self, job: Job) -> dict[str, Any]:
        device = job.device
        gpu = device.startswith("cuda") or (device == "auto" and self._gpus > 0)
        return {"num_cpus": 1, "num_gpus": 1 if gpu else 0, "max_retries": self.config.max_retries}

    def _submit(self, job: Job) -> _InFlight:
        from neuronmap.service.dispatch.ray_runtime import remote_functions

        run_job, null_chunk = remote_functions()
        options = self._options(job)
        chunks: list[Any] = []
        if job.kind == "cluster":
            config: ClusterConfig = job.settings()
            if config.random_state is not None:  # fresh entropy cannot be shared between chunks
                for start, stop in chunk_ranges(config.n_shuffles, self.config.null_chunk):
                    chunks.append(null_chunk.options(**options).remote(self.connection, job, start, stop))
        ref = run_job.options(**options).remote(self.connection, job, *chunks)
        return _InFlight(job, ref, chunks)

    def _collect(self, ref: Any) -> int:
        """Record the outcome of a finished task; 1 when this dispatcher recorded it."""
        import ray

        flight = next((f for f in self._running.values() if f.ref == ref), None)
        if flight is None:
            return 0
        del self._running[flight.job.id]
        try:
            outcome: JobOutcome = ray.get(ref)
        except Exception as error:  # noqa: BLE001 - the job's failure, recorded as one line; the others go on
            message = one_line(error)
            status = "cancelled" if message == "cancelled" else "failed"
            return int(self._finish(flight.job, status, error="" if status == "cancelled" else message))
        return int(self._finish(flight.job, "done", outcome=outcome))

    def _finish(self, job: Job, status: str, *, error: str = "", outcome: JobOutcome | None = None) -> bool:
        result = outcome.result if outcome is not None else []
        recorded = jobs_store.finish(
            self.store,
            job.id,
            self.name,
            status=status,
            result=",".join(result),
            partition=result[0] if outcome is not None and job.kind == "cluster" else "",
            error=error,
            outcome=outcome.model_dump_json() if outcome is not None else "",
        )
        if not recorded:
            self._event(job, "lost", "its lease lapsed and another dispatcher took it over")
            return False
        self._event(job, status, error or ", ".join(result))
        return True

    # -- leases, cancels and shutdown ------------------------------------------------------------------------------

    def _beat(self) -> None:
        """Renew the leases of the running jobs; cancel those `jobs cancel` asked for; drop those taken over."""
        if not self._running:
            return
        try:
            held = jobs_store.heartbeat_many(
                self.store, list(self._running), self.name, lease_seconds=self.config.lease_seconds
            )
        except Exception as error:  # noqa: BLE001 - a missed beat is retried; the lease covers two more
            log.warning("heartbeat of %d jobs failed: %s", len(self._running), error)
            return
        for job_id in list(self._running):
            if job_id not in held:
                flight = self._running.pop(job_id)
                self._cancel(flight)
                self._event(flight.job, "lost", "its lease lapsed and another dispatcher took it over")
            elif held[job_id]:
                flight = self._running.pop(job_id)
                self._cancel(flight)
                self._finish(flight.job, "cancelled")

    @staticmethod
    def _cancel(flight: _InFlight) -> None:
        import ray

        for ref in [flight.ref, *flight.chunks]:
            try:
                ray.cancel(ref, force=True)
            except Exception as error:  # noqa: BLE001 - a finished task cannot be cancelled; nothing to do
                log.debug("cancel of %s: %s", flight.job.id, error)

    def _release_all(self) -> None:
        """Cancel what still runs and put those jobs back in the queue (this dispatcher is stopping)."""
        if not self._running:
            return
        for flight in self._running.values():
            self._cancel(flight)
        try:
            jobs_store.release(self.store, list(self._running), self.name)
        except Exception as error:  # noqa: BLE001 - their leases lapse instead
            log.warning("could not put %d jobs back in the queue: %s", len(self._running), error)
        self._running.clear()

    def _event(self, job: Job, status: str, detail: str = "") -> None:
        self.on_event(JobEvent(id=job.id, kind=job.kind, model=job.model, status=status, detail=detail))
