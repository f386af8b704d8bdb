"""How the clustering numerics spend the CPU's threads: intra-op threads for big products, one thread each for
many small independent problems."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from threadpoolctl import threadpool_limits

# Per-thread intra-op settings are an OpenMP property; other ATen backends share one pool (and warn when resized).
_OPENMP = "parallel backend: OpenMP" in torch.__config__.parallel_info()


@contextlib.contextmanager
def _intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave them as they are), then restore them."""
    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _map_independent(fn: Callable[[Any], Any], items: Sequence[Any], device: torch.device,
                     workers: int | None = None) -> list[Any]:
    """``[fn(item) for item in items]``; on a CPU, spread over ``workers`` threads that each run single-threaded.

    Many small independent problems (k-means groups, one small eigenproblem per null) parallelise better across
    problems than inside each op: an op-level thread team waits at a barrier after every one of thousands of tiny
    ops, and when another process (Neo4j, say) holds a core, each wait costs a scheduler slice; that made k-means
    10–20× slower on a busy 2-core machine. Torch and BLAS run one thread per worker during the map.
    """
    workers = min(workers or torch.get_num_threads(), len(items))
    if device.type != "cpu" or workers <= 1 or not _OPENMP:
        return [fn(item) for item in items]
    previous = torch.get_num_threads()

    def run(item: Any) -> Any:
        torch.set_num_threads(1)  # this thread's OpenMP team, and MKL
        return fn(item)

    try:
        with threadpool_limits(limits=1), ThreadPoolExecutor(workers) as pool:  # scipy's BLAS/LAPACK too
            return list(pool.map(run, items))
    finally:
        torch.set_num_threads(previous)


def _cpu_thread_budget(device: torch.device) -> int | None:
    """On a CPU, the caller's torch thread count, which the pipeline spends where it pays; None on a GPU.

    The pipeline runs its many small ops (orthogonalisation, Rayleigh–Ritz, k-means steps) with one intra-op
    thread, and spends the budget on the big block products (intra-op) and on independent work (k-means restart
    groups and per-null eigenproblems, one thread each). On a quiet machine this costs little; on a busy one (a
    Neo4j on the same cores) it avoids the 10–100× stalls of thread teams waiting at every small op's barrier.
    """
    return torch.get_num_threads() if device.type == "cpu" else None
