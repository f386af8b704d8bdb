"""The long-running service: claim a queued clustering job, run the pipeline, record the outcome, repeat."""

from __future__ import annotations

import secrets
import socket
import time
from typing import Callable

from neuronmap.cypher import Store
from neuronmap.errors import NeuronmapError
from neuronmap.service.runs import ClusterConfig, run_clustering


def enqueue(store: Store, model: str, config: ClusterConfig) -> str:
    """Queue a clustering job; returns its id."""
    job_id = f"job-{secrets.token_hex(4)}"
    store.run("jobs.enqueue", id=job_id, model=model, config=config.model_dump_json())
    return job_id


def run_one(store: Store, worker: str) -> dict[str, str] | None:
    """Claim and run the oldest queued job; None when the queue is empty."""
    claimed = store.run("jobs.claim", worker=worker)
    if not claimed:
        return None
    job = claimed[0]
    try:
        config = ClusterConfig.model_validate_json(job["config"])
        result = run_clustering(store, job["model"], config)
    except (NeuronmapError, ValueError) as error:  # the job's fault: record it, go on
        store.run("jobs.finish", id=job["id"], status="failed", partition="", error=str(error)[:1000])
        return {"id": job["id"], "status": "failed", "error": str(error)}
    store.run("jobs.finish", id=job["id"], status="done", partition=result.id, error="")
    return {"id": job["id"], "status": "done", "partition": result.id}


def serve(store: Store, *, poll_seconds: float = 2.0, exit_when_idle: bool = False,
          on_job: Callable[[dict[str, str]], None] = lambda outcome: None,
          should_stop: Callable[[], bool] = lambda: False) -> int:
    """Run queued jobs until ``should_stop()`` (or, with ``exit_when_idle``, until the queue is empty).

    Returns the number of jobs run. Several workers may serve one store: a claim is exclusive.
    """
    worker = f"{socket.gethostname()}:{secrets.token_hex(2)}"
    done = 0
    while not should_stop():
        outcome = run_one(store, worker)
        if outcome is None:
            if exit_when_idle:
                break
            time.sleep(poll_seconds)
            continue
        done += 1
        on_job(outcome)
    return done
