"""Drop and replace at scale: ten 784-1024×4-10 MLPs (3,958,784 edges each) in one store, on the default heap.

    python bench/drop.py                       # 10 models of 3.96M edges, heap 1g, page cache 512m (the defaults)
    python bench/drop.py --models 2 --widths 784,512,512,10 --heap 512m     # a smoke run

Every model is ingested, then each is replaced (``ingest(..., replace=True)``: marked 'deleting', its
relationships deleted ``--delete-batch`` per transaction, then written again), then each is dropped. After
every step the store is counted from the graph (``admin.model_counts``) and must hold exactly what it should.
Meanwhile a sampler reads Neo4j's own estimate of each running transaction's heap (``SHOW TRANSACTIONS``) every
0.2 s, so the table shows the largest write and delete transaction next to the server's transaction-memory limit
(70% of the heap). The store's size on disk, the transaction logs and the heap in use after a full GC are measured
with all the models in place. The server is a fresh private one (its own folder and port), started and stopped by
this script, so the figures do not depend on what else a user's store holds.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table

from neuronmap.loaders.ingest.weights import DELETE_BATCH, delete_model, ingest, model_counts
from neuronmap.loaders.records import EdgeBlock, LayerRecord, ModelGraph, ModelMeta
from neuronmap.service.config import Settings
from neuronmap.service.store import local_neo4j
from neuronmap.service.store.open import connect


def mlp_graph(widths: list[int], seed: int) -> ModelGraph:
    rng = np.random.default_rng(seed)
    layers = [
        LayerRecord(
            index=i,
            name="input" if i == 0 else f"fc{i}",
            kind="input" if i == 0 else "linear",
            role="input" if i == 0 else ("output" if i == len(widths) - 1 else "hidden"),
            size=n,
            shape=[n],
        )
        for i, n in enumerate(widths)
    ]
    blocks = [EdgeBlock(i, i + 1, rng.normal(size=(widths[i], widths[i + 1]))) for i in range(len(widths) - 1)]
    biases = [None] + [rng.normal(size=n) for n in widths[1:]]
    return ModelGraph(layers, blocks, biases, ModelMeta(arch="bench", source="bench/drop.py"))


class Sampler(threading.Thread):
    """The largest heap estimate seen per named query, from SHOW TRANSACTIONS every ``every`` seconds."""

    def __init__(self, store, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.store, self.every = store, every
        self.peak: dict[str, int] = defaultdict(int)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            try:
                rows = self.store.run("admin.transaction_memory")
            except Exception:  # noqa: BLE001 - a missed sample is just a missed sample
                continue
            for row in rows:
                if row["query"] and row["query"] != "admin.transaction_memory":
                    self.peak[row["query"]] = max(self.peak[row["query"]], int(row["heap"] or 0))


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def heap_after_gc(pid: int) -> int:
    """Bytes of Java heap in use right after a full GC (jcmd GC.run, then GC.heap_info)."""
    subprocess.run(["jcmd", str(pid), "GC.run"], capture_output=True, check=False)
    info = subprocess.run(["jcmd", str(pid), "GC.heap_info"], capture_output=True, text=True, check=False).stdout
    used = sum(int(k) for k in re.findall(r"(?:PSYoungGen|ParOldGen)\s+total \d+K, used (\d+)K", info))
    return used * 1024


def check(store, model: str, graph: ModelGraph | None) -> None:
    counts = model_counts(store, model)
    expected = (
        {"n_layers": 0, "n_neurons": 0, "n_edges": 0}
        if graph is None
        else {"n_layers": len(graph.layers), "n_neurons": graph.n_neurons, "n_edges": graph.n_edges}
    )
    if counts != expected:
        raise SystemExit(f"{model}: the store holds {counts}, expected {expected}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--widths", default="784,1024,1024,1024,1024,10")
    parser.add_argument("--heap", default="1g")
    parser.add_argument("--pagecache", default="512m")
    parser.add_argument("--delete-batch", type=int, default=DELETE_BATCH)
    parser.add_argument("--root", default=None, help="the server's folder (default: a temporary one)")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    settings = Settings.from_env()
    scratch = tempfile.TemporaryDirectory(prefix="neuronmap-bench-drop-", dir=args.root)
    root = Path(scratch.name)
    server = local_neo4j.LocalServer(
        settings.home, root, port=local_neo4j.free_port(), heap=args.heap, pagecache=args.pagecache
    )
    server.start(exit_with_parent=True)
    status = server.status()
    assert status.pid is not None
    try:
        with connect(server.connection()) as store:
            sampler = Sampler(store)
            sampler.start()
            names = [f"mlp-{i}" for i in range(args.models)]
            graphs = {name: mlp_graph(widths, seed=i) for i, name in enumerate(names)}
            edges = graphs[names[0]].n_edges
            times: dict[str, dict[str, float]] = defaultdict(dict)
            for name in names:
                start = time.perf_counter()
                ingest(store, name, graphs[name])
                times[name]["ingest"] = time.perf_counter() - start
                check(store, name, graphs[name])
                print(f"ingested {name}: {edges:,} edges in {times[name]['ingest']:.0f} s", flush=True)
            store_bytes = du(root / "data" / "databases" / "neo4j")
            log_bytes = du(root / "data" / "transactions" / "neo4j")
            heap_full = heap_after_gc(status.pid)
            for i, name in enumerate(names):
                graphs[name] = mlp_graph(widths, seed=1000 + i)
                start = time.perf_counter()
                ingest(store, name, graphs[name], replace=True, delete_batch=args.delete_batch)
                times[name]["replace"] = time.perf_counter() - start
                check(store, name, graphs[name])
                print(f"replaced {name} in {times[name]['replace']:.0f} s", flush=True)
            for name in names:
                start = time.perf_counter()
                delete_model(store, name, batch_size=args.delete_batch)
                times[name]["drop"] = time.perf_counter() - start
                check(store, name, None)
                for other in names[names.index(name) + 1 :]:
                    check(store, other, graphs[other])  # the others are untouched
                print(f"dropped {name} in {times[name]['drop']:.0f} s", flush=True)
            sampler.done.set()
            heap_empty = heap_after_gc(status.pid)
    finally:
        server.stop()
        scratch.cleanup()
    print()
    print(
        f"{args.models} models of {'-'.join(map(str, widths))} ({edges:,} edges each), heap {args.heap}, "
        f"page cache {args.pagecache}, delete batch {args.delete_batch:,} relationships"
    )
    print()
    print_table(
        ["model", "edges", "ingest s", "replace s", "drop s"],
        [[n, f"{edges:,}", times[n]["ingest"], times[n]["replace"], times[n]["drop"]] for n in names],
    )
    total_edges = edges * args.models
    mib = 1024 * 1024
    print()
    print(
        f"store files with all {args.models} models: {store_bytes / mib:,.0f} MiB "
        f"= {store_bytes / mib / (total_edges / 1e6):,.0f} MiB per 1M edges"
    )
    print(f"transaction logs by then: {log_bytes / mib:,.0f} MiB")
    print(f"heap in use after a full GC: {heap_full / mib:,.0f} MiB with all models, {heap_empty / mib:,.0f} MiB empty")
    print("largest transaction heap seen (SHOW TRANSACTIONS, sampled every 0.2 s):")
    for query, peak in sorted(sampler.peak.items(), key=lambda item: -item[1]):
        print(f"  {query:32s} {peak / mib:8.1f} MiB")


if __name__ == "__main__":
    main()
