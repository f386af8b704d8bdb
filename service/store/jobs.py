"""The job queue's record in Neo4j: enqueue, claim, finish and list ``(:Job)`` nodes."""

from __future__ import annotations

import secrets
from typing import Any

from neuronmap.cypher import Store
from neuronmap.results import Rows


def enqueue(store: Store, model: str, config_json: str) -> str:
    """Queue a clustering job with its config as JSON; returns the job's id."""
    job_id = f"job-{secrets.token_hex(4)}"
    store.run("jobs.enqueue", id=job_id, model=model, config=config_json)
    return job_id


def claim(store: Store, worker: str) -> dict[str, Any] | None:
    """Claim the oldest queued job for this worker (exclusively); None when the queue is empty."""
    claimed = store.run("jobs.claim", worker=worker)
    return claimed[0] if claimed else None


def finish(store: Store, job_id: str, *, partition: str = "", error: str = "") -> None:
    """Record a job's outcome: done with the partition it wrote, or failed with its error."""
    store.run("jobs.finish", id=job_id, status="failed" if error else "done", partition=partition, error=error[:1000])


def list_jobs(store: Store, limit: int = 50) -> Rows:
    """Jobs, newest first, with their status and the partition each wrote."""
    return Rows(store.run("jobs.list", limit=limit), query="jobs_list")
