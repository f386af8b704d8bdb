"""What the benchmarks share: a Neo4j to measure against, and a markdown table printer."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from neuronmap.cypher import Store
from neuronmap.service.clustering.blockgraph import BlockGraph
from neuronmap.service.config import Settings
from neuronmap.service.store import local_neo4j
from neuronmap.service.store.open import connect


@contextlib.contextmanager
def bench_store() -> Iterator[Store]:
    """NEO4J_URI if set, else a private server with benchmark-sized memory (heap 2g, page cache 2g)."""
    environ = dict(os.environ)
    environ.setdefault("NEURONMAP_NEO4J_HEAP", "2g")
    environ.setdefault("NEURONMAP_NEO4J_PAGECACHE", "2g")
    with local_neo4j.running(Settings.from_env(environ)) as connection:
        with connect(connection) as store:
            yield store


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    box: list[float] = []
    start = time.perf_counter()
    yield box
    box.append(time.perf_counter() - start)


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print(
            "| "
            + " | ".join(
                f"{v:,.0f}" if isinstance(v, float) and v > 100 else (f"{v:.3g}" if isinstance(v, float) else str(v))
                for v in row
            )
            + " |"
        )


def planted_block_graph(
    sizes: Sequence[int],
    seed: int,
    *,
    n_modules: int,
    delta: float = 0.6,
    density: float = 1.0,
    dtype: type = np.float64,
) -> BlockGraph:
    """Glorot-uniform |W| with the reference's "clusterable initialisation" (methods.md §4): every neuron gets a
    module, weights inside a module ×(1 + (1−δ)(n_modules−1)), across modules ×δ; ``density < 1`` adds a random
    pruning mask. δ = 1 gives unstructured Glorot weights."""
    rng = np.random.default_rng(seed)
    modules = [rng.integers(0, n_modules, size) for size in sizes]
    inside = 1 + (1 - delta) * (n_modules - 1)
    blocks = []
    for layer in range(len(sizes) - 1):
        fan_in, fan_out = sizes[layer], sizes[layer + 1]
        limit = np.sqrt(6 / (fan_in + fan_out))
        w = np.abs(rng.uniform(-limit, limit, (fan_in, fan_out))).astype(dtype)
        w *= np.where(modules[layer][:, None] == modules[layer + 1][None, :], inside, delta).astype(dtype)
        if density < 1:
            w *= rng.random((fan_in, fan_out), dtype=np.float32) < density
        blocks.append((layer, layer + 1, torch.from_numpy(w)))
    return BlockGraph(list(sizes), blocks)
