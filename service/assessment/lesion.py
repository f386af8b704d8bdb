"""Lesion paths: how many inputs per class a network still classifies correctly with sets of its neurons silenced.

A lesion of a set S of neurons in a layer sets their value to 0 (methods.md §5). ``lesion_correct_counts`` runs many
lesions per data batch through ``LesionNetwork.run_lesioned`` (methods.md §9.1), or through the compiled kernels of
``kernels.py`` where a layer's tail allows; ``one_at_a_time_correct_counts`` is the baseline that the tests and
``bench/importance.py`` compare it with. Which path ``"auto"`` takes: ``lesion_correct_counts``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neuronmap.options import LesionMethod
from neuronmap.service.assessment.layer_plan import LayerPoint
from neuronmap.service.assessment.network import LesionNetwork, prepare_inputs
from neuronmap.service.assessment.tails import DeltaPlan, LesionBuffers, pad_columns
from neuronmap.service.errors import AssessmentInputError

_Route = Literal["mask", "delta", "kept"]  # how one group of lesions runs; "kept" is the delta path's complement form


# -- lesion sets -----------------------------------------------------------------------------------------------------


def keep_masks(sets: Sequence[np.ndarray], size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(M, size) float keep-masks: 0 at each set's units, 1 elsewhere."""
    masks = torch.ones(len(sets), size, device=device)
    for row, units in enumerate(sets):
        masks[row, torch.as_tensor(np.asarray(units, dtype=np.int64), device=device)] = 0.0
    return masks


def padded_indices(sets: Sequence[np.ndarray], size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(M, max set size) int64 unit indices, padded with ``size`` (the "no unit" column of the delta path)."""
    width = max((len(units) for units in sets), default=0)
    idx = np.full((len(sets), max(width, 1)), size, dtype=np.int64)
    for row, units in enumerate(sets):
        idx[row, : len(units)] = np.asarray(units, dtype=np.int64)
    return torch.from_numpy(idx).to(device)


def draw_random_sets(pool: np.ndarray, size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, size) units drawn uniformly without replacement from ``pool``, one independent draw per row."""
    pool = np.asarray(pool, dtype=np.int64)
    if not 0 <= size <= pool.size:
        raise AssessmentInputError(f"Cannot draw {size} units from a layer pool of {pool.size}.")
    keys = rng.random((n, pool.size))
    return pool[np.argsort(keys, axis=1, kind="stable")[:, :size]]


# -- evaluation ------------------------------------------------------------------------------------------------------


def _class_counts(logits: torch.Tensor, y: torch.Tensor, onehot: torch.Tensor, m: int) -> torch.Tensor:
    pred = logits.max(dim=1).indices.reshape(m, -1)  # (M, B); the first maximum, as argmax, and faster
    correct = (pred == y.unsqueeze(0)).to(onehot.dtype)
    return (correct @ onehot).round().to(torch.int64)  # (M, n_classes)


def lesion_correct_counts(
    net: LesionNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    lesions: Sequence[dict[int, np.ndarray]],
    *,
    method: LesionMethod = "auto",
    batch_size: int = 1000,
    max_elements: int = 2**22,
    max_lesions: int = 32,
    delta_max_fraction: float = 0.5,
    native: bool = True,
    on_chunk: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Correct predictions per class with each lesion applied, batched.

    Parameters
    ----------
    net : LesionNetwork
    x : torch.Tensor of shape (N, ...)
        Inputs (reshaped to the network's input shape when only the layout differs).
    y : torch.Tensor of shape (N,)
        Class labels in 0 … n_classes − 1.
    n_classes : int
    lesions : sequence of dict of int to numpy.ndarray
        One lesion per entry: layer index → the units silenced there. Lesions of one layer go through the fast
        paths; a lesion touching several layers is masked on each of them (double lesions).
    method : {"auto", "mask", "delta"}, default "auto"
        ``"auto"``: where the layer allows the delta path (``LayerPoint.delta``), ``"delta"`` for sets of at most
        ``delta_max_fraction`` of the layer and the complement form (``run_lesioned(kept=...)``) for larger ones;
        elsewhere ``"mask"``. ``"mask"`` gives exactly the one-at-a-time counts; the other two equal them up to
        float rounding.
    batch_size : int, default 1000
        Inputs per intact run.
    max_elements : int, default 2**22
        Bounds the expanded batch: lesions per pass × inputs × the widest value stays under it. The passes reuse
        their buffers (``LesionBuffers``); ``bench/importance.py`` measures the choice.
    max_lesions : int, default 32
        At most this many lesions per pass, whatever the width: for lesions just before the output the gathered
        operands of the delta path, not the width, set the memory of a pass.
    delta_max_fraction : float, default 0.5
        ``"auto"`` takes the delta path for sets of at most this share of their layer, the complement form above.
    native : bool, default True
        Lesions on the delta path whose tail is at most ReLU → Linear (an MLP's last two hidden layers) run in the
        compiled kernels of ``kernels.py`` when they can be built here (CPU, float32): one fused pass per input and
        lesion that skips the layer's zeros. Same formula as the torch path, summed in another order, so equal to
        it up to float rounding. Where the CPU has AMX, a tail of ReLU → Linear → ReLU → Linear (the layer before)
        runs there too, its hidden product in bfloat16 parts with every prediction certified against exact
        arithmetic or recomputed in float32 (``kernels.DeepHidden``). False: torch only.
    on_chunk : callable, optional
        Called with the number of lesions finished after each chunk of one data batch (summed over batches, the
        total is ``len(lesions) × n_batches``).

    Returns
    -------
    counts : numpy.ndarray of shape (len(lesions), n_classes), int64
    """
    x = prepare_inputs(net, x)
    groups = _group_lesions(net, lesions, method, delta_max_fraction)
    counts = torch.zeros(len(lesions), n_classes, dtype=torch.int64)
    buffers = LesionBuffers()
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(net.device)
            yb = y[start : start + batch_size].to(net.device)
            onehot = F.one_hot(yb, n_classes).to(torch.float32)
            env = net.run(xb, keep=True)
            for (layers, route), rows in groups.items():
                if route != "mask" and native:
                    done = _native_counts(
                        net,
                        env,
                        net.layer(layers[0]),
                        [lesions[r][layers[0]] for r in rows],
                        complement=route == "kept",
                        y=yb,
                        n_classes=n_classes,
                    )
                    if done is not None:
                        counts[rows] += torch.from_numpy(done)
                        if on_chunk is not None:
                            on_chunk(len(rows))
                        continue
                chunks = _torch_chunks(
                    net,
                    env,
                    [net.layer(i) for i in layers],
                    route,
                    rows,
                    lesions,
                    buffers,
                    batch=xb.shape[0],
                    max_elements=max_elements,
                    max_lesions=max_lesions,
                )
                for chunk, logits in chunks:
                    counts[chunk] += _class_counts(logits, yb, onehot, len(chunk)).cpu()
                    if on_chunk is not None:
                        on_chunk(len(chunk))
            del env
    return counts.numpy()


def _group_lesions(
    net: LesionNetwork, lesions: Sequence[dict[int, np.ndarray]], method: LesionMethod, delta_max_fraction: float
) -> dict[tuple[tuple[int, ...], _Route], list[int]]:
    """The rows of ``lesions`` by (layers lesioned, route), each delta-path group sorted by set size."""
    groups: dict[tuple[tuple[int, ...], _Route], list[int]] = defaultdict(list)
    for row, lesion in enumerate(lesions):
        layers = tuple(sorted(lesion))
        point = net.layer(layers[0]) if len(layers) == 1 else None
        if method == "delta" and (point is None or point.delta is None):
            names = [net.layer(i).name for i in layers]
            raise AssessmentInputError(
                f"Layer(s) {names} do not reach a Linear through zero-preserving steps only, "
                "so method='delta' cannot lesion them; use method='auto' or 'mask'."
            )
        route: _Route = "mask"
        if point is not None and point.delta is not None and method != "mask":
            # The delta path subtracts the silenced units' share from the intact sum: cheap and accurate for small
            # sets; for large ones (a whole layer) the difference cancels and its rounding could decide an argmax
            # tie, so "auto" sums the kept units' share instead, which is also the cheaper form there.
            small = len(lesion[layers[0]]) <= delta_max_fraction * point.size
            route = "delta" if method == "delta" or small else "kept"
        groups[(layers, route)].append(row)
    for (layers, route), rows in groups.items():
        if route != "mask":  # similar sizes together: less padding in the batched product
            rows.sort(key=lambda r: len(lesions[r][layers[0]]))
    return groups


def _torch_chunks(
    net: LesionNetwork,
    env: dict[str, Any],
    points: list[LayerPoint],
    route: _Route,
    rows: list[int],
    lesions: Sequence[dict[int, np.ndarray]],
    buffers: LesionBuffers,
    *,
    batch: int,
    max_elements: int,
    max_lesions: int,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(rows, logits) per pass of one group's lesions on torch; the logits live in ``buffers`` until the next."""
    point = points[0]
    if route == "mask":
        starts = [p.value for p in points]
    else:
        assert point.delta is not None  # _group_lesions routes only layers with a delta plan this way
        plan = point.delta
        starts = [plan.node]
    per_pass = max(1, min(max_lesions, max_elements // (batch * net.widest(starts))))
    for lo in range(0, len(rows), per_pass):
        chunk = rows[lo : lo + per_pass]
        if route == "delta":
            idx = padded_indices([lesions[r][point.index] for r in chunk], point.size, net.device)
            logits = net.run_lesioned(env, delta=(plan, idx), buffers=buffers)
        elif route == "kept":
            kept = _complements([lesions[r][point.index] for r in chunk], point.size)
            idx = padded_indices(kept, point.size, net.device)
            logits = net.run_lesioned(env, kept=(plan, idx), buffers=buffers)
        else:
            masks = {p.value: keep_masks([lesions[r][p.index] for r in chunk], p.size, net.device) for p in points}
            logits = net.run_lesioned(env, masks=masks, buffers=buffers)
        yield chunk, logits


def _native_counts(
    net: LesionNetwork,
    env: dict[str, Any],
    point: LayerPoint,
    sets: Sequence[np.ndarray],
    *,
    complement: bool,
    y: torch.Tensor,
    n_classes: int,
) -> np.ndarray | None:
    """Counts of one layer's delta-path lesions from the compiled kernels, or None where they do not apply."""
    tail = net.native_tail(point)
    if tail is None:
        return None
    h = env[tail.plan.input]
    z = env[tail.plan.node]
    if h.dtype != torch.float32 or not _finite(env, tail.plan):
        return None  # the kernel's argmax has no NaN semantics; torch's has
    if complement:
        sets = _complements(sets, point.size)
        base = tail.bias
    else:
        base = pad_columns(z, tail.wt.shape[1])
    idx = padded_indices(sets, point.size)
    y = y.to(torch.int64).contiguous()
    threads = torch.get_num_threads()
    if tail.hidden is not None:
        assert tail.wout is not None and tail.bout is not None  # set with hidden (plan_native_tail)
        counts, _ = tail.kernels.lesion_counts_deep(
            h.contiguous(),
            tail.wt,
            idx,
            base,
            subtract=not complement,
            hidden=tail.hidden,
            wout=tail.wout,
            bout=tail.bout,
            n_out=tail.bout.shape[0],
            y=y,
            n_classes=n_classes,
            threads=threads,
        )
        return counts
    n_out = z.shape[1] if tail.bout is None else tail.bout.shape[0]  # both None or both set
    return tail.kernels.lesion_counts(
        h.contiguous(),
        tail.wt,
        idx,
        base,
        subtract=not complement,
        wout=tail.wout,
        bout=tail.bout,
        n_out=n_out,
        y=y,
        n_classes=n_classes,
        threads=threads,
    )


def _complements(sets: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """The units of a layer of ``size`` that each set leaves: what the complement form keeps."""
    return [np.setdiff1d(np.arange(size), units) for units in sets]


def _finite(env: dict[str, Any], plan: DeltaPlan) -> bool:
    """Whether the intact values the kernels read are finite (their argmax and ReLU have no NaN semantics)."""
    key = "__finite__" + plan.node  # once per data batch
    if key not in env:
        env[key] = bool(torch.isfinite(env[plan.input]).all()) and bool(torch.isfinite(env[plan.node]).all())
    return env[key]


def intact_correct_counts(
    net: LesionNetwork, x: torch.Tensor, y: torch.Tensor, n_classes: int, *, batch_size: int = 1000
) -> np.ndarray:
    """(n_classes,) correct predictions per class of the intact network."""
    x = prepare_inputs(net, x)
    counts = torch.zeros(n_classes, dtype=torch.int64)
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start : start + batch_size].to(net.device), y[start : start + batch_size].to(net.device)
            onehot = F.one_hot(yb, n_classes).to(torch.float32)
            counts += _class_counts(net.run(xb), yb, onehot, 1)[0].cpu()
    return counts.numpy()


def one_at_a_time_correct_counts(
    net: LesionNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    lesions: Sequence[dict[int, np.ndarray]],
    *,
    how: Literal["weights", "mask"] = "weights",
    batch_size: int = 1000,
) -> np.ndarray:
    """The baseline: one forward pass over the data per lesion.

    ``how="weights"`` does what the reference did: zero the silenced units' incoming weights and bias in the module
    itself, run it as is, and restore the weights (layers followed by a BatchNorm are refused: zeroing their weights
    leaves the BatchNorm's offset, methods.md §5). ``how="mask"`` multiplies the layer's value by one
    keep-mask in an otherwise intact run.
    """
    x = prepare_inputs(net, x)
    out = np.zeros((len(lesions), n_classes), dtype=np.int64)
    with torch.no_grad():
        for row, lesion in enumerate(lesions):
            saved: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
            if how == "weights":
                for layer, units in lesion.items():
                    point = net.layer(layer)
                    if point.batchnorm is not None:
                        raise AssessmentInputError(
                            f"Layer {point.name!r} is followed by a BatchNorm; zeroing its "
                            "weights does not silence it. Use how='mask'."
                        )
                    target = cast(nn.Linear | nn.Conv2d, net.module.get_submodule(point.name))
                    index = torch.as_tensor(np.asarray(units, dtype=np.int64), device=net.device)
                    for param in (target.weight, target.bias):
                        if param is not None:
                            saved.append((param, index, param[index].clone()))
                            param[index] = 0.0
            try:
                for start in range(0, x.shape[0], batch_size):
                    xb, yb = x[start : start + batch_size].to(net.device), y[start : start + batch_size].to(net.device)
                    onehot = F.one_hot(yb, n_classes).to(torch.float32)
                    if how == "weights":
                        logits = net.module(xb)
                    else:
                        env = net.run(xb, keep=True)
                        masks = {
                            net.layer(i).value: keep_masks([u], net.layer(i).size, net.device)
                            for i, u in lesion.items()
                        }
                        logits = net.run_lesioned(env, masks=masks)
                    out[row] += _class_counts(logits, yb, onehot, 1)[0].cpu().numpy()
            finally:
                for param, index, values in saved:
                    param[index] = values
    return out
