"""Library query latency on a store of many 400k-edge models, with each query's plan checked for scans.

    python bench/queries.py               # 20 models of 784-256×4-10 (~400k edges each): a few minutes of ingest
    python bench/queries.py --models 3    # fewer models, for a smoke run

Each model gets a K=12 partition with planted modules (written with writeback.write_partition); the benchmarked
model gets a second, random one for compare_partitions. Every library query then runs on that one model: two
warm-up runs, then the median and minimum of --runs runs, both for the bare named query (store.run with resolved
ids) and through the API a user calls (run_library_query with partition='latest', which adds the resolution).
The baseline is what a user would do without the library: pull the model and compute module_cohesion's figures
with numpy (pull_subgraph + read_labels + one sparse product), in the same run on the same store.

The plan column lists the operators that find the first nodes (seeks or scans) in the query's EXPLAIN plan;
'ok' means no AllNodesScan or NodeByLabelScan.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import neo4j
import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table

from neuronmap.cypher import Store, catalog
from neuronmap.loaders.ingest.weights import ingest, model_status
from neuronmap.loaders.records import EdgeBlock, LayerRecord, ModelGraph, ModelMeta
from neuronmap.service.config import Settings
from neuronmap.service.errors import AssessmentNotFoundError
from neuronmap.service.store import local_neo4j
from neuronmap.service.store.library import library_queries, resolve_partition, run_library_query
from neuronmap.service.store.open import connect
from neuronmap.service.store.pull import pull_subgraph
from neuronmap.service.store.writeback import read_labels, write_partition

SIZES = [784, 256, 256, 256, 256, 10]
K = 12
SCANS = {"AllNodesScan", "NodeByLabelScan"}


def planted_mlp(seed: int, sizes: list[int] = SIZES, n_clusters: int = K) -> tuple[ModelGraph, np.ndarray]:
    """tests/loaders/test_ingest.py's layered_graph, with K planted modules (weights inside one ×4)."""
    rng = np.random.default_rng(seed)
    layers = [
        LayerRecord(
            index=i,
            name="input" if i == 0 else f"fc{i}",
            kind="input" if i == 0 else "linear",
            role="input" if i == 0 else ("output" if i == len(sizes) - 1 else "hidden"),
            size=n,
            shape=[n],
        )
        for i, n in enumerate(sizes)
    ]
    labels = np.concatenate([rng.permutation((np.arange(n) * n_clusters) // n) for n in sizes])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    blocks = []
    for i in range(len(sizes) - 1):
        w = rng.normal(size=(sizes[i], sizes[i + 1]))
        src, dst = labels[offsets[i] : offsets[i + 1]], labels[offsets[i + 1] : offsets[i + 2]]
        w[src[:, None] == dst[None, :]] *= 4.0
        blocks.append(EdgeBlock(i, i + 1, w))
    biases = [None] + [rng.normal(size=n) for n in sizes[1:]]
    return ModelGraph(layers, blocks, biases, ModelMeta(arch="bench", source="generated")), labels


def timed(fn: Callable[[], Any], runs: int, warmup: int = 2) -> tuple[float, float, Any]:
    """(median, min) seconds over ``runs`` calls after ``warmup`` calls, and the last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), result


def plan_operators(plan: dict[str, Any]) -> set[str]:
    found = {plan["operatorType"].split("@")[0]}
    for child in plan.get("children", []):
        found |= plan_operators(child)
    return found


def cohesion_by_pull(store: Store, model: str, partition: str) -> np.ndarray:
    """The baseline: module_cohesion's vol and cut per cluster, from a pulled model and numpy."""
    sub = pull_subgraph(store, model)
    labels = read_labels(store, partition, sub.ordinals.size)
    keep = np.flatnonzero(labels >= 0)
    a = sub.graph.to_scipy()[keep][:, keep]
    onehot = sp.csr_matrix((np.ones(keep.size), (np.arange(keep.size), labels[keep])))
    vol = onehot.T @ np.asarray(a.sum(axis=1)).ravel()
    assoc = (onehot.T @ a @ onehot).diagonal()
    return np.stack([vol, vol - assoc])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=20, help="models in the store (default 20)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per query, after two warm-up runs")
    args = parser.parse_args()
    environ = dict(os.environ)
    environ.setdefault("NEURONMAP_NEO4J_HEAP", "2g")
    environ.setdefault("NEURONMAP_NEO4J_PAGECACHE", "2g")
    with local_neo4j.running(Settings.from_env(environ)) as connection:
        password = connection.password.get_secret_value()
        with (
            connect(connection) as store,
            neo4j.GraphDatabase.driver(
                connection.uri, auth=(connection.user, password), notifications_min_severity="OFF"
            ) as driver,
        ):
            start = time.perf_counter()
            names = []
            for i in range(args.models):
                name = f"bench-q-{i:02d}"
                names.append(name)
                if model_status(store, name) == "ready" and store.run("admin.list_partitions", model=name):
                    continue  # a persistent store (NEO4J_URI) from an earlier run
                graph, labels = planted_mlp(seed=i)
                ingest(store, name, graph, replace=True)
                write_partition(
                    store,
                    name,
                    f"{name}/planted",
                    {"k": K, "method": "planted", "ncut": 0.0},
                    labels,
                    np.arange(graph.n_neurons),
                )
                print(
                    f"ingested {name} ({graph.n_edges:,} edges), {time.perf_counter() - start:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
            model = names[len(names) // 2]
            planted = f"{model}/planted"
            if not store.run("library.partition_stats", partition=f"{model}/random"):
                rng = np.random.default_rng(1)
                write_partition(
                    store,
                    model,
                    f"{model}/random",
                    {"k": K, "method": "random", "ncut": 0.0},
                    rng.integers(0, K, sum(SIZES)),
                    np.arange(sum(SIZES)),
                )
            latest = resolve_partition(store, model, "latest")
            cases: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {  # name → (query params, API params)
                "compare_models": ({"models": names}, {}),
                "compare_partitions": (
                    {"partition_a": planted, "partition_b": f"{model}/random"},
                    {"model": model, "partition_a": planted, "partition_b": "latest"},
                ),
                "neuron": (
                    {"model": model, "layer": "fc2", "unit": 7, "partition": latest},
                    {"model": model, "layer": "fc2", "unit": 7},
                ),
            }
            rows = []
            for query in library_queries():
                bare, api = cases.get(query.name, ({"partition": latest}, {"model": model}))
                named = catalog.get(query.query)
                full = named.check(bare)
                with driver.session(database=store.database) as session:
                    plan = session.run("EXPLAIN " + named.text, full).consume().plan
                operators = plan_operators(plan)
                access = sorted(op for op in operators if op.endswith(("Seek", "Scan")))
                median, fastest, result = timed(
                    lambda query=query, bare=bare: store.run(query.query, **bare), args.runs
                )
                try:
                    api_median, _, _ = timed(
                        lambda query=query, api=api: run_library_query(store, query.name, **api), args.runs
                    )
                except AssessmentNotFoundError:  # the bench store holds no assessments, and the API says so
                    api_median = float("nan")
                rows.append(
                    [
                        query.name,
                        len(result),
                        median * 1e3,
                        fastest * 1e3,
                        api_median * 1e3,
                        ", ".join(access),
                        "ok" if not operators & SCANS else "SCAN",
                    ]
                )
            base_median, base_fastest, _ = timed(
                lambda: cohesion_by_pull(store, model, planted), max(3, args.runs // 2), warmup=1
            )
            rows.append(["baseline: pull + numpy cohesion", K, base_median * 1e3, base_fastest * 1e3, "", "", ""])
            cohesion = next(row for row in rows if row[0] == "module_cohesion")
            counts = store.run("admin.model_counts", model=model)[0]
            print(
                f"\n{args.models} models of {'-'.join(map(str, SIZES))} ({counts['n_edges']:,} edges each) in the "
                f"store; queries on {model}; median of {args.runs} runs after 2 warm-ups.\n"
            )
            print_table(["query", "rows", "median ms", "min ms", "API median ms", "plan: node access", "scans"], rows)
            print(f"\nmodule_cohesion in Cypher vs pull + numpy: {base_median / cohesion[2] * 1e3:.1f}× faster")


if __name__ == "__main__":
    main()
