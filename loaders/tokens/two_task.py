"""The generated two-task sequence data set (``--data two-task``): deterministic, nothing downloaded.

Each context is one task's Markov chain, and the two tasks use disjoint tokens:

- task 0, ``count``: even tokens stepping by 2 (0, 2, 4, …, wrapping round);
- task 1, ``permute``: odd tokens following one fixed random cycle through them (seeded).

With probability ``noise`` a token is replaced by a random token of its task, and the chain goes on from there, so
the best loss is above zero and a model cannot memorise the contexts. A transformer whose residual stream is split
in halves (token t writes half t mod 2) solves each task in its own half: the planted modules of methods.md §11.
"""

from __future__ import annotations

import numpy as np

TASKS = ("count", "permute")


def successor_tables(vocab_size: int, seed: int = 0) -> np.ndarray:
    """(vocab_size,) the next token of each token without noise: evens count by 2, odds follow a random cycle.

    >>> successor_tables(8)[[0, 2, 4, 6]].tolist()
    [2, 4, 6, 0]
    """
    if vocab_size < 4 or vocab_size % 2:
        raise ValueError(f"vocab_size={vocab_size} must be even and at least 4")
    nxt = np.empty(vocab_size, dtype=np.int64)
    evens = np.arange(0, vocab_size, 2)
    nxt[evens] = np.roll(evens, -1)
    odds = np.random.default_rng(seed).permutation(np.arange(1, vocab_size, 2))
    nxt[odds] = np.roll(odds, -1)
    return nxt


def two_task(
    n_contexts: int, context: int, vocab_size: int, *, noise: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(ids (n_contexts, context) int64, task (n_contexts,) int64): half the contexts of each task, interleaved.

    >>> ids, task = two_task(4, 5, 8, noise=0.0)
    >>> task.tolist(), bool((ids[task == 0] % 2 == 0).all()), bool((ids[task == 1] % 2 == 1).all())
    ([0, 1, 0, 1], True, True)
    """
    nxt = successor_tables(vocab_size, seed)
    rng = np.random.default_rng([seed, 1])
    task = np.arange(n_contexts, dtype=np.int64) % 2
    half = vocab_size // 2
    ids = np.empty((n_contexts, context), dtype=np.int64)
    ids[:, 0] = 2 * rng.integers(0, half, n_contexts) + task
    noisy = rng.random((n_contexts, context)) < noise
    random_tokens = 2 * rng.integers(0, half, (n_contexts, context)) + task[:, None]
    for t in range(1, context):
        ids[:, t] = np.where(noisy[:, t], random_tokens[:, t], nxt[ids[:, t - 1]])
    return ids, task
