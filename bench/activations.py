"""Activation-graph speed: Spearman correlations of the 784-256×4-10 MLP's 1,024 hidden units over 10,000
inputs, neuronmap (streamed; the Gram matrix of the ranks in exact int8 products on the CPU, float64 elsewhere)
vs ``scipy.stats.spearmanr`` on the full activation matrix, same run, same machine.

    python bench/activations.py              # 10,000 inputs, CPU
    python bench/activations.py --quick      # 2,000 inputs
    python bench/activations.py --device cuda

Rows:

- ``spearman, from activations``: both sides get the same recorded (10,000 × 1,024) float32 matrix (scipy only
  its varying columns, since it returns NaN for constant ones; neuronmap finds and excludes those itself).
- ``spearman, float64 Gram``: the same with the int8 Gram switched off (``INT8_GRAM = False``): the path a GPU,
  or a torch without a working ``torch._int_mm``, takes. The header line says which path the other rows took.
- ``spearman, end to end``: neuronmap records with forward hooks in batches and streams them into the
  correlation (``compute_correlations``); the baseline runs the same batched forward pass into one matrix and
  calls scipy.
- ``pearson, from activations``: neuronmap's streamed Chan/Welford update vs ``numpy.corrcoef``, for reference.

Each timing is the median of ``--repeats`` runs after one untimed warm-up, the two sides alternating so that
load from other processes hits both alike. "max |Δr|" compares the correlation matrices entry by entry.
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

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table

from neuronmap.examples.nets import mlp_4x256
from neuronmap.loaders.activations import ActivationRecorder, compute_correlations, correlate, gram


def alternate(ours: Callable[[], Any], theirs: Callable[[], Any], repeats: int) -> tuple[float, float, Any, Any]:
    """Median seconds of each side, run alternately after a warm-up, and each side's last result."""
    a, b = ours(), theirs()  # warm-up (allocator, thread pools, BLAS)
    ta, tb = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        a = ours()
        ta.append(time.perf_counter() - start)
        start = time.perf_counter()
        b = theirs()
        tb.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb), a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="2,000 inputs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1_000, help="inputs per forward pass")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    n_inputs = 2_000 if args.quick else args.inputs

    torch.manual_seed(0)
    net = mlp_4x256()  # Glorot-uniform weights, as the reference initialises
    inputs = torch.rand(n_inputs, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # MNIST-like [0, 1] pixels
    recorder = ActivationRecorder(net, device=args.device)
    activations = torch.cat(list(recorder.batches(inputs, args.batch_size))).cpu()  # (n_inputs, 1,024) float32
    varying = (activations.amax(0) > activations.amin(0)).numpy()
    matrix = activations.numpy()
    kept = np.ascontiguousarray(matrix[:, varying])
    int8 = gram._use_int8(torch.device(args.device))
    print(
        f"mlp_4x256 on {args.device}: {recorder.n_units:,} hidden units ({int((~varying).sum())} constant, "
        f"excluded), {n_inputs:,} inputs, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
        f"Spearman Gram {'int8 (torch._int_mm)' if int8 else 'float64'}, "
        f"load average {os.getloadavg()[0]:.1f} at the start\n"
    )

    rows = []
    ours, theirs, result, reference = alternate(
        lambda: correlate(activations, method="spearman", device=args.device),
        lambda: stats.spearmanr(kept).statistic,
        args.repeats,
    )
    rows.append(
        [
            "spearman, from activations",
            ours,
            theirs,
            f"{theirs / ours:.1f}×",
            f"{np.abs(result.r.numpy() - reference).max():.1e}",
        ]
    )

    gram.INT8_GRAM = False
    ours, theirs, result, reference = alternate(
        lambda: correlate(activations, method="spearman", device=args.device),
        lambda: stats.spearmanr(kept).statistic,
        args.repeats,
    )
    gram.INT8_GRAM = None
    rows.append(
        [
            "spearman, from activations, float64 Gram (int8 off)",
            ours,
            theirs,
            f"{theirs / ours:.1f}×",
            f"{np.abs(result.r.numpy() - reference).max():.1e}",
        ]
    )

    def baseline_end_to_end() -> np.ndarray:
        values = torch.cat(list(recorder.batches(inputs, args.batch_size))).cpu().numpy()
        return stats.spearmanr(values[:, (values.max(0) > values.min(0))]).statistic

    ours, theirs, result, reference = alternate(
        lambda: compute_correlations(net, inputs, method="spearman", batch_size=args.batch_size, device=args.device),
        baseline_end_to_end,
        max(1, args.repeats // 2),
    )
    rows.append(
        [
            "spearman, end to end (forward + correlate)",
            ours,
            theirs,
            f"{theirs / ours:.1f}×",
            f"{np.abs(result.r.numpy() - reference).max():.1e}",
        ]
    )

    ours, theirs, result, reference = alternate(
        lambda: correlate(activations, method="pearson", device=args.device),
        lambda: np.corrcoef(kept, rowvar=False),
        args.repeats,
    )
    rows.append(
        [
            "pearson, from activations (vs numpy.corrcoef)",
            ours,
            theirs,
            f"{theirs / ours:.1f}×",
            f"{np.abs(result.r.numpy() - reference).max():.1e}",
        ]
    )

    print_table(
        ["case", "neuronmap s", "baseline s", "speed-up", "max |Δr|"],
        [[label, f"{a:.3f}", f"{b:.3f}", ratio, diff] for label, a, b, ratio, diff in rows],
    )


if __name__ == "__main__":
    main()
