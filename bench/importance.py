"""Claim: the lesion test of every sub-cluster of a K=12 partition of the 784-256×4-10 MLP, with 200 random sets
each over 2,000 inputs, is ≥ 20× faster with neuronmap's batched lesions than with one forward pass per lesion.

The network is ``neuronmap.examples.nets:mlp_4x256`` with random Glorot weights; the inputs are 2,000 standard-normal
(1, 28, 28) images; the labels are the network's own predictions with 25 % replaced by random classes, so accuracy
is about 0.78 and lesions change it. The partition is neuronmap's spectral clustering (K=12) of the network's |W|
graph; every (cluster, hidden layer) with units is a sub-cluster, each with 200 random same-size sets of its layer
(none for a sub-cluster that is its whole layer, as ``assess_importance`` does).

Both sides compute the same thing, the correct predictions per class of every lesion:

- **batched** (``lesion_correct_counts``): the intact network runs once per data batch; each layer's lesions then
  run as masks over an expanded batch, only from the lesioned layer on (``"mask"``), or through the next Linear's
  columns (``"auto"``, the default: ``"delta"`` for sets of at most half their layer, the complement form for
  larger ones);
  where the compiled kernels of ``neuronmap.service.assessment.kernels`` can be built (a C compiler and AVX-512),
  lesions of the last two hidden layers run in them: one fused pass per input and lesion that skips the layer's
  zeros; with AMX, the layer before those too, its dense hidden product on bfloat16 tiles with a certified fallback
  to float32; the run also times ``"auto"`` with ``native=False`` (torch only);
- **one at a time** (``one_at_a_time_correct_counts(how="weights")``): what the reference did — zero the lesion's
  incoming weights and bias, run all 2,000 inputs through the network in one batch, restore the weights.

The one-at-a-time path is timed on ``--sample`` lesions spread over all layers and extrapolated to all of them (its
cost per lesion does not depend on the layer or the set); the output says so. The sampled lesions' counts are
checked against the batched ones. The four paths are timed in ``--rounds`` alternating rounds and each keeps its
best time, because a shared machine's load drifts during a run.

    python bench/importance.py            # the claim's setting
    python bench/importance.py --quick    # 20 random sets, 500 inputs
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from neuronmap.examples.nets import mlp_4x256
from neuronmap.loaders import graph_from_module
from neuronmap.service.assessment.common import subcluster_generators
from neuronmap.service.assessment.kernels import lesion_kernels
from neuronmap.service.assessment.layout import SubClusterRef
from neuronmap.service.assessment.lesion import draw_random_sets, lesion_correct_counts, one_at_a_time_correct_counts
from neuronmap.service.assessment.network import LesionNetwork
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.clustering.spectral import spectral_clustering

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table


def partition(module: torch.nn.Module, k: int, seed: int) -> tuple[list[SubClusterRef], dict[int, np.ndarray]]:
    """Spectral clustering of the network's |W| graph into hidden-layer sub-clusters and per-layer pools."""
    graph = graph_from_module(module)
    sizes = [layer.size for layer in graph.layers]
    blocks = [(b.src_layer, b.dst_layer, torch.from_numpy(np.abs(b.weight))) for b in graph.blocks]
    labels = spectral_clustering(BlockGraph(sizes, blocks), k, random_state=seed, device="cpu").labels.numpy()
    subclusters, pools = [], {}
    for layer in graph.layers:
        if layer.role != "hidden":
            continue
        here = labels[graph.offsets[layer.index] : graph.offsets[layer.index + 1]]
        pools[layer.index] = np.flatnonzero(here >= 0)
        for cluster in np.unique(here[here >= 0]):
            subclusters.append(
                SubClusterRef(
                    cluster=int(cluster),
                    layer=layer.index,
                    layer_name=layer.name,
                    units=tuple(np.flatnonzero(here == cluster).tolist()),
                    pool_size=int(pools[layer.index].size),
                )
            )
    return subclusters, pools


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sets", type=int, default=200, help="random sets per sub-cluster")
    parser.add_argument("--inputs", type=int, default=2000)
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--sample", type=int, default=48, help="lesions the one-at-a-time path is timed on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds; each path's best counts")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="20 random sets, 500 inputs, 16 sampled lesions")
    args = parser.parse_args()
    if args.quick:
        args.sets, args.inputs, args.sample = 20, 500, 16
    return args


def build_lesions(
    subclusters: list[SubClusterRef], pools: dict[int, np.ndarray], sets: int, seed: int
) -> list[dict[int, np.ndarray]]:
    """Every sub-cluster, each followed by its random same-size sets, as ``assess_importance`` draws them."""
    lesions: list[dict[int, np.ndarray]] = []
    for sub, rng in zip(subclusters, subcluster_generators(seed, len(subclusters))):
        lesions.append({sub.layer: np.asarray(sub.units)})
        if not sub.complete:  # as assess_importance: a whole layer has no random set but itself
            lesions.extend({sub.layer: row} for row in draw_random_sets(pools[sub.layer], sub.size, sets, rng))
    return lesions


def time_paths(
    net: LesionNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    lesions: list[dict[int, np.ndarray]],
    sample: np.ndarray,
    rounds: int,
) -> tuple[dict[str, float], dict[str, np.ndarray], np.ndarray]:
    """Best seconds of each path (one at a time: per lesion), the batched counts, and the sampled baseline counts.

    Rounds alternate the four paths, keeping each one's best time: the machine is shared, and its load drifts within
    a run; the minimum is the least disturbed measurement of each.
    """
    best = {"auto": np.inf, "torch": np.inf, "mask": np.inf, "one": np.inf}
    counts: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for method in ("auto", "torch", "mask"):
            start = time.perf_counter()
            result = lesion_correct_counts(
                net,
                x,
                y,
                10,
                lesions,
                method="auto" if method == "torch" else method,
                batch_size=x.shape[0],
                native=method != "torch",
            )
            best[method] = min(best[method], time.perf_counter() - start)
            assert method not in counts or np.array_equal(counts[method], result)
            counts[method] = result
        start = time.perf_counter()
        baseline = one_at_a_time_correct_counts(
            net, x, y, 10, [lesions[i] for i in sample], how="weights", batch_size=x.shape[0]
        )
        best["one"] = min(best["one"], (time.perf_counter() - start) / sample.size)
    return best, counts, baseline


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    module = mlp_4x256()
    subclusters, pools = partition(module, args.k, args.seed)
    net = LesionNetwork(module, device=args.device)
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.inputs, 1, 28, 28, generator=generator)
    with torch.no_grad():
        y = net.run(x.to(net.device)).argmax(dim=1).cpu()
    noisy = torch.rand(args.inputs, generator=generator) < 0.25
    y[noisy] = torch.randint(0, 10, (int(noisy.sum()),), generator=generator)

    lesions = build_lesions(subclusters, pools, args.sets, args.seed)
    per_layer = {layer: sum(1 for s in subclusters if s.layer == layer) for layer in pools}
    sizes = sorted(s.size for s in subclusters)
    print(
        f"MLP 784-256×4-10, random Glorot weights; K={args.k}: {len(subclusters)} hidden-layer sub-clusters "
        f"(per layer {per_layer}, sizes {sizes[0]}–{sizes[-1]}), {args.sets} random sets each → "
        f"{len(lesions):,} lesions over {args.inputs:,} inputs; torch threads={torch.get_num_threads()}, "
        f"device={net.device}\n"
    )

    lesion_correct_counts(net, x[:50], y[:50], 10, lesions[:50])  # warm-up
    sample = np.linspace(0, len(lesions) - 1, min(args.sample, len(lesions))).round().astype(int)
    load_before = os.getloadavg()[0]
    best, counts, baseline = time_paths(net, x, y, lesions, sample, args.rounds)
    per_lesion = best["one"]
    one_at_a_time = per_lesion * len(lesions)
    timings = {"auto": best["auto"], "torch": best["torch"], "mask": best["mask"]}
    exact = np.array_equal(baseline, counts["mask"][sample])
    flips = int(np.abs(counts["auto"] - counts["mask"]).sum())
    print(
        f"one-at-a-time counts equal the batched 'mask' counts on the {sample.size} sampled lesions: {exact}; "
        f"'auto' (delta) vs 'mask': {flips} correct predictions differ in {counts['mask'].sum():,} "
        "(float rounding)"
    )
    kernels = lesion_kernels()
    state = (
        "unavailable (torch only)"
        if kernels is None
        else "in use, with AMX for the layer two before the last hidden one"
        if kernels.amx
        else "in use, without AMX (torch for the layer two before the last hidden one)"
    )
    print(
        f"compiled lesion kernels: {state}; "
        f"'auto' vs torch-only 'auto': {int(np.abs(counts['auto'] - counts['torch']).sum())} correct predictions "
        "differ"
    )
    print(
        f"best of {args.rounds} alternating rounds; 1-min load average {load_before:.1f} → "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n"
    )

    accuracy = counts["mask"][0].sum() / args.inputs
    rows = [
        [
            "neuronmap batched, auto (delta / complement form)",
            f"{timings['auto']:.1f}",
            f"{1000 * timings['auto'] / len(lesions):.2f}",
            f"{one_at_a_time / timings['auto']:.1f}×",
            "measured",
        ],
        [
            "neuronmap batched, auto on torch only (native=False)",
            f"{timings['torch']:.1f}",
            f"{1000 * timings['torch'] / len(lesions):.2f}",
            f"{one_at_a_time / timings['torch']:.1f}×",
            "measured",
        ],
        [
            "neuronmap batched, mask",
            f"{timings['mask']:.1f}",
            f"{1000 * timings['mask'] / len(lesions):.2f}",
            f"{one_at_a_time / timings['mask']:.1f}×",
            "measured",
        ],
        [
            "one lesion at a time (zero weights, forward, restore)",
            f"{one_at_a_time:.1f}",
            f"{1000 * per_lesion:.2f}",
            "1.0×",
            f"{sample.size} of {len(lesions):,} lesions timed, ×{len(lesions) / sample.size:.0f} extrapolated",
        ],
    ]
    print_table(["path", "seconds", "ms per lesion", "speed-up vs one at a time", "timing"], rows)
    print(
        f"\nfirst sub-cluster lesioned: accuracy {accuracy:.3f} (intact "
        f"{float((net.run(x.to(net.device)).argmax(1).cpu() == y).float().mean()):.3f})"
    )


if __name__ == "__main__":
    main()
