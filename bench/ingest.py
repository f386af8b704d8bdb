"""Ingest speed: neuronmap's fat-row batches vs a naive one-row-per-edge UNWIND … MATCH … MATCH … CREATE.

    python bench/ingest.py            # the 784-256×4-10 MLP (~400k edges) and a conv net (~1.6M channel edges)
    python bench/ingest.py --quick    # smaller nets, for a smoke run

Both paths run against the same server in the same run; the naive baseline is timed on a prefix of the edges
(it is the slow one) and reported as edges/s. Each path is first run untimed (``--warmup`` full ingests, and the
naive path on a prefix), so that the server's JIT has compiled both plans before the clock starts: a fresh JVM is
2-3× slower for its first million rows and keeps speeding up over the next few, and a long-running server is
what users ingest into. Then the two paths alternate for ``--rounds`` rounds and each reports its median.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_store, print_table, timer

from neuronmap.loaders import graph_from_module
from neuronmap.loaders.ingest.weights import edge_batches, ingest, neuron_rows
from neuronmap.loaders.records import ModelGraph


def mlp(widths: list[int]) -> nn.Module:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def conv_net(channels: list[int]) -> nn.Module:
    layers: list[nn.Module] = []
    for a, b in zip(channels[:-1], channels[1:]):
        layers += [nn.Conv2d(a, b, 3, padding=1), nn.ReLU()]
    net = nn.Sequential(*layers[:-1])
    net.input_shape = (channels[0], 8, 8)
    return net


def naive_ingest(store, model: str, graph: ModelGraph, max_edges: int, batch: int = 10_000) -> int:
    store.run(
        "ingest.begin_model",
        model=model,
        meta=graph.meta.model_dump(),
        layers=[layer.model_dump() for layer in graph.layers],
    )
    store.run_batched("ingest.create_neurons", neuron_rows(graph), 1, model=model)
    rows, sent = [], 0
    for src_layer, dst_layer, fat_rows, _ in edge_batches(graph, batch):
        for fat in fat_rows:
            for dst, w in zip(fat["dst"], fat["w"]):
                rows.append({"src_layer": src_layer, "src": fat["src"], "dst_layer": dst_layer, "dst": dst, "w": w})
        while len(rows) >= batch and sent < max_edges:
            store.run("bench.naive_create_edges", model=model, rows=rows[:batch])
            rows, sent = rows[batch:], sent + batch
        if sent >= max_edges:
            break
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--naive-edges", type=int, default=150_000, help="edges timed for the naive baseline")
    parser.add_argument("--warmup", type=int, default=2, help="untimed ingests of each model before timing")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds; each path's median")
    args = parser.parse_args()
    torch.manual_seed(0)
    cases = [
        ("mlp 784-256x4-10", mlp([784, 256, 256, 256, 256, 10] if not args.quick else [784, 64, 10])),
        ("conv 3-256-1024-1024-256", conv_net([3, 256, 1024, 1024, 256] if not args.quick else [3, 64, 128])),
    ]
    naive_edges = args.naive_edges if not args.quick else 20_000
    results = []
    with bench_store() as store:
        for label, module in cases:
            graph = graph_from_module(module)
            name = f"bench-{secrets.token_hex(3)}"
            for _ in range(args.warmup):
                ingest(store, name + "-warm", graph)
                store.run("admin.delete_model", model=name + "-warm")
            naive_ingest(store, name + "-warm", graph, min(naive_edges, graph.n_edges) // 2)
            store.run("admin.delete_model", model=name + "-warm")
            fast_rates, slow_rates = [], []
            for _ in range(args.rounds):
                with timer() as fast:
                    written = ingest(store, name, graph)
                store.run("admin.delete_model", model=name)
                with timer() as slow:
                    sent = naive_ingest(store, name + "-naive", graph, min(naive_edges, graph.n_edges))
                store.run("admin.delete_model", model=name + "-naive")
                fast_rates.append(written / fast[0])
                slow_rates.append(sent / slow[0])
            fast_rate, slow_rate = statistics.median(fast_rates), statistics.median(slow_rates)
            results.append(
                (
                    label,
                    f"{graph.n_neurons:,}",
                    f"{written:,}",
                    written / fast_rate,
                    fast_rate,
                    slow_rate,
                    f"{fast_rate / slow_rate:.1f}x",
                )
            )
    print_table(["model", "neurons", "edges", "neuronmap s", "neuronmap edges/s", "naive edges/s", "ratio"], results)


if __name__ == "__main__":
    main()
