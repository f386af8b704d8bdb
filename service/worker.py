"""The long-running service: claim a queued clustering job, run the pipeline, record the outcome, repeat.

A claim is a lease (``store.jobs``): while a job runs, a heartbeat thread extends it every third of the lease, so a
job whose worker dies is reclaimed by another worker once the lease lapses.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from neuronmap.cypher import Store
from neuronmap.errors import NeuronmapError
from neuronmap.service.runs import ClusterConfig, run_clustering
from neuronmap.service.store import jobs

log = logging.getLogger(__name__)

LEASE_SECONDS = jobs.LEASE_SECONDS
MAX_ATTEMPTS = jobs.MAX_ATTEMPTS


def enqueue(store: Store, model: str, config: ClusterConfig) -> str:
    """Queue a clustering job; returns its id."""
    return jobs.enqueue(store, model, config.model_dump_json())


@contextmanager
def heartbeat(store: Store, job_id: str, worker: str, lease_seconds: float) -> Iterator[threading.Event]:
    """Extend the worker's lease on the job every ``lease_seconds / 3`` until the block ends.

    Yields an event that is set when the lease was lost (another worker holds the job now). A heartbeat that fails
    (the server is briefly away) is logged and retried at the next beat.
    """
    stop, lost = threading.Event(), threading.Event()

    def beat() -> None:
        while not stop.wait(lease_seconds / 3):
            try:
                if not jobs.heartbeat(store, job_id, worker, lease_seconds=lease_seconds):
                    lost.set()
                    return
            except Exception as error:  # noqa: BLE001 - a missed beat is retried; the lease covers two more
                log.warning("heartbeat of %s failed: %s", job_id, error)

    thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join()


def run_one(
    store: Store, worker: str, *, lease_seconds: float = LEASE_SECONDS, max_attempts: int = MAX_ATTEMPTS
) -> dict[str, str] | None:
    """Claim and run the oldest queued job (or one whose worker died); None when there is nothing to claim.

    The outcome's ``status`` is ``done`` (with ``partition``), ``failed`` (with ``error``), or ``lost`` when this
    worker's lease lapsed and another worker took the job over before it finished (its outcome is not recorded).
    """
    job = jobs.claim(store, worker, lease_seconds=lease_seconds, max_attempts=max_attempts)
    if job is None:
        return None
    with heartbeat(store, job["id"], worker, lease_seconds):
        try:
            config = ClusterConfig.model_validate_json(job["config"])
            result = run_clustering(store, job["model"], config)
        except (NeuronmapError, ValueError) as error:  # the job's fault: record it, go on
            message = str(error) or type(error).__name__
            outcome = {"id": job["id"], "status": "failed", "error": message}
        else:
            outcome = {"id": job["id"], "status": "done", "partition": result.id}
    recorded = jobs.finish(
        store, job["id"], worker, partition=outcome.get("partition", ""), error=outcome.get("error", "")
    )
    if not recorded:
        return {"id": job["id"], "status": "lost", "error": "its lease lapsed and another worker took it over"}
    return outcome


def serve(
    store: Store,
    *,
    poll_seconds: float = 2.0,
    exit_when_idle: bool = False,
    lease_seconds: float = LEASE_SECONDS,
    on_job: Callable[[dict[str, str]], None] = lambda outcome: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Run queued jobs until ``should_stop()`` (or, with ``exit_when_idle``, until the queue is empty).

    Returns the number of jobs run. Several workers may serve one store: a claim is exclusive, and a job whose
    worker died is taken over once its lease (``lease_seconds``, kept alive by a heartbeat) lapses.
    """
    worker = f"{socket.gethostname()}:{secrets.token_hex(2)}"
    done = 0
    while not should_stop():
        outcome = run_one(store, worker, lease_seconds=lease_seconds)
        if outcome is None:
            if exit_when_idle:
                break
            time.sleep(poll_seconds)
            continue
        done += 1
        on_job(outcome)
    return done
