"""Transformers at GPT-2-small size (methods.md §10): build the top-k virtual graph, ingest, pull, cluster, shuffle.

The model is GPT-2-small shaped (12 blocks, d_model 768, d_mlp 3072) with transformers' own random init, built from
``GPT2Config()`` in a child process and saved with ``save_pretrained`` (no download). Each step prints its seconds
and the process's peak RSS so far; the clustering's baseline is scikit-learn's ``SpectralClustering`` on the same
sparse graph (the pulled CSR adjacency, ``affinity="precomputed"``, the same K and k-means restarts), measured in the
same run, and the ratio of the two n-cuts is printed (target: within 1%).

    python bench/transformers.py                   # GPT-2 small, top-32, 20 shuffles (~15 min on 2 loaded cores)
    python bench/transformers.py --blocks 4 --d-mlp 1024 --shuffles 2     # a quick look
    python bench/transformers.py --no-store        # build and cluster in memory only

Targets (issue 14): build < 30 s and < 6 GB; ingest ≥ 200k edges/s; pull ≥ 1.5M edges/s; K=12 < 20 s. Ingest
and pull are measured twice: into packed EDGE_BLOCK chunks only (``--no-relationships``; the pull always reads the
chunks), and with a WEIGHT relationship per edge beside them (the default), whose rate is the server's.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

# This file shares its name with the library: take its folder off the path (Python put it first), so that
# `import transformers` finds Hugging Face's, and load bench/common.py by its path instead.
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
_spec = importlib.util.spec_from_file_location("bench_common", HERE / "common.py")
assert _spec is not None and _spec.loader is not None
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

import numpy as np  # noqa: E402

from neuronmap.cypher import Store  # noqa: E402
from neuronmap.loaders.ingest.weights import delete_model, ingest  # noqa: E402
from neuronmap.loaders.records import ModelGraph  # noqa: E402
from neuronmap.loaders.transformers import build_graph, read_transformer  # noqa: E402
from neuronmap.service.clustering.blockgraph import BlockGraph  # noqa: E402
from neuronmap.service.clustering.clusterability import clusterability  # noqa: E402
from neuronmap.service.clustering.ncut import ncut  # noqa: E402
from neuronmap.service.clustering.spectral import spectral_clustering  # noqa: E402
from neuronmap.service.store.pull import _pull_relationships, pull_subgraph  # noqa: E402

T = TypeVar("T")

bench_store, print_table = common.bench_store, common.print_table

SAVE = """
import sys, torch, transformers
torch.manual_seed(0)
config = transformers.GPT2Config(n_layer={blocks}, n_embd={d_model}, n_inner={d_mlp}, n_head={heads})
transformers.GPT2LMHeadModel(config).save_pretrained(sys.argv[1])
"""

# Paper estimates: (name, blocks, d_model, d_mlp, gated) of models we cannot download here.
ON_PAPER = [("Pythia-1.4b", 24, 2048, 8192, False), ("Llama-2-7B", 32, 4096, 11008, True)]
BYTES_PER_EDGE = 75  # Neo4j: a relationship record with one float property, measured in bench/drop.py
BYTES_PER_GATED_EDGE = 75 + 2 * 17  # plus v_gate and v_up
BYTES_PER_PACKED_EDGE = 16  # an EDGE_BLOCK chunk: int32 src and dst, float64 w


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


class _Rows(list):  # type: ignore[type-arg]
    """The table's rows, each also printed as it is measured, so a run cut short still says what it got."""

    def append(self, row: list[object]) -> None:
        print("  " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row), flush=True)
        super().append(row)


def save_model(args: argparse.Namespace, folder: Path) -> None:
    code = SAVE.format(blocks=args.blocks, d_model=args.d_model, d_mlp=args.d_mlp, heads=max(1, args.d_model // 64))
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True)  # its memory is not ours


def sklearn_ncut(graph: BlockGraph, k: int, n_init: int, seed: int, solver: str) -> tuple[float, float]:
    """Seconds and n-cut of scikit-learn's spectral clustering on the graph's CSR adjacency."""
    from sklearn.cluster import SpectralClustering

    adjacency = graph.to_scipy()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels = SpectralClustering(
            k, affinity="precomputed", eigen_solver=solver, n_init=n_init, random_state=seed
        ).fit_predict(adjacency)
    return time.perf_counter() - start, ncut(adjacency, labels)


def mlp_ingest_rate(store: Store) -> float:
    """The ingest rate of a 784-256x4-10 MLP (400k edges, bench/ingest.py's) on this store at this moment: the
    baseline that says how much of the transformer's rate is the box (its load, its disk) rather than the graph."""
    from torch import nn

    from neuronmap.loaders import graph_from_module

    widths = [784, 256, 256, 256, 256, 10]
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    graph = graph_from_module(nn.Sequential(*layers[:-1]))
    start = time.perf_counter()
    ingest(store, "bench-transformer-baseline", graph, replace=True)
    seconds = time.perf_counter() - start
    delete_model(store, "bench-transformer-baseline")
    return graph.n_edges / seconds


def on_paper(
    per_pair_s: float,
    ingest_rates: tuple[float, float],
    cluster_s_per_edge: float,
    top_k: int,
    measured: tuple[int, int],
) -> None:
    """Edges, Neo4j bytes and times for larger models, scaled from this run's measured per-block-pair costs: the
    build by the flops of one pair (d_mlp · d_model · d_mlp, twice for a gated reader), ingest and clustering by
    the edges (a clustering's products are linear in the edges; the eigensolver's iterations are taken as equal).
    Ingest and bytes are given for the packed chunks alone and with a WEIGHT relationship per edge."""
    d_model0, d_mlp0 = measured
    packed_rate, full_rate = ingest_rates
    rows = []
    for name, blocks, d_model, d_mlp, gated in ON_PAPER:
        pairs = blocks * (blocks - 1) // 2
        edges = pairs * d_mlp * top_k
        flops_ratio = (d_mlp * d_model * d_mlp * (2 if gated else 1)) / (d_mlp0 * d_model0 * d_mlp0)
        build = pairs * per_pair_s * flops_ratio
        nbytes = edges * (BYTES_PER_GATED_EDGE if gated else BYTES_PER_EDGE)
        packed = edges * BYTES_PER_PACKED_EDGE
        rows.append(
            [
                name,
                f"{edges / 1e6:,.0f}M",
                f"{packed / 1e9:,.1f} GB / {(nbytes + packed) / 1e9:,.1f} GB",
                f"{build / 60:,.1f} min",
                f"{edges / packed_rate / 60:,.1f} min / {edges / full_rate / 60:,.0f} min",
                f"{edges * cluster_s_per_edge / 60:,.1f} min",
            ]
        )
    print("\nOn paper, from this run's per-block-pair costs (this box); packed only / with WEIGHT relationships:\n")
    print_table(["model", "edges kept", "Neo4j", "build", "ingest", "one K=12 clustering"], rows)


def timed(step: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = step()
    return value, time.perf_counter() - start


def store_steps(
    store: Store, graph: ModelGraph, rows: list[list[object]], relationships: bool = True
) -> tuple[BlockGraph, float, float]:
    """Ingest and pull both ways: packed chunks only (--no-relationships), then chunks plus a WEIGHT relationship
    per edge (the default), with an MLP ingested into the same store as the box's own rate. Returns the pulled
    graph and the two ingest rates."""
    n_edges = graph.n_edges
    packed, full = "bench-transformer-packed", "bench-transformer"
    for name in (packed, full):
        delete_model(store, name) if store.run("ingest.model_status", model=name) else None
    _, seconds = timed(lambda: ingest(store, packed, graph, relationships=False))
    packed_rate = n_edges / seconds
    rows.append(["ingest --no-relationships (chunks)", seconds, peak_gb(), f"{packed_rate:,.0f} edges/s", "≥ 200k/s"])
    pulled, seconds = timed(lambda: pull_subgraph(store, packed))
    rows.append(["pull (chunks)", seconds, peak_gb(), f"{pulled.n_edges / seconds:,.0f} edges/s", "≥ 1.5M edges/s"])
    pulled, seconds = timed(lambda: pull_subgraph(store, packed))  # the server's plan compiled and cached
    rows.append(["pull again (warm)", seconds, peak_gb(), f"{pulled.n_edges / seconds:,.0f} edges/s", ""])
    if not relationships:
        delete_model(store, packed)
        return pulled.graph, packed_rate, float("nan")
    _, seconds = timed(lambda: ingest(store, full, graph))
    full_rate = n_edges / seconds
    rows.append(["ingest (chunks + WEIGHT relationships)", seconds, peak_gb(), f"{full_rate:,.0f} edges/s", "report"])
    mlp_rate = mlp_ingest_rate(store)
    rows.append(
        [
            "ingest an MLP (the same store, now)",
            float("nan"),
            peak_gb(),
            f"{mlp_rate:,.0f} edges/s; transformer / MLP {full_rate / mlp_rate:.2f}",
            "the box's own rate",
        ]
    )
    size = len(pulled.ordinals)
    (src, _, _), seconds = timed(lambda: _pull_relationships(store, full, 0, size, workers=2))
    rows.append(["pull from the relationships", seconds, peak_gb(), f"{src.size / seconds:,.0f} edges/s", "baseline"])
    for name in (packed, full):
        delete_model(store, name)
    return pulled.graph, packed_rate, full_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--d-mlp", type=int, default=3072)
    parser.add_argument("--top-k", type=int, default=32)
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--shuffles", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-store", action="store_true", help="build and cluster in memory, no Neo4j")
    parser.add_argument(
        "--no-relationships", action="store_true", help="skip the ingest with WEIGHT relationships (minutes)"
    )
    parser.add_argument("--sklearn-solver", default="arpack", choices=["arpack", "lobpcg", "amg"])
    args = parser.parse_args()

    rows: list[list[object]] = _Rows()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2-shaped"
        save_model(args, folder)
        start = time.perf_counter()
        weights, files = read_transformer(folder)
        read = time.perf_counter() - start
        start = time.perf_counter()
        graph = build_graph(weights, top_k=args.top_k)
        build = time.perf_counter() - start
        del weights, files
    pairs = args.blocks * (args.blocks - 1) // 2
    n_edges = graph.n_edges
    print(f"{args.blocks} blocks × {args.d_mlp} neurons, top-{args.top_k}: {n_edges:,} edges in {pairs} block pairs")
    rows.append(["read the directory (transformers)", read, peak_gb(), "float32 weights", ""])
    rows.append(["build the edges", build, peak_gb(), f"{n_edges / build:,.0f} edges/s", "< 30 s, < 6 GB"])

    if args.no_store:
        blocks = BlockGraph.from_model_graph(graph)
        ingest_rate = relationship_rate = float("nan")
    else:
        with bench_store() as store:
            blocks, ingest_rate, relationship_rate = store_steps(store, graph, rows, not args.no_relationships)
            del graph
    start = time.perf_counter()
    result = spectral_clustering(blocks, args.k, random_state=args.seed)
    cluster_seconds = seconds = time.perf_counter() - start
    ours = ncut(blocks, result.labels)
    print(f"  one K={args.k} clustering: {seconds:.1f} s, n-cut {ours:.4g}; scikit-learn next", flush=True)
    sk_seconds, sk_ncut = sklearn_ncut(blocks, args.k, result.n_init, args.seed, args.sklearn_solver)
    rows.append(
        [
            f"one K={args.k} clustering",
            seconds,
            peak_gb(),
            f"n-cut {ours:.4g} vs sklearn {sk_ncut:.4g} (ratio {ours / sk_ncut:.4f}); sklearn {sk_seconds:.1f} s",
            "< 20 s, n-cut within 1%",
        ]
    )
    if args.shuffles:
        start = time.perf_counter()
        null = clusterability(blocks, args.k, args.shuffles, method="layer_nonzero", random_state=args.seed)
        seconds = time.perf_counter() - start
        rows.append(
            [f"{args.shuffles} shuffles (layer_nonzero)", seconds, peak_gb(), f"p = {null.p_value:.3g}", "report"]
        )
    print()
    print_table(["step", "seconds", "peak RSS GB", "result", "target"], rows)
    on_paper(
        build / pairs,
        (ingest_rate, relationship_rate),
        cluster_seconds / n_edges,
        args.top_k,
        (args.d_model, args.d_mlp),
    )
    print(f"\nsklearn: SpectralClustering(eigen_solver={args.sklearn_solver!r}); numpy {np.__version__}.")


if __name__ == "__main__":
    main()
