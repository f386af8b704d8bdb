"""The job queue's record in Neo4j: enqueue, claim, heartbeat, finish and list ``(:Job)`` nodes.

A claim is a lease: the worker holds the job until ``lease_until`` and extends it with :func:`heartbeat` while it
runs. A job whose worker died stays ``running`` only until its lease lapses; the next :func:`claim` takes it over
and counts the attempt, and after ``max_attempts`` lapsed claims the job is failed as abandoned.
"""

from __future__ import annotations

import secrets
from typing import Any

from neuronmap.cypher import Store
from neuronmap.options import JOB_LEASE_SECONDS
from neuronmap.results import Rows

LEASE_SECONDS = JOB_LEASE_SECONDS  # how long a claim holds without a heartbeat
MAX_ATTEMPTS = 3  # claims a job may have before a lapsed lease fails it


def enqueue(store: Store, model: str, config_json: str) -> str:
    """Queue a clustering job with its config as JSON; returns the job's id."""
    job_id = f"job-{secrets.token_hex(4)}"
    store.run("jobs.enqueue", id=job_id, model=model, config=config_json)
    return job_id


def claim(
    store: Store, worker: str, *, lease_seconds: float = LEASE_SECONDS, max_attempts: int = MAX_ATTEMPTS
) -> dict[str, Any] | None:
    """Claim the oldest queued job, or a running one whose lease lapsed, for this worker (exclusively).

    First fails the lapsed jobs that have had ``max_attempts`` claims. Returns the job (``id``, ``model``,
    ``config``, ``attempts``: this claim's number), or None when there is nothing to claim.
    """
    store.run("jobs.abandon", max_attempts=max_attempts)
    claimed = store.run("jobs.claim", worker=worker, lease_seconds=float(lease_seconds), max_attempts=max_attempts)
    return claimed[0] if claimed else None


def heartbeat(store: Store, job_id: str, worker: str, *, lease_seconds: float = LEASE_SECONDS) -> bool:
    """Extend the worker's lease on a running job; False when the worker no longer holds it."""
    return bool(store.run("jobs.heartbeat", id=job_id, worker=worker, lease_seconds=float(lease_seconds)))


def finish(store: Store, job_id: str, worker: str, *, partition: str = "", error: str = "") -> bool:
    """Record a job's outcome: done with the partition it wrote, or failed with its error.

    False when the worker no longer holds the job (its lease lapsed and another worker reclaimed it): the outcome is
    not recorded.
    """
    rows = store.run(
        "jobs.finish",
        id=job_id,
        worker=worker,
        status="failed" if error else "done",
        partition=partition,
        error=error[:1000],
    )
    return bool(rows)


def list_jobs(store: Store, limit: int = 50) -> Rows:
    """Jobs, newest first, with their status and the partition each wrote."""
    return Rows(store.run("jobs.list", limit=limit), query="jobs_list")
