"""Claim: one spectral clustering (K=12) with neuronmap is ≥ 5× faster than the faster of sklearn's
SpectralClustering(eigen_solver="arpack") and ("lobpcg") on the graphs below, at equal n-cut (±1%).

Graphs (|Glorot-uniform| weights; with ``--deltas`` 0.6 the reference's clusterable initialisation with 12 planted
modules, with 1.0 no structure at all, the harder case for the eigensolvers):

(a) MLP 784-256-256-256-256-10: 1,818 neurons, ~0.4M edges (dense blocks);
(b) 784-1200-1200-1200-600 pruned to 22%: 4,984 neurons, ~1.0M edges;
(c) 768-3072-768-3072-768 (a transformer MLP stack): 8,448 neurons, ~9.4M edges (dense blocks).

Both sides get the same graph with isolated neurons already dropped (none here) and the same number of k-means
restarts; sklearn gets a CSR adjacency built beforehand (not timed), neuronmap the BlockGraph. Seconds are the best
of ``--repeat`` runs for neuronmap and of ``--sk-repeat`` runs for sklearn.

    python bench/cluster.py            # (a), (b), (c)
    python bench/cluster.py --quick    # (a) and (b), sklearn once
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from neuronmap.service.blockgraph import BlockGraph
from neuronmap.service.ncut import ncut
from neuronmap.service.spectral import reference_n_init, spectral_clustering

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import planted_block_graph, print_table  # noqa: E402

GRAPHS = {
    "a": ("MLP 784-256x4-10", [784, 256, 256, 256, 256, 10], 1.0),
    "b": ("784-1200x3-600 @22%", [784, 1200, 1200, 1200, 600], 0.22),
    "c": ("768-3072-768-3072-768", [768, 3072, 768, 3072, 768], 1.0),
}


def layered(sizes: list[int], seed: int, density: float, n_modules: int = 12, delta: float = 0.6) -> BlockGraph:
    """float32 planted-module blocks with an optional random pruning mask (see common.planted_block_graph)."""
    return planted_block_graph(sizes, seed, n_modules=n_modules, delta=delta, density=density, dtype=np.float32)


def best_of(repeat: int, run):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", default=None, help="which of a,b,c (default all; a,b with --quick)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--n-init", type=int, default=10, help="k-means restarts on both sides (sklearn's default)")
    parser.add_argument("--parity", action="store_true", help="the reference's restarts (25, or 100 above 2000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sk-repeat", type=int, default=1)
    parser.add_argument("--solvers", default="arpack,lobpcg")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deltas", default="0.6,1.0",
                        help="module strengths δ (weights across modules ×δ; 1.0 = unstructured)")
    args = parser.parse_args()
    from sklearn.cluster import SpectralClustering

    names = (args.graphs or ("a,b" if args.quick else "a,b,c")).split(",")
    deltas = [float(v) for v in (("0.6" if args.quick else args.deltas).split(","))]
    solvers = [s for s in args.solvers.split(",") if s]
    print(f"K={args.k}, torch threads={torch.get_num_threads()}, device={args.device}, "
          f"k-means restarts {'as the reference' if args.parity else args.n_init} on both sides\n")
    spectral_clustering(layered([50, 40, 30], 0, 1.0), 3, random_state=0, device=args.device)  # warm-up
    rows = []
    for key, delta in [(key, delta) for delta in deltas for key in names]:
        title, sizes, density = GRAPHS[key]
        graph = layered(sizes, args.seed + ord(key), density, delta=delta)
        n_init = reference_n_init(graph.n_nodes) if args.parity else args.n_init
        ours_s, ours = best_of(args.repeat, lambda: spectral_clustering(
            graph, args.k, n_init=n_init, random_state=args.seed, device=args.device))
        ours_ncut = ncut(graph, ours.labels)
        adjacency = graph.to_scipy().astype(np.float64)
        theirs: dict[str, tuple[float, float]] = {}
        for solver in solvers:
            def run(solver: str = solver) -> np.ndarray:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # lobpcg's "not reaching the requested tolerance"
                    return SpectralClustering(args.k, affinity="precomputed", eigen_solver=solver, n_init=n_init,
                                              random_state=args.seed).fit(adjacency).labels_
            seconds, labels = best_of(args.sk_repeat, run)
            theirs[solver] = (seconds, ncut(graph, labels))
        fastest = min(theirs, key=lambda s: theirs[s][0]) if theirs else None
        row = [f"({key}) {title}, δ={delta:g}", f"{graph.n_nodes:,}", f"{graph.n_edges:,}",
               f"{ours_s:.3f}", *(f"{theirs[s][0]:.2f}" for s in solvers),
               f"{theirs[fastest][0] / ours_s:.1f}× vs {fastest}" if fastest else "",
               f"{ours_ncut:.4f}", *(f"{theirs[s][1]:.4f}" for s in solvers),
               f"{100 * (ours_ncut / min(v[1] for v in theirs.values()) - 1):+.2f}%" if theirs else "",
               f"{ours.eigen_solver}/{ours.operator}/{ours.dtype}, eig {ours.timings['eigen']:.3f}s, "
               f"k-means {ours.timings['kmeans']:.3f}s"]
        rows.append(row)
    print_table(["graph", "neurons", "edges", "neuronmap s", *(f"sklearn {s} s" for s in solvers),
                 "speed-up vs faster sklearn", "n-cut neuronmap", *(f"n-cut {s}" for s in solvers),
                 "Δ n-cut vs best sklearn", "neuronmap path"], rows)


if __name__ == "__main__":
    main()
