"""Ablations of MLP neurons: next-token loss and top-1 accuracy with sets of neurons zeroed or set to their mean
(methods.md §11.2).

An ablation is (block, units). ``ablation_scores`` runs many ablations in one forward pass per batch of contexts:
the batch is repeated once per ablation, and a pre-hook on each block's output projection rewrites the hidden
activations row by row, ``h·keep + fill`` (keep 0 on the ablated units, fill their mean or 0). The model is never
copied. ``one_at_a_time_scores`` is the baseline the tests and ``bench/transformer_importance.py`` compare with.
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


@contextlib.contextmanager
def _rewrite(sites: MlpSites, edits: dict[int, tuple[torch.Tensor, torch.Tensor]], rows: int) -> Iterator[None]:
    """While open, block b's hidden activations h (M·rows, T, d_mlp) become h·keep[m] + fill[m] for row group m."""
    handles = []
    for block, (keep, fill) in edits.items():

        def hook(module: nn.Module, args: tuple[Any, ...], keep: torch.Tensor = keep, fill: torch.Tensor = fill) -> Any:
            h = args[0]
            shape = (keep.shape[0], rows, *h.shape[1:])
            out = torch.addcmul(fill[:, None, None, :], h.reshape(shape), keep[:, None, None, :])
            return (out.reshape(h.shape), *args[1:])

        handles.append(sites.writers[block].register_forward_pre_hook(hook))
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


def _edits(
    sites: MlpSites, ablations: Sequence[Ablation], means: dict[int, torch.Tensor] | None, device: torch.device
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per block touched: (keep, fill), each (M, d_mlp); an ablation of another block keeps everything."""
    edits = {}
    for block in sorted({b for b, _ in ablations}):
        keep = torch.ones(len(ablations), sites.d_mlp(block), device=device)
        for row, (b, units) in enumerate(ablations):
            if b == block:
                keep[row, torch.as_tensor(np.asarray(units, dtype=np.int64), device=device)] = 0.0
        fill = (1.0 - keep) * means[block].to(device) if means is not None else torch.zeros_like(keep)
        edits[block] = (keep, fill)
    return edits


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
    for start in range(0, m, group):
        chunk = ablations[start : start + group]
        edits = _edits(sites, chunk, means, device)
        for rows in _batches(n, batch_size):
            batch = ids[rows].to(device)
            k = batch.shape[0]
            repeated = batch.repeat(len(chunk), 1)
            with _rewrite(sites, edits, k):
                l, a = _scores(model(input_ids=repeated).logits, repeated)
            loss[start : start + len(chunk), rows] = l.reshape(len(chunk), k).double().cpu().numpy()
            acc[start : start + len(chunk), rows] = a.reshape(len(chunk), k).double().cpu().numpy()
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
