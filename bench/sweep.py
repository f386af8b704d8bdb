"""Sweep speed: many models × K through `neuronmap sweep` on a local Ray vs a sequential loop of `run_clustering`
calls, same run, same store, same machine; then the dispatcher's per-job overhead.

    python bench/sweep.py                          # 4 models × K {8, 12} × 10 shuffles (a few minutes on 2 cores)
    python bench/sweep.py --models 12 --shuffles 50   # the issue's workload (784-256×4-10 MLPs)

Rows:

- ``loop``: ``run_clustering`` for every (model, K), one after another, with torch's threads on every core.
- ``ray sweep``: the same jobs queued as one sweep and run by a dispatcher on a local Ray with one CPU per task
  (``--null-chunk`` shuffles per task: a null bigger than that is split over workers). Timed from the queueing to
  the last record; Ray's own start-up is on its own line.
- ``overhead``: ``--trivial`` jobs that do almost nothing (K=2 on a 3-layer 16-unit model) through the
  dispatcher with one job in flight, minus the same calls in a loop, per job: claim, submit, the task's store
  look-ups, the outcome's record, polling.

Every partition of the sweep is checked against the loop's: the same n-cut and null (same seeds).
The paper estimate at the end uses the measured per-task time and the store's write time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table

from neuronmap.examples.nets import mlp_4x256
from neuronmap.loaders import graph_from_module
from neuronmap.loaders.ingest.weights import ingest
from neuronmap.service.config import Settings
from neuronmap.service.dispatch import Dispatcher, DispatcherConfig, queue_sweep, ray_session, run_sweep
from neuronmap.service.runs import ClusterConfig, run_clustering
from neuronmap.service.store import local_neo4j
from neuronmap.service.store.open import connect


def tiny() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--ks", default="8,12")
    parser.add_argument("--shuffles", type=int, default=10)
    parser.add_argument("--null-chunk", type=int, default=100)
    parser.add_argument("--trivial", type=int, default=40)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    tag = f"bench-sweep-{os.getpid()}"
    names = [f"{tag}-{i:02d}" for i in range(args.models)]
    small = [f"{tag}-tiny"]
    environ = {**os.environ, "NEURONMAP_NEO4J_HEAP": os.environ.get("NEURONMAP_NEO4J_HEAP", "2g")}
    with local_neo4j.running(Settings.from_env(environ)) as connection, connect(connection) as store:
        try:
            start = time.perf_counter()
            for i, name in enumerate(names):
                torch.manual_seed(i)
                ingest(store, name, graph_from_module(mlp_4x256()))
            torch.manual_seed(0)
            ingest(store, small[0], graph_from_module(tiny()))
            print(f"ingested {args.models} models of 784-256×4-10 in {time.perf_counter() - start:.1f} s")
            measure(store, connection, names, small, ks, args)
        finally:
            for name in names + small:
                store.run("admin.delete_model", model=name)


def measure(store, connection, names, small, ks, args) -> None:  # type: ignore[no-untyped-def]
    jobs = [(m, k) for m in names for k in ks]
    configs = {k: ClusterConfig(n_clusters=k, n_shuffles=args.shuffles, random_state=0, device="cpu") for k in ks}
    start = time.perf_counter()
    loop = {(m, k): run_clustering(store, m, configs[k]) for m, k in jobs}
    t_loop = time.perf_counter() - start
    per_task = t_loop / len(jobs)  # with every core on one task
    write = sum(r.write_seconds for r in loop.values()) / len(jobs)

    start = time.perf_counter()
    with ray_session(num_cpus=args.cpus):
        t_ray_start = time.perf_counter() - start
        config = DispatcherConfig(poll_seconds=0.05, null_chunk=args.null_chunk)
        start = time.perf_counter()
        _, futures = queue_sweep(store, names, ks, [0], [args.shuffles], ClusterConfig(device="cpu"))
        dispatcher = Dispatcher(store, connection, config, name="bench")
        records = run_sweep(store, futures, lambda stop: dispatcher.run(stop), poll=0.05)
        t_ray = time.perf_counter() - start
        results = [f.result() for f in futures]
        t_overhead = overhead(store, connection, small[0], args.trivial)
    bad = [f.id for f in futures if records[f.id]["status"] != "done"]
    assert not bad, f"jobs not done: {bad}"
    same = all(
        abs(r.ncut - loop[(r.model, r.k)].ncut) < 1e-9 and r.null_ncuts == loop[(r.model, r.k)].null_ncuts
        for r in results
    )
    print(f"\n{len(jobs)} jobs ({args.models} models × K {ks} × {args.shuffles} shuffles), {args.cpus} CPUs\n")
    print_table(
        ["path", "seconds", "per job (s)", "vs loop"],
        [
            ["loop (run_clustering)", t_loop, per_task, 1.0],
            ["ray sweep", t_ray, t_ray / len(jobs), t_ray / t_loop],
            [
                "ray sweep + Ray start-up",
                t_ray + t_ray_start,
                (t_ray + t_ray_start) / len(jobs),
                (t_ray + t_ray_start) / t_loop,
            ],
        ],
    )
    print(f"\nRay start-up: {t_ray_start:.1f} s; same n-cuts and nulls as the loop: {same}")
    print(f"per-job overhead of the dispatcher: {t_overhead * 1000:.0f} ms")
    print(f"store write per partition: {write * 1000:.0f} ms")
    print("\nOn paper, N workers of one CPU each (or one GPU each, with the GPU's per-task time):")
    single = per_task * args.cpus  # a task's time on one CPU, if the loop's threads scaled perfectly
    for n in (2, 8, 32, 128):
        compute = len(jobs) * single / n
        floor = len(jobs) * (t_overhead + write)  # if the dispatcher and the store serialised them
        print(
            f"  N={n:>3}: ≈ {max(compute, floor) + t_ray_start:,.0f} s "
            f"(compute {compute:,.0f} s, store+dispatch floor {floor:,.1f} s)"
        )


def overhead(store, connection, model: str, n: int) -> float:  # type: ignore[no-untyped-def]
    """Seconds per job the dispatcher adds to a trivial job, with one job in flight."""
    config = ClusterConfig(n_clusters=2, device="cpu")
    start = time.perf_counter()
    for seed in range(n):
        run_clustering(store, model, config.model_copy(update={"random_state": seed}))
    t_loop = time.perf_counter() - start
    _, futures = queue_sweep(store, [model], [2], list(range(n)), [0], config)
    dispatcher = Dispatcher(store, connection, DispatcherConfig(poll_seconds=0.05, max_in_flight=1), name="bench-1")
    start = time.perf_counter()
    run_sweep(store, futures, lambda stop: dispatcher.run(stop), poll=0.05)
    t_ray = time.perf_counter() - start
    return max(0.0, (t_ray - t_loop) / n)


if __name__ == "__main__":
    main()
