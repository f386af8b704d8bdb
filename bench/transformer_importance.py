"""Transformer importance (methods.md §11.2): every ablation of a K=12 partition of a 4-block GPT-2 (d_model 256,
d_mlp 1024), 200 random sets per sub-cluster, on held-out contexts of 128 tokens (256 in the issue's setting),
batched (``ablation_scores``: the intact model once per batch of contexts, then only the blocks after each ablation
site, many masks stacked per pass) against one ablation per full forward pass (``one_at_a_time_scores``).

The model has random weights (``transformers``' init, vocabulary 512); the partition assigns each block's neurons
to 12 clusters at random, since the timing does not depend on which neurons a set holds, only on how many sets
there are and in which block. Both sides are timed per block on evenly spaced samples of its ablations and
extrapolated to all of them; the output says how many. Both compute the same scores, bit for bit (checked on the
one-at-a-time sample). Rounds alternate and each side keeps its best time, because a shared machine's load drifts;
both wall and CPU time are shown, CPU time being the steadier under other processes' load.
"Where the time goes" is each ablation site's cost per ablation: the batched side without the intact pass (each
timed call runs it once, a whole run once per batch of contexts for all its ablations), which is counted once.

    python bench/transformer_importance.py                  # the issue's setting (256 contexts: long on 2 cores)
    python bench/transformer_importance.py --contexts 32    # the same model and plan on fewer contexts
    python bench/transformer_importance.py --quick          # 2 blocks, d_model 64, d_mlp 256, 20 sets, 32 × 32
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
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
    default_rows,
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


def _sample(n: int, size: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, size))})


def _time(run: Callable[[], object]) -> np.ndarray:
    """(wall, CPU) seconds of one call. CPU time (this process's threads) hardly moves with other processes' load,
    which on a shared 2-core machine makes the wall clock drift by 2× within a minute."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return np.array([time.perf_counter() - wall, time.process_time() - cpu])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--contexts", type=int, default=0, help="held-out contexts (0: the setting's)")
    parser.add_argument("--sample", type=int, default=6, help="ablations per block timed one at a time")
    parser.add_argument("--batched-sample", type=int, default=24, help="ablations per block timed batched (0: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="contexts per batch")
    parser.add_argument("--max-rows", type=int, default=0, help="0: by device (default_rows)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    blocks, d_model, d_mlp, n_null, n_ctx, length = (
        (2, 64, 256, 20, 32, 32) if args.quick else (4, 256, 1024, 200, 256, 128)
    )
    n_ctx = args.contexts or n_ctx
    lm = model(blocks, d_model, d_mlp, length, 512).to(args.device)
    sites = mlp_sites(lm)
    ids = torch.randint(0, 512, (n_ctx, length), generator=torch.Generator().manual_seed(1))
    subs, pools, sub_blocks = partition(lm, 12, 0)
    ablations, _ = plan_ablations(subs, sub_blocks, pools, n_null, 0)
    m = len(ablations)
    by_block = [[a for a in ablations if a[0] == b] for b in range(blocks)]
    single_sets = [[rows[i] for i in _sample(len(rows), args.sample)] for rows in by_block]
    batched_sets = [[rows[i] for i in _sample(len(rows), args.batched_sample or len(rows))] for rows in by_block]
    t_means = _time(lambda: mean_activations(lm, sites, ids))
    options = {"means": mean_activations(lm, sites, ids), "batch_size": args.batch_size, "max_rows": args.max_rows}
    ablation_scores(lm, sites, ids, batched_sets[0][:2], **options)  # warm-up: the first passes pay for allocation
    one_at_a_time_scores(lm, sites, ids, single_sets[0][:1], means=options["means"])
    # per block, (wall, CPU) seconds per ablation; the two sides alternate block by block, so they see the same load
    inf = np.array([np.inf, np.inf])
    batched_s, single_s, intact = [inf] * blocks, [inf] * blocks, inf
    for _ in range(args.rounds):
        intact = np.minimum(intact, _time(lambda: intact_scores(lm, ids, batch_size=args.batch_size)))
        for b in range(blocks):
            seconds = _time(lambda b=b: ablation_scores(lm, sites, ids, batched_sets[b], **options))
            # each call ran the intact model once; a whole run does so once for all its ablations
            batched_s[b] = np.minimum(batched_s[b], (seconds - intact) / len(batched_sets[b]))
            seconds = _time(lambda b=b: one_at_a_time_scores(lm, sites, ids, single_sets[b], means=options["means"]))
            single_s[b] = np.minimum(single_s[b], seconds / len(single_sets[b]))
    same = True
    for b in range(blocks):
        check = ablation_scores(lm, sites, ids, single_sets[b], **options)
        single = one_at_a_time_scores(lm, sites, ids, single_sets[b], means=options["means"])
        same &= bool(np.array_equal(check[0], single[0]) and np.array_equal(check[1], single[1]))
    batched_total = intact + sum(len(rows) * t for rows, t in zip(by_block, batched_s))
    single_total = sum(len(rows) * t for rows, t in zip(by_block, single_s))
    max_rows = args.max_rows or default_rows(torch.device(args.device), min(args.batch_size, n_ctx), length)
    print(
        f"{len(subs)} sub-clusters, {m} ablations, {n_ctx} contexts of {length} tokens on {args.device} "
        f"({torch.get_num_threads()} threads, {max_rows} rows per pass); per block, batched timed on "
        f"{len(batched_sets[0])} ablations and one at a time on {len(single_sets[0])}, extrapolated to the block's "
        f"{len(by_block[0])}; best of {args.rounds} rounds; load average {os.getloadavg()[0]:.2f}"
    )
    print_table(
        ["stage", "wall s", "CPU s"],
        [
            ["mean activations (once)", *(f"{v:.2f}" for v in t_means)],
            ["intact scores (once)", *(f"{v:.2f}" for v in intact)],
            ["batched ablations", *(f"{v:.1f}" for v in batched_total)],
            ["one at a time", *(f"{v:.1f}" for v in single_total)],
            ["speed-up", *(f"{v:.2f}×" for v in single_total / batched_total)],
            ["sampled scores equal (bit for bit)", str(same), ""],
        ],
    )
    print("\nWhere the time goes (CPU ms per ablation on all contexts, by ablation site):")
    print_table(
        ["ablation site", "batched", "one at a time", "speed-up"],
        [
            [
                f"block {b}",
                f"{1000 * batched_s[b][1]:.1f}",
                f"{1000 * single_s[b][1]:.1f}",
                f"{single_s[b][1] / batched_s[b][1]:.2f}×",
            ]
            for b in range(blocks)
        ],
    )


if __name__ == "__main__":
    main()
