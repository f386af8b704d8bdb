"""The job record in Neo4j: claims are exclusive leases, lapsed ones are taken over and counted, and a job that
keeps losing its dispatcher fails as abandoned (the store side of `neuronmap serve`; Ray's side is in
test_dispatch)."""

from __future__ import annotations

import time

import pytest

from neuronmap.service.runs import ClusterConfig
from neuronmap.service.store import jobs

CONFIG = ClusterConfig(n_clusters=3).model_dump_json()


@pytest.fixture(autouse=True)
def empty_queue(store) -> None:
    """Jobs other tests left queued would be claimed first: cancel them (tests run one at a time)."""
    for row in jobs.list_jobs(store, 10_000):
        if row["status"] == "queued":
            jobs.cancel(store, row["id"])


def mine(store, job: str) -> dict:
    return jobs.show(store, [job])[0]


def test_a_job_whose_dispatcher_died_is_reclaimed_once_its_lease_lapses(store, model_id):
    job = jobs.enqueue(store, model_id, CONFIG, kind="cluster")
    claimed = jobs.claim(store, "dead-dispatcher", lease_seconds=30.0)
    assert claimed is not None and claimed["id"] == job and claimed["attempts"] == 1 and claimed["kind"] == "cluster"
    assert jobs.claim(store, "live-dispatcher", lease_seconds=30.0) is None  # the lease holds
    assert jobs.heartbeat(store, job, "dead-dispatcher", lease_seconds=0.5)  # its last beat; then it dies
    time.sleep(1.0)
    again = jobs.claim(store, "live-dispatcher", lease_seconds=30.0)
    assert again is not None and again["id"] == job and again["attempts"] == 2
    assert jobs.finish(store, job, "live-dispatcher", result="p", partition="p")
    row = mine(store, job)
    assert row["status"] == "done" and row["worker"] == "live-dispatcher" and row["result"] == "p"
    # The dead dispatcher, had it only been slow, can no longer record an outcome over the live one's.
    assert not jobs.finish(store, job, "dead-dispatcher", error="late")
    assert not jobs.heartbeat(store, job, "dead-dispatcher")
    assert mine(store, job)["status"] == "done"


def test_a_heartbeat_keeps_the_lease_and_a_job_that_keeps_losing_its_dispatcher_fails(store, model_id):
    job = jobs.enqueue(store, model_id, CONFIG)
    assert jobs.claim(store, "disp-a", lease_seconds=1.0)["id"] == job
    assert jobs.heartbeat_many(store, [job, "job-none"], "disp-a", lease_seconds=30.0) == {job: False}
    time.sleep(1.5)
    assert jobs.claim(store, "disp-b", lease_seconds=1.0) is None  # the heartbeat extended a's lease
    assert jobs.heartbeat(store, job, "disp-a", lease_seconds=0.5)
    time.sleep(1.0)
    assert jobs.claim(store, "disp-b", lease_seconds=0.5, max_attempts=2)["attempts"] == 2  # a died
    assert jobs.heartbeat_many(store, [job], "disp-a") == {}  # a, back, learns it lost the job
    time.sleep(1.0)
    assert jobs.claim(store, "disp-c", lease_seconds=0.5, max_attempts=2) is None  # b died too: abandoned
    row = mine(store, job)
    assert row["status"] == "failed" and "abandoned" in row["error"] and row["attempts"] == 2


def test_cancel_and_release(store, model_id):
    queued = jobs.enqueue(store, model_id, CONFIG)
    assert jobs.cancel(store, queued) == "cancelled" and mine(store, queued)["status"] == "cancelled"
    assert jobs.cancel(store, queued) == "cancelled"  # a finished job stays as it is
    assert jobs.cancel(store, "job-none") is None
    running = jobs.enqueue(store, model_id, CONFIG)
    assert jobs.claim(store, "disp", lease_seconds=30.0)["id"] == running
    assert jobs.cancel(store, running) == "cancelling"
    assert jobs.heartbeat_many(store, [running], "disp") == {running: True}  # the dispatcher hears it
    assert jobs.release(store, [running], "other") == []  # only the holder puts a job back
    assert jobs.release(store, [running], "disp") == [running]
    assert mine(store, running)["status"] == "queued"
    assert jobs.cancel(store, running) == "cancelled"
