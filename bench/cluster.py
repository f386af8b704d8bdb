"""Claim: one spectral clustering (K=12) with neuronmap is ≥ 5× faster than the faster of sklearn's
SpectralClustering(eigen_solver="arpack") and ("lobpcg") on the graphs below, at equal n-cut (±1%).

Graphs (|Glorot-uniform| weights; with ``--deltas`` 0.6 the reference's clusterable initialisation with 12 planted
modules, with 1.0 no structure at all, the harder case for the eigensolvers):

(a) MLP 784-256-256-256-256-10: 1,818 neurons, ~0.4M edges (dense blocks);
(b) 784-1200-1200-1200-600 pruned to 22%: 4,984 neurons, ~1.0M edges;
(c) 768-3072-768-3072-768 (a transformer MLP stack): 8,448 neurons, ~9.4M edges (dense blocks).

Both sides get the same graph with isolated neurons already dropped (none here) and the same number of k-means
restarts; sklearn gets a CSR adjacency built beforehand (not timed), neuronmap the BlockGraph. Seconds are the best
of ``--repeat`` runs for neuronmap and of ``--sk-repeat`` runs for each sklearn solver (a solver stops repeating once
its runs have taken ``--sk-budget`` seconds, so the slow arpack runs on (c) are timed once). The runs alternate,
neuronmap then each solver, round by round, so a change of load on the machine hits both sides alike.

    python bench/cluster.py            # (a), (b), (c)
    python bench/cluster.py --quick    # (a) and (b), sklearn once
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.clustering.ncut import ncut
from neuronmap.service.clustering.spectral import reference_n_init, spectral_clustering

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import planted_block_graph, print_table

GRAPHS = {
    "a": ("MLP 784-256x4-10", [784, 256, 256, 256, 256, 10], 1.0),
    "b": ("784-1200x3-600 @22%", [784, 1200, 1200, 1200, 600], 0.22),
    "c": ("768-3072-768-3072-768", [768, 3072, 768, 3072, 768], 1.0),
}


def layered(sizes: list[int], seed: int, density: float, n_modules: int = 12, delta: float = 0.6) -> BlockGraph:
    """float32 planted-module blocks with an optional random pruning mask (see common.planted_block_graph)."""
    return planted_block_graph(sizes, seed, n_modules=n_modules, delta=delta, density=density, dtype=np.float32)


def alternating_best(runs: dict[str, tuple[int, Callable[[], Any]]], budget: float) -> dict[str, tuple[float, Any]]:
    """Best seconds and last output of each named run, taken in rounds (each run once per round, while it has
    repeats left and has not yet spent ``budget`` seconds in all)."""
    best = {name: (math.inf, None) for name in runs}
    spent = dict.fromkeys(runs, 0.0)
    for round_ in range(max(repeat for repeat, _ in runs.values())):
        for name, (repeat, run) in runs.items():
            if round_ >= repeat or (round_ > 0 and spent[name] >= budget):
                continue
            start = time.perf_counter()
            out = run()
            seconds = time.perf_counter() - start
            spent[name] += seconds
            best[name] = (min(best[name][0], seconds), out)
    return best


def sklearn_labels(adjacency: Any, k: int, solver: str, n_init: int, seed: int) -> np.ndarray:
    """The reference's clustering: sklearn's SpectralClustering on the precomputed adjacency."""
    from sklearn.cluster import SpectralClustering  # imported when a run needs it: the bench starts faster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lobpcg's "not reaching the requested tolerance"
        return (
            SpectralClustering(k, affinity="precomputed", eigen_solver=solver, n_init=n_init, random_state=seed)
            .fit(adjacency)
            .labels_
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", default=None, help="which of a,b,c (default all; a,b with --quick)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--n-init", type=int, default=10, help="k-means restarts on both sides (sklearn's default)")
    parser.add_argument("--parity", action="store_true", help="the reference's restarts (25, or 100 above 2000)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sk-repeat", type=int, default=None, help="default: as --repeat (1 with --quick)")
    parser.add_argument(
        "--sk-budget",
        type=float,
        default=10.0,
        help="seconds after which a solver is not repeated (its best so far stands)",
    )
    parser.add_argument("--solvers", default="arpack,lobpcg")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--deltas", default="0.6,1.0", help="module strengths δ (weights across modules ×δ; 1.0 = unstructured)"
    )
    args = parser.parse_args()

    names = (args.graphs or ("a,b" if args.quick else "a,b,c")).split(",")
    deltas = [float(v) for v in (("0.6" if args.quick else args.deltas).split(","))]
    solvers = [s for s in args.solvers.split(",") if s]
    sk_repeat = args.sk_repeat if args.sk_repeat is not None else (1 if args.quick else args.repeat)
    print(
        f"K={args.k}, torch threads={torch.get_num_threads()}, device={args.device}, "
        f"k-means restarts {'as the reference' if args.parity else args.n_init} on both sides, "
        f"best of {args.repeat} (neuronmap) and {sk_repeat} (each sklearn solver, fewer past {args.sk_budget:g} s), "
        "alternating\n"
    )
    spectral_clustering(layered([50, 40, 30], 0, 1.0), 3, random_state=0, device=args.device)  # warm-up
    rows = []
    for key, delta in [(key, delta) for delta in deltas for key in names]:
        title, sizes, density = GRAPHS[key]
        graph = layered(sizes, args.seed + ord(key), density, delta=delta)
        n_init = reference_n_init(graph.n_nodes) if args.parity else args.n_init
        adjacency = graph.to_scipy().astype(np.float64)

        runs: dict[str, tuple[int, Callable[[], Any]]] = {
            "ours": (
                args.repeat,
                functools.partial(
                    spectral_clustering, graph, args.k, n_init=n_init, random_state=args.seed, device=args.device
                ),
            )
        }
        runs.update(
            {
                solver: (sk_repeat, functools.partial(sklearn_labels, adjacency, args.k, solver, n_init, args.seed))
                for solver in solvers
            }
        )
        timed = alternating_best(runs, args.sk_budget)
        ours_s, ours = timed["ours"]
        ours_ncut = ncut(graph, ours.labels)
        theirs = {solver: (timed[solver][0], ncut(graph, timed[solver][1])) for solver in solvers}
        fastest = min(theirs, key=lambda s: theirs[s][0]) if theirs else None
        row = [
            f"({key}) {title}, δ={delta:g}",
            f"{graph.n_nodes:,}",
            f"{graph.n_edges:,}",
            f"{ours_s:.3f}",
            *(f"{theirs[s][0]:.2f}" for s in solvers),
            f"{theirs[fastest][0] / ours_s:.1f}× vs {fastest}" if fastest else "",
            f"{ours_ncut:.4f}",
            *(f"{theirs[s][1]:.4f}" for s in solvers),
            f"{100 * (ours_ncut / min(v[1] for v in theirs.values()) - 1):+.2f}%" if theirs else "",
            f"{ours.eigen_solver}/{ours.operator}/{ours.dtype}, eig {ours.timings['eigen']:.3f}s, "
            f"k-means {ours.timings['kmeans']:.3f}s",
        ]
        rows.append(row)
    print_table(
        [
            "graph",
            "neurons",
            "edges",
            "neuronmap s",
            *(f"sklearn {s} s" for s in solvers),
            "speed-up vs faster sklearn",
            "n-cut neuronmap",
            *(f"n-cut {s}" for s in solvers),
            "Δ n-cut vs best sklearn",
            "neuronmap path",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
