"""Pull speed: edges/s from Neo4j into a BlockGraph (tensors), vs one Bolt record per edge, same run.

    python bench/pull.py             # the 784-256×4-10 MLP (~400k edges) and a conv net (~2.1M channel edges)
    python bench/pull.py --quick

Each pull is first run untimed (``--warmup`` times for neuronmap's path, once for the slow baseline, whose single
run is already ~10⁶ records), so that the server's JIT has compiled the plan: a fresh JVM answers the first few
pulls 2-3× slower, and a long-running server is what users pull from. Then each is timed as the median of
--repeats runs.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_store, print_table
from ingest import conv_net, mlp

from neuronmap.loaders import graph_from_module
from neuronmap.loaders.ingest.weights import ingest
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.store.pull import pull_subgraph


def naive_pull(store, name: str, sizes: list[int]) -> int:
    rows = store.run("bench.naive_pull_edges", model=name)
    src = np.fromiter((r["src"] for r in rows), np.int64, len(rows))
    dst = np.fromiter((r["dst"] for r in rows), np.int64, len(rows))
    w = np.fromiter((r["w"] for r in rows), np.float64, len(rows))
    BlockGraph.from_edges(sizes, src, dst, w)
    return len(rows)


def timed(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5, help="untimed pulls before timing neuronmap's path")
    args = parser.parse_args()
    torch.manual_seed(0)
    cases = [
        ("mlp 784-256x4-10", mlp([784, 256, 256, 256, 256, 10] if not args.quick else [784, 64, 10])),
        ("conv 3-512-1024-1024-512", conv_net([3, 512, 1024, 1024, 512] if not args.quick else [3, 64, 128])),
    ]
    results = []
    with bench_store() as store:
        for label, module in cases:
            graph = graph_from_module(module)
            sizes = [layer.size for layer in graph.layers]
            name = f"bench-{secrets.token_hex(3)}"
            ingest(store, name, graph)
            fast = timed(lambda name=name: pull_subgraph(store, name), args.repeats, args.warmup)
            slow = timed(lambda name=name, sizes=sizes: naive_pull(store, name, sizes), max(1, args.repeats // 3))
            store.run("admin.delete_model", model=name)
            results.append(
                (label, f"{graph.n_edges:,}", fast, graph.n_edges / fast, graph.n_edges / slow, f"{slow / fast:.1f}x")
            )
    print_table(["model", "edges", "neuronmap s", "neuronmap edges/s", "one-record-per-edge edges/s", "ratio"], results)


if __name__ == "__main__":
    main()
