"""How the clustering numerics spend a CPU's threads.

The many small ops (orthogonalisation, Rayleigh–Ritz, k-means steps) run with one intra-op thread; the caller's
thread count goes to the big block products and to independent work (k-means restart groups, one small eigenproblem
per null), one thread each. On a GPU nothing changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from threadpoolctl import threadpool_limits

T = TypeVar("T")
R = TypeVar("R")

# Per-thread intra-op settings are an OpenMP property; other ATen backends share one pool (and warn when resized).
_OPENMP = "parallel backend: OpenMP" in torch.__config__.parallel_info()


@contextlib.contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
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


def map_independent(
    fn: Callable[[T], R], items: Sequence[T], device: torch.device, workers: int | None = None
) -> list[R]:
    """``[fn(item) for item in items]``; on a CPU, spread over ``workers`` threads that each run single-threaded.

    Many small independent problems parallelise better across problems than inside each op: an op-level thread team
    waits at a barrier after every one of thousands of tiny ops, and when another process (Neo4j, say) holds a core,
    each wait costs a scheduler slice. Torch and BLAS run one thread per worker during the map.
    """
    workers = min(workers or torch.get_num_threads(), len(items))
    if device.type != "cpu" or workers <= 1 or not _OPENMP:
        return [fn(item) for item in items]
    previous = torch.get_num_threads()

    def run(item: T) -> R:
        torch.set_num_threads(1)  # this thread's OpenMP team, and MKL
        return fn(item)

    try:
        with threadpool_limits(limits=1), ThreadPoolExecutor(workers) as pool:  # scipy's BLAS/LAPACK too
            return list(pool.map(run, items))
    finally:
        torch.set_num_threads(previous)


def cpu_thread_budget(device: torch.device) -> int | None:
    """On a CPU, the caller's torch thread count, which the pipeline spends where it pays; None on a GPU.

    Small ops run with one intra-op thread, the budget goes to the big block products and to independent work: on a
    busy machine (a Neo4j on the same cores) this avoids the stalls of thread teams waiting at every small op's
    barrier, and on a quiet one it costs little.
    """
    return torch.get_num_threads() if device.type == "cpu" else None
