"""Transformer importance (methods.md §11.2): every ablation of a K=12 partition of a 4-block GPT-2 (d_model 256,
d_mlp 1024), 200 random sets per sub-cluster, on 256 held-out contexts of 128 tokens, batched (many ablation masks
per forward pass, ``ablation_scores``) against one ablation per forward pass (``one_at_a_time_scores``).

The model has random weights (``transformers``' init, vocabulary 512); the partition assigns each block's neurons
to 12 clusters at random, since the timing does not depend on which neurons a set holds, only on how many sets
there are. Both sides run the same forward passes per context, so they compute the same scores (checked on the
sampled ablations). The one-at-a-time side is timed on ``--sample`` ablations and extrapolated; the output says so.
Rounds alternate and each side keeps its best time, because a shared machine's load drifts during a run.

    python bench/transformer_importance.py            # the issue's setting (slow on CPUs: use --device cuda)
    python bench/transformer_importance.py --quick    # 2 blocks, d_model 64, d_mlp 256, 20 sets, 32 contexts of 32
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# bench/transformers.py would shadow the transformers package: import the package before bench/ is on the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from neuronmap.service.assessment.layout import SubClusterRef
from neuronmap.service.assessment.transformer.ablation import (
    ablation_scores,
    intact_scores,
    mean_activations,
    one_at_a_time_scores,
)
from neuronmap.service.assessment.transformer.importance import plan_ablations
from neuronmap.service.assessment.transformer.sites import mlp_sites

sys.path.append(str(HERE))
from common import print_table  # noqa: E402


def model(blocks: int, d_model: int, d_mlp: int, context: int, vocab: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=blocks,
        n_embd=d_model,
        n_head=max(1, d_model // 64),
        n_inner=d_mlp,
        n_positions=context,
        vocab_size=vocab,
    )
    return transformers.GPT2LMHeadModel(config).eval()


def partition(lm: torch.nn.Module, k: int, seed: int) -> tuple[list[SubClusterRef], dict[int, np.ndarray], list[int]]:
    sites = mlp_sites(lm)
    rng = np.random.default_rng(seed)
    subs, pools, blocks = [], {}, []
    for block in range(sites.n_blocks):
        labels = rng.integers(0, k, sites.d_mlp(block))
        pools[block] = np.arange(sites.d_mlp(block))
        for cluster in np.unique(labels):
            units = tuple(int(u) for u in np.flatnonzero(labels == cluster))
            subs.append(
                SubClusterRef(
                    cluster=int(cluster),
                    layer=block,
                    layer_name=sites.weights.blocks[block].path,
                    units=units,
                    pool_size=len(labels),
                )
            )
            blocks.append(block)
    return subs, pools, blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sample", type=int, default=24, help="ablations timed one at a time")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-rows", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    blocks, d_model, d_mlp, n_null, n_ctx, length = (
        (2, 64, 256, 20, 32, 32) if args.quick else (4, 256, 1024, 200, 256, 128)
    )
    lm = model(blocks, d_model, d_mlp, length, 512).to(args.device)
    sites = mlp_sites(lm)
    ids = torch.randint(0, 512, (n_ctx, length), generator=torch.Generator().manual_seed(1))
    subs, pools, sub_blocks = partition(lm, 12, 0)
    ablations, _ = plan_ablations(subs, sub_blocks, pools, n_null, 0)
    sample = [ablations[i] for i in np.linspace(0, len(ablations) - 1, args.sample).astype(int)]
    start = time.perf_counter()
    means = mean_activations(lm, sites, ids)
    t_means = time.perf_counter() - start
    start = time.perf_counter()
    intact_scores(lm, ids)
    t_intact = time.perf_counter() - start
    best_batched, best_single = float("inf"), float("inf")
    for _ in range(args.rounds):
        start = time.perf_counter()
        batched = ablation_scores(lm, sites, ids, ablations, means=means, max_rows=args.max_rows)
        best_batched = min(best_batched, time.perf_counter() - start)
        start = time.perf_counter()
        single = one_at_a_time_scores(lm, sites, ids, sample, means=means)
        best_single = min(best_single, (time.perf_counter() - start) * len(ablations) / len(sample))
    index = {id(a): i for i, a in enumerate(ablations)}
    rows = [index[id(a)] for a in sample]
    same = np.allclose(batched[0][rows], single[0], rtol=1e-5, atol=1e-6)
    print(f"{len(subs)} sub-clusters, {len(ablations)} ablations, {n_ctx} contexts of {length} tokens on {args.device}")
    print_table(
        ["stage", "seconds"],
        [
            ["mean activations (once)", f"{t_means:.2f}"],
            ["intact scores (once)", f"{t_intact:.2f}"],
            ["batched ablations", f"{best_batched:.2f}"],
            [f"one at a time (extrapolated from {len(sample)})", f"{best_single:.2f}"],
            ["speed-up", f"{best_single / best_batched:.2f}×"],
            ["sampled scores equal", str(same)],
        ],
    )


if __name__ == "__main__":
    main()
