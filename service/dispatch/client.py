"""Queueing from Python: submit jobs and sweeps to the store, and wait on them as futures.

Any process with a Bolt connection queues work; whichever dispatcher serves the store (``neuronmap serve``, or the
one :func:`run_sweep` starts) runs it. A :class:`JobFuture` reads the job's record until it is finished and gives
the run's pydantic result.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from neuronmap.cypher import Store
from neuronmap.service.dispatch.specs import (
    CONFIGS,
    FINISHED,
    ActivationsResult,
    JobKind,
    JobOutcome,
)
from neuronmap.service.errors import ModelNotFoundError, ServiceError
from neuronmap.service.runs.clustering import ClusterConfig, PartitionResult
from neuronmap.service.store import jobs as jobs_store


class JobFailedError(ServiceError, RuntimeError):
    """A job ended failed or cancelled; the message is its one-line error."""

    def __init__(self, job_id: str, status: str, error: str) -> None:
        super().__init__(f"Job {job_id} {status}" + (f": {error}" if error else "."))
        self.job_id, self.status, self.error = job_id, status, error


class JobNotFoundError(ServiceError, LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"There is no job {job_id!r}; `neuronmap jobs list` lists them.")


class JobFuture:
    """A queued job: ``result()`` waits for it and returns the run's result (a PartitionResult for a cluster job,
    an ImportanceResult, a list of CoherenceResult, or an ActivationsResult)."""

    def __init__(self, store: Store, job_id: str) -> None:
        self.store, self.id = store, job_id

    def __repr__(self) -> str:
        return f"JobFuture({self.id!r})"

    def record(self) -> dict[str, Any]:
        rows = jobs_store.show(self.store, [self.id])
        if not rows:
            raise JobNotFoundError(self.id)
        return rows[0]

    def status(self) -> str:
        return str(self.record()["status"])

    def done(self) -> bool:
        return self.status() in FINISHED

    def cancel(self) -> str | None:
        return jobs_store.cancel(self.store, self.id)

    def outcome(self, timeout: float | None = None, poll: float = 0.25) -> JobOutcome:
        """Wait until the job finishes; its JobOutcome. Raises JobFailedError, or TimeoutError after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.record()
            if record["status"] == "done":
                return JobOutcome.model_validate_json(record["outcome"])
            if record["status"] in FINISHED:
                raise JobFailedError(self.id, record["status"], record["error"] or "")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"Job {self.id} is still {record['status']} after {timeout} s.")
            time.sleep(poll)

    def result(self, timeout: float | None = None) -> PartitionResult | Any:
        outcome = self.outcome(timeout)
        detail: Any = outcome.partition or outcome.importance or outcome.coherence or outcome.activations
        return detail if detail is not None else ActivationsResult(model=outcome.model, name=",".join(outcome.result))


def submit(store: Store, kind: JobKind, model: str, config: BaseModel | None = None, *, sweep: str = "") -> JobFuture:
    """Queue one job (settings checked now, so a bad one never reaches a worker); its future."""
    settings = CONFIGS[kind].model_validate(config.model_dump() if config is not None else {})
    return JobFuture(store, jobs_store.enqueue(store, model, settings.model_dump_json(), kind=kind, sweep=sweep))


def parse_ints(text: str) -> list[int]:
    """``4,8,12`` or ``0-4`` (inclusive) or a mix: ``0-2,7``."""
    values: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        lo, dash, hi = part.partition("-")
        values += list(range(int(lo), int(hi) + 1)) if dash and lo else [int(part)]
    return values


def match_models(store: Store, patterns: Sequence[str]) -> list[str]:
    """The ready models that match any of the names or shell patterns (``ckpt-*``), in store order."""
    from neuronmap.service.store import admin

    ready = [row["name"] for row in admin.list_models(store) if row["status"] == "ready"]
    found = [m for m in ready if any(fnmatch.fnmatchcase(m, p) for p in patterns)]
    if not found:
        raise ModelNotFoundError(", ".join(patterns))
    return found


class Sweep(BaseModel):
    """A cross product of models × K × seeds × null sizes, queued as cluster jobs of one sweep id."""

    id: str
    jobs: list[str]
    models: list[str]


def queue_sweep(
    store: Store,
    models: Sequence[str],
    ks: Sequence[int],
    seeds: Sequence[int],
    shuffles: Sequence[int] = (0,),
    base: ClusterConfig | None = None,
) -> tuple[Sweep, list[JobFuture]]:
    """Queue one cluster job per (model, K, seed, null size); the sweep and the jobs' futures, in that order."""
    base = base or ClusterConfig()
    sweep_id = f"sweep-{jobs_store.new_job_id()[4:]}"
    futures = [
        submit(
            store,
            "cluster",
            model,
            base.model_copy(update={"n_clusters": k, "random_state": seed, "n_shuffles": n}),
            sweep=sweep_id,
        )
        for model in models
        for k in ks
        for seed in seeds
        for n in shuffles
    ]
    return Sweep(id=sweep_id, jobs=[f.id for f in futures], models=list(models)), futures


def wait_all(
    store: Store,
    futures: Sequence[JobFuture],
    *,
    poll: float = 0.5,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, dict[str, Any]]:
    """Wait until every job is finished (one query per look); {id: record}."""
    ids = [f.id for f in futures]
    while True:
        records = {row["id"]: row for row in jobs_store.show(store, ids)}
        done = sum(r["status"] in FINISHED for r in records.values())
        on_progress(done, len(ids))
        if done == len(ids) or should_stop():
            return records
        time.sleep(poll)


def run_sweep(
    store: Store,
    futures: Sequence[JobFuture],
    dispatch: Callable[[Callable[[], bool]], Any] | None,
    *,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    poll: float = 0.5,
) -> dict[str, dict[str, Any]]:
    """Wait for queued jobs while ``dispatch(should_stop)`` (a dispatcher's ``run``) works in a thread; {id: record}.

    Other dispatchers of the store may run some of the jobs too; the wait is on the store's record either way.
    """
    finished = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            if dispatch is not None:
                dispatch(finished.is_set)
        except BaseException as error:  # noqa: BLE001 - handed to the waiting thread
            errors.append(error)
            finished.set()

    thread = threading.Thread(target=work, name="sweep-dispatcher", daemon=True)
    thread.start()
    try:
        records = wait_all(store, futures, poll=poll, on_progress=on_progress, should_stop=finished.is_set)
    finally:
        finished.set()
        thread.join()
    if errors:
        raise errors[0]
    return records
