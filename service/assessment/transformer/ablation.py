"""Ablations of MLP neurons: next-token loss and top-1 accuracy with sets of neurons zeroed or set to their mean
(methods.md §11.2).

An ablation is (block, units). ``ablation_scores`` runs many ablations of one block in one forward pass per batch
of contexts: the blocks before it run once on the batch, a pre-hook on the block repeats the batch once per
ablation, and a pre-hook on its output projection rewrites the hidden activations row group by row group,
``h·keep + fill`` (keep 0 on the ablated units, fill their mean or 0). The model is never copied.
``one_at_a_time_scores`` is the baseline the tests and ``bench/transformer_importance.py`` compare with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neuronmap.service.assessment.transformer.sites import MlpSites

Ablation = tuple[int, np.ndarray]  # (block, units within the block's MLP)


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _repeat(value: Any, rows: int, times: int) -> Any:
    """A block argument with the batch dimension repeated ``times`` (tensors and tuples of them; others as-is)."""
    if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[0] == rows and rows > 1:
        return value.repeat(times, *([1] * (value.dim() - 1)))
    if isinstance(value, tuple):
        return tuple(_repeat(v, rows, times) for v in value)
    return value


@contextlib.contextmanager
def _rewrite(sites: MlpSites, block: int, keep: torch.Tensor, fill: torch.Tensor, rows: int) -> Iterator[None]:
    """While open, the batch (``rows`` contexts) is repeated once per row of ``keep`` as it enters ``block``, and the
    block's hidden activations h (M·rows, T, d_mlp) become h·keep[m] + fill[m] for row group m."""
    times = keep.shape[0]

    def expand(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            hidden = args[0].repeat(times, *([1] * (args[0].dim() - 1)))
            args = (hidden, *(_repeat(a, rows, times) for a in args[1:]))
        else:
            kwargs = {**kwargs, "hidden_states": kwargs["hidden_states"].repeat(times, 1, 1)}
        return args, {
            key: _repeat(value, rows, times) if key != "hidden_states" else value for key, value in kwargs.items()
        }

    def rewrite(module: nn.Module, args: tuple[Any, ...]) -> Any:
        h = args[0]
        out = torch.addcmul(fill[:, None, None, :], h.reshape(times, rows, *h.shape[1:]), keep[:, None, None, :])
        return (out.reshape(h.shape), *args[1:])

    handles = [
        sites.blocks[block].register_forward_pre_hook(expand, with_kwargs=True),
        sites.writers[block].register_forward_pre_hook(rewrite),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _scores(logits: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: mean next-token cross-entropy and the fraction of next tokens predicted top-1."""
    pred, target = logits[:, :-1].float(), ids[:, 1:]
    loss = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none")
    correct = (pred.argmax(dim=-1) == target).float()
    return loss.reshape(target.shape).mean(dim=1), correct.mean(dim=1)


def _edit(
    units: Sequence[np.ndarray], d_mlp: int, mean: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, fill), each (M, d_mlp), for M ablations of one block."""
    keep = torch.ones(len(units), d_mlp, device=device)
    for row, u in enumerate(units):
        keep[row, torch.as_tensor(np.asarray(u, dtype=np.int64), device=device)] = 0.0
    fill = (1.0 - keep) * mean.to(device) if mean is not None else torch.zeros_like(keep)
    return keep, fill


@torch.inference_mode()
def intact_scores(model: nn.Module, ids: torch.Tensor, *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(loss, accuracy) per context of the intact model, each (n_contexts,)."""
    device, loss, acc = _device(model), [], []
    for rows in _batches(ids.shape[0], batch_size):
        batch = ids[rows].to(device)
        l, a = _scores(model(input_ids=batch).logits, batch)
        loss.append(l.cpu())
        acc.append(a.cpu())
    return torch.cat(loss).double().numpy(), torch.cat(acc).double().numpy()


@torch.inference_mode()
def mean_activations(
    model: nn.Module, sites: MlpSites, ids: torch.Tensor, *, batch_size: int = 64
) -> dict[int, torch.Tensor]:
    """Each block's MLP hidden activations averaged over every token of ``ids`` (the mean-ablation values)."""
    sums = {b: torch.zeros(sites.d_mlp(b), dtype=torch.float64) for b in range(sites.n_blocks)}
    handles = []
    for block, writer in enumerate(sites.writers):

        def hook(module: nn.Module, args: tuple[Any, ...], block: int = block) -> None:
            sums[block] += args[0].reshape(-1, args[0].shape[-1]).double().sum(dim=0).cpu()

        handles.append(writer.register_forward_pre_hook(hook))
    try:
        device = _device(model)
        for rows in _batches(ids.shape[0], batch_size):
            model(input_ids=ids[rows].to(device))
    finally:
        for handle in handles:
            handle.remove()
    n = ids.numel()
    return {b: (s / n).float() for b, s in sums.items()}


@torch.inference_mode()
def ablation_scores(
    model: nn.Module,
    sites: MlpSites,
    ids: torch.Tensor,
    ablations: Sequence[Ablation],
    *,
    means: dict[int, torch.Tensor] | None = None,
    batch_size: int = 64,
    max_rows: int = 512,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(loss, accuracy), each (n_ablations, n_contexts): every ablation on every context.

    Parameters
    ----------
    model : nn.Module
        The causal LM, in eval mode; it is not copied or changed (the hooks are removed on return).
    sites : MlpSites
    ids : torch.Tensor of shape (n_contexts, L)
    ablations : sequence of (block, units)
    means : dict of block → (d_mlp,), optional
        Mean ablation: the ablated units take these values; None: zero ablation.
    batch_size : int
        Contexts per batch.
    max_rows : int
        Rows per forward pass: ``max_rows // batch_size`` ablations share one pass (at least one).
    on_chunk : callable, optional
        Called with the number of ablations done after each group.
    """
    device = _device(model)
    n, m = ids.shape[0], len(ablations)
    loss = np.empty((m, n))
    acc = np.empty((m, n))
    batch_size = min(batch_size, n)
    group = max(1, max_rows // batch_size)
    for block in sorted({b for b, _ in ablations}):
        rows_of_block = [i for i, (b, _) in enumerate(ablations) if b == block]
        for start in range(0, len(rows_of_block), group):
            chunk = rows_of_block[start : start + group]
            mean = means[block] if means is not None else None
            keep, fill = _edit([ablations[i][1] for i in chunk], sites.d_mlp(block), mean, device)
            for rows in _batches(n, batch_size):
                batch = ids[rows].to(device)
                k = batch.shape[0]
                with _rewrite(sites, block, keep, fill, k):
                    logits = model(input_ids=batch).logits
                l, a = _scores(logits, batch.repeat(len(chunk), 1))
                loss[chunk, rows] = l.reshape(len(chunk), k).double().cpu().numpy()
                acc[chunk, rows] = a.reshape(len(chunk), k).double().cpu().numpy()
            if on_chunk is not None:
                on_chunk(len(chunk))
    return loss, acc


def one_at_a_time_scores(
    model: nn.Module,
    sites: MlpSites,
    ids: torch.Tensor,
    ablations: Sequence[Ablation],
    *,
    means: dict[int, torch.Tensor] | None = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: one forward pass per ablation and batch of contexts (``ablation_scores`` with one per pass)."""
    return ablation_scores(model, sites, ids, ablations, means=means, batch_size=batch_size, max_rows=1)
