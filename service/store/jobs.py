"""The job record in Neo4j: enqueue, claim, heartbeat, finish, cancel, release and read ``(:Job)`` nodes.

A claim is a lease: the dispatcher holds the job until ``lease_until`` and extends it with :func:`heartbeat_many`
while its tasks run. A job whose dispatcher died stays ``running`` only until its lease lapses; the next
:func:`claim` takes it over and counts the attempt, and after ``max_attempts`` lapsed claims the job is failed as
abandoned. The results a job writes are named by its id; :func:`written_results` finds them for a rerun.
"""

from __future__ import annotations

import secrets
from typing import Any

from neuronmap.cypher import Store
from neuronmap.options import JOB_LEASE_SECONDS
from neuronmap.results import Rows

LEASE_SECONDS = JOB_LEASE_SECONDS  # how long a claim holds without a heartbeat
MAX_ATTEMPTS = 3  # claims a job may have before a lapsed lease fails it


def new_job_id() -> str:
    return f"job-{secrets.token_hex(4)}"


def enqueue(store: Store, model: str, config_json: str, *, kind: str = "cluster", sweep: str = "") -> str:
    """Queue a job with its settings as JSON; returns the job's id."""
    job_id = new_job_id()
    store.run("jobs.enqueue", id=job_id, kind=kind, model=model, config=config_json, sweep=sweep)
    return job_id


def claim(
    store: Store, worker: str, *, lease_seconds: float = LEASE_SECONDS, max_attempts: int = MAX_ATTEMPTS
) -> dict[str, Any] | None:
    """Claim the oldest queued job, or a running one whose lease lapsed, for this dispatcher (exclusively).

    First fails the lapsed jobs that have had ``max_attempts`` claims. Returns the job (``id``, ``kind``, ``model``,
    ``config``, ``attempts``: this claim's number), or None when there is nothing to claim.
    """
    store.run("jobs.abandon", max_attempts=max_attempts)
    claimed = store.run("jobs.claim", worker=worker, lease_seconds=float(lease_seconds), max_attempts=max_attempts)
    return claimed[0] if claimed else None


def heartbeat(store: Store, job_id: str, worker: str, *, lease_seconds: float = LEASE_SECONDS) -> bool:
    """Extend the dispatcher's lease on a running job; False when it no longer holds it."""
    return bool(store.run("jobs.heartbeat", id=job_id, worker=worker, lease_seconds=float(lease_seconds)))


def heartbeat_many(
    store: Store, job_ids: list[str], worker: str, *, lease_seconds: float = LEASE_SECONDS
) -> dict[str, bool]:
    """Extend the leases of the jobs the dispatcher holds; {id: cancel asked} for those it still holds."""
    rows = store.run("jobs.heartbeat_many", ids=job_ids, worker=worker, lease_seconds=float(lease_seconds))
    return {row["id"]: bool(row["cancel"]) for row in rows}


def finish(
    store: Store,
    job_id: str,
    worker: str,
    *,
    status: str = "",
    result: str = "",
    partition: str = "",
    error: str = "",
    outcome: str = "",
) -> bool:
    """Record a job's outcome: done with what it wrote, failed with its error, or cancelled.

    ``status`` defaults to failed when there is an error, else done. False when the dispatcher no longer holds the
    job (its lease lapsed and another one reclaimed it): the outcome is not recorded.
    """
    rows = store.run(
        "jobs.finish",
        id=job_id,
        worker=worker,
        status=status or ("failed" if error else "done"),
        result=result or partition,
        partition=partition,
        error=error[:1000],
        outcome=outcome,
    )
    return bool(rows)


def cancel(store: Store, job_id: str) -> str | None:
    """Cancel a queued job, or ask the dispatcher of a running one to stop it; the job's status after (``cancelled``,
    ``cancelling``, or the finished status unchanged), None for an unknown id."""
    rows = store.run("jobs.cancel", id=job_id)
    return str(rows[0]["status"]) if rows else None


def release(store: Store, job_ids: list[str], worker: str) -> list[str]:
    """Put jobs this dispatcher holds back in the queue (it is stopping); the ids released."""
    return [row["id"] for row in store.run("jobs.release", ids=job_ids, worker=worker)]


def task_started(store: Store, job_id: str, task: str) -> int:
    """A task says where it runs (``host:pid``); returns how many times the job's task has started."""
    rows = store.run("jobs.task_started", id=job_id, task=task)
    return int(rows[0]["runs"]) if rows else 0


def written_results(store: Store, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Which of these partition or assessment ids are stored: {id: the stored properties}."""
    return {row["id"]: dict(row["props"]) for row in store.run("jobs.written_results", ids=ids)}


def show(store: Store, job_ids: list[str]) -> list[dict[str, Any]]:
    """The jobs' records (for `jobs show` and the futures that wait on them)."""
    return store.run("jobs.show", ids=job_ids)


def list_jobs(store: Store, limit: int = 50, *, sweep: str = "") -> Rows:
    """Jobs, newest first (or one sweep's), with their status and what each wrote."""
    return Rows(store.run("jobs.list", limit=limit, sweep=sweep), query="jobs_list")
