"""The long-running service: claim a queued clustering job, run the pipeline, record the outcome, repeat."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable

from neuronmap.cypher import Store
from neuronmap.errors import NeuronmapError
from neuronmap.service.runs import ClusterConfig, run_clustering
from neuronmap.service.store import jobs


def enqueue(store: Store, model: str, config: ClusterConfig) -> str:
    """Queue a clustering job; returns its id."""
    return jobs.enqueue(store, model, config.model_dump_json())


def run_one(store: Store, worker: str) -> dict[str, str] | None:
    """Claim and run the oldest queued job; None when the queue is empty."""
    job = jobs.claim(store, worker)
    if job is None:
        return None
    try:
        config = ClusterConfig.model_validate_json(job["config"])
        result = run_clustering(store, job["model"], config)
    except (NeuronmapError, ValueError) as error:  # the job's fault: record it, go on
        jobs.finish(store, job["id"], error=str(error) or type(error).__name__)
        return {"id": job["id"], "status": "failed", "error": str(error)}
    jobs.finish(store, job["id"], partition=result.id)
    return {"id": job["id"], "status": "done", "partition": result.id}


def serve(
    store: Store,
    *,
    poll_seconds: float = 2.0,
    exit_when_idle: bool = False,
    on_job: Callable[[dict[str, str]], None] = lambda outcome: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
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
