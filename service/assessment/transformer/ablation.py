"""Ablations of MLP neurons: next-token loss and top-1 accuracy with sets of neurons zeroed or set to their mean
(methods.md §11.2).

An ablation is (block, units). Setting units S of block b's hidden activations h to ``fill`` (their means, or 0)
changes the MLP's output, and so the block's output y (the residual stream after it), by exactly

    δ = (fill_S − h_S) · W_out[S]          (the output projection is linear and added to the residual)

so the ablated block's output is y + δ, and only the blocks after b see a different input. ``ablation_scores``
uses this: per batch of contexts it runs the intact model ONCE, keeping every block's output y, its hidden
activations h and the arguments the model passed to each block; then, for the ablations of block b, it stacks
y + δ_m for many masks m along the batch dimension and runs only blocks b+1… and the head on them. Nothing before
the ablation site is recomputed, the intact scores come from the same pass, and the model is never copied.

``one_at_a_time_scores`` is the baseline the tests and ``bench/transformer_importance.py`` compare with: one full
forward pass per ablation and batch of contexts, with a hook that adds the same δ to block b's output. Both compute
δ with ``_delta`` on the same values, so they agree bit for bit (the tests also check y + δ against rewriting the
hidden activations themselves, up to float rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neuronmap.service.assessment.transformer.sites import MlpSites

Ablation = tuple[int, np.ndarray]  # (block, units within the block's MLP)
JointAblation = tuple[Ablation, ...]  # parts ablated together (a pair of sub-clusters in two blocks, --double)
AnyAblation = Ablation | JointAblation
OnWork = Callable[[int, int], None]  # (ablation × context pairs done, in all)


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


def _hidden_of(output: Any) -> torch.Tensor:
    """A block's output hidden states (transformers ≥ 5 returns the tensor, older versions a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def _scores(logits: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: mean next-token cross-entropy and the fraction of next tokens predicted top-1."""
    pred, target = logits[:, :-1].float(), ids[:, 1:]
    loss = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none")
    correct = (pred.argmax(dim=-1) == target).float()
    return loss.reshape(target.shape).mean(dim=1), correct.mean(dim=1)


def _delta(hidden: torch.Tensor, units: torch.Tensor, fill: torch.Tensor | None, w_out: torch.Tensor) -> torch.Tensor:
    """(rows, L, d_model): how setting ``units`` of ``hidden`` (rows, L, d_mlp) to ``fill`` (or 0) moves the block's
    output, (fill_S − h_S) · W_out[S]."""
    h = hidden.index_select(-1, units)
    change = fill.index_select(0, units) - h if fill is not None else -h
    return change @ w_out.index_select(0, units)


@dataclass
class _Intact:
    """One batch of contexts through the intact model: per block, what the model passed it, its output and its MLP's
    hidden activations; and the intact scores."""

    inputs: list[tuple[tuple[Any, ...], dict[str, Any]]]
    outputs: list[torch.Tensor]
    hidden: list[torch.Tensor]
    loss: torch.Tensor
    accuracy: torch.Tensor


def _run_intact(model: nn.Module, sites: MlpSites, batch: torch.Tensor) -> _Intact:
    n = sites.n_blocks
    inputs: list[Any] = [None] * n
    outputs: list[Any] = [None] * n
    hidden: list[Any] = [None] * n
    handles = []
    for b in range(n):

        def enter(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], b: int = b) -> None:
            inputs[b] = (args, kwargs)

        def leave(module: nn.Module, args: tuple[Any, ...], output: Any, b: int = b) -> None:
            outputs[b] = _hidden_of(output)

        def read(module: nn.Module, args: tuple[Any, ...], b: int = b) -> None:
            hidden[b] = args[0]

        handles += [
            sites.blocks[b].register_forward_pre_hook(enter, with_kwargs=True),
            sites.blocks[b].register_forward_hook(leave),
            sites.writers[b].register_forward_pre_hook(read),
        ]
    try:
        logits = model(input_ids=batch, use_cache=False).logits
    finally:
        for handle in handles:
            handle.remove()
    loss, acc = _scores(logits, batch)
    return _Intact(inputs, outputs, hidden, loss, acc)


def _after(
    sites: MlpSites,
    intact: _Intact,
    block: int,
    x: torch.Tensor,
    rows: int,
    later: Sequence[dict[int, torch.Tensor]],
    fills: dict[int, torch.Tensor | None],
) -> torch.Tensor:
    """The logits of (times·rows, L, d_model) hidden states leaving ``block``: the later blocks, the norm, the head.
    ``later[j]``: the parts of group j's ablation in later blocks (a joint ablation's), patched as they run."""
    times = x.shape[0] // rows
    for b in range(block + 1, sites.n_blocks):
        args, kwargs = intact.inputs[b]
        rest = tuple(_repeat(a, rows, times) for a in args[1:])
        others = {k: _repeat(v, rows, times) for k, v in kwargs.items() if k != "hidden_states"}
        units = [parts.get(b) for parts in later]
        handles = _patch(sites, b, units, fills[b]) if any(u is not None for u in units) else []
        try:
            x = _hidden_of(sites.blocks[b](x, *rest, **others) if args else sites.blocks[b](hidden_states=x, **others))
        finally:
            for handle in handles:
                handle.remove()
    return sites.head(sites.final_norm(x))


def default_rows(device: torch.device, batch_size: int, length: int) -> int:
    """Rows (ablations × contexts) per pass by device. On a CPU, about 8192 tokens: the matrix products are
    compute-bound from there on, and larger passes only spill the caches (``bench/transformer_importance.py``); on
    a GPU, 1024 rows, so that many masks fill one launch."""
    if device.type == "cpu":
        return max(batch_size, 8192 // max(1, length))
    return max(batch_size, 1024)


def _parts(ablation: AnyAblation, device: torch.device) -> dict[int, torch.Tensor]:
    """Block → units of one ablation, blocks in order (a joint ablation's parts in one block are merged)."""
    pairs = [ablation] if isinstance(ablation[0], (int, np.integer)) else list(ablation)
    merged: dict[int, np.ndarray] = {}
    for block, units in pairs:
        u = np.asarray(units, dtype=np.int64)
        merged[int(block)] = np.union1d(merged[int(block)], u) if int(block) in merged else u
    return {b: torch.as_tensor(merged[b], device=device) for b in sorted(merged)}


def _fills(sites: MlpSites, means: dict[int, torch.Tensor] | None, dtype: torch.dtype, device: torch.device) -> Any:
    if means is None:
        return dict.fromkeys(range(sites.n_blocks))
    return {b: m.to(device=device, dtype=dtype) for b, m in means.items()}


@torch.inference_mode()
def scores_with_intact(
    model: nn.Module,
    sites: MlpSites,
    ids: torch.Tensor,
    ablations: Sequence[AnyAblation],
    *,
    means: dict[int, torch.Tensor] | None = None,
    batch_size: int = 64,
    max_rows: int = 0,
    on_work: OnWork | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``ablation_scores`` and the intact model's (loss, accuracy) per context, from the same passes."""
    device = _device(model)
    n, m = ids.shape[0], len(ablations)
    loss, acc = np.empty((m, n)), np.empty((m, n))
    loss0, acc0 = np.empty(n), np.empty(n)
    batch_size = min(batch_size, n)
    max_rows = max_rows or default_rows(device, batch_size, ids.shape[1])
    parts = [_parts(a, device) for a in ablations]
    first = [min(p) for p in parts]  # the site the pass starts after; a joint ablation's later parts are patched
    weights = {b: sites.writer_weight(b) for b in set(first)}
    fills = _fills(sites, means, next(model.parameters()).dtype, device)
    by_block = {b: [i for i, c in enumerate(first) if c == b] for b in sorted(weights)}
    done = 0
    for rows in _batches(n, batch_size):
        batch = ids[rows].to(device)
        k = batch.shape[0]
        intact = _run_intact(model, sites, batch)
        loss0[rows], acc0[rows] = intact.loss.double().cpu().numpy(), intact.accuracy.double().cpu().numpy()
        group = max(1, max_rows // k)
        for block, members in by_block.items():
            y, h, w, fill = intact.outputs[block], intact.hidden[block], weights[block], fills[block]
            for start in range(0, len(members), group):
                chunk = members[start : start + group]
                x = torch.stack([y + _delta(h, parts[i][block], fill, w) for i in chunk]).flatten(0, 1)
                later = [{b: u for b, u in parts[i].items() if b != block} for i in chunk]
                l, a = _scores(_after(sites, intact, block, x, k, later, fills), batch.repeat(len(chunk), 1))
                loss[chunk, rows] = l.reshape(len(chunk), k).double().cpu().numpy()
                acc[chunk, rows] = a.reshape(len(chunk), k).double().cpu().numpy()
                done += len(chunk) * k
                if on_work is not None:
                    on_work(done, m * n)
    return loss, acc, loss0, acc0


def ablation_scores(
    model: nn.Module,
    sites: MlpSites,
    ids: torch.Tensor,
    ablations: Sequence[AnyAblation],
    *,
    means: dict[int, torch.Tensor] | None = None,
    batch_size: int = 64,
    max_rows: int = 0,
    on_work: OnWork | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(loss, accuracy), each (n_ablations, n_contexts): every ablation on every context.

    Parameters
    ----------
    model : nn.Module
        The causal LM, in eval mode; it is not copied or changed (the hooks are removed on return).
    sites : MlpSites
    ids : torch.Tensor of shape (n_contexts, L)
    ablations : sequence of (block, units), or of tuples of them (parts ablated together)
    means : dict of block → (d_mlp,), optional
        Mean ablation: the ablated units take these values; None: zero ablation.
    batch_size : int
        Contexts per batch: the intact model runs once per batch, and its per-block states are kept meanwhile.
    max_rows : int
        Rows (ablations × contexts) per pass through the blocks after the site: ``max_rows // batch_size``
        ablations share one pass (at least one); 0: ``default_rows``.
    on_work : callable, optional
        Called with (ablation × context pairs done, in all) after each pass.
    """
    loss, acc, _, _ = scores_with_intact(
        model, sites, ids, ablations, means=means, batch_size=batch_size, max_rows=max_rows, on_work=on_work
    )
    return loss, acc


def _patch(sites: MlpSites, block: int, units: Sequence[torch.Tensor | None], fill: torch.Tensor | None) -> list[Any]:
    """Hooks that add δ to ``block``'s output, from the hidden activations of the same pass: the rows are
    ``len(units)`` equal groups, group j ablating ``units[j]`` (None: none). The caller removes them."""
    seen: list[torch.Tensor] = []
    w = sites.writer_weight(block)

    def read(module: nn.Module, args: tuple[Any, ...]) -> None:
        seen.append(args[0])

    def patch(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        h, y = seen.pop(), _hidden_of(output)
        groups = h.reshape(len(units), -1, *h.shape[1:])
        zero = torch.zeros_like(y[: groups.shape[1]])
        delta = [zero if u is None else _delta(g, u, fill, w) for g, u in zip(groups, units)]
        y = y + torch.stack(delta).flatten(0, 1)
        return (y, *output[1:]) if isinstance(output, tuple) else y

    return [sites.writers[block].register_forward_pre_hook(read), sites.blocks[block].register_forward_hook(patch)]


@torch.inference_mode()
def one_at_a_time_scores(
    model: nn.Module,
    sites: MlpSites,
    ids: torch.Tensor,
    ablations: Sequence[AnyAblation],
    *,
    means: dict[int, torch.Tensor] | None = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: one full forward pass per ablation and batch of contexts, a hook adding δ to the ablated
    block's output (from the hidden activations of the same pass)."""
    device = _device(model)
    n, m = ids.shape[0], len(ablations)
    loss, acc = np.empty((m, n)), np.empty((m, n))
    fills = _fills(sites, means, next(model.parameters()).dtype, device)
    for i, ablation in enumerate(ablations):
        handles = [h for b, u in _parts(ablation, device).items() for h in _patch(sites, b, [u], fills[b])]
        try:
            for rows in _batches(n, batch_size):
                batch = ids[rows].to(device)
                l, a = _scores(model(input_ids=batch, use_cache=False).logits, batch)
                loss[i, rows], acc[i, rows] = l.double().cpu().numpy(), a.double().cpu().numpy()
        finally:
            for handle in handles:
                handle.remove()
    return loss, acc


@torch.inference_mode()
def intact_scores(model: nn.Module, ids: torch.Tensor, *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(loss, accuracy) per context of the intact model, each (n_contexts,)."""
    device, loss, acc = _device(model), [], []
    for rows in _batches(ids.shape[0], batch_size):
        batch = ids[rows].to(device)
        l, a = _scores(model(input_ids=batch, use_cache=False).logits, batch)
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
            model(input_ids=ids[rows].to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    n = ids.numel()
    return {b: (s / n).float() for b, s in sums.items()}
