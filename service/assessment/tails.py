"""The fast paths of a lesioned run: the network after the lesion, planned once and run without the graph interpreter.

A ``DeltaPlan`` applies a lesion at the next Linear's output (methods.md §9.1); a plain Linear/ReLU chain to the output
runs on reused ``LesionBuffers`` (``run_chain``); a ``NativeTail`` hands one layer's delta-path lesions to the compiled
kernels (``kernels.py``). ``LesionNetwork`` plans these per layer and caches them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from neuronmap.service.assessment import kernels
from neuronmap.service.assessment.kernels import DeepHidden, LesionKernels

RELU_NAMES = frozenset({"relu", "relu_"})


def op_name(target: Any) -> str:
    """``torch.relu`` → "relu", ``aten.relu.default`` → "relu", a method name stays itself."""
    if isinstance(target, str):
        return target
    return str(getattr(target, "__name__", target)).split(".")[0]


@dataclass(frozen=True)
class DeltaPlan:
    """Where the ``"delta"`` path applies a lesion of a layer: at the output of the next Linear."""

    node: str  # the Linear's output value
    input: str  # the value the Linear reads: the layer after its zero-preserving steps, (B, C)
    weight: torch.Tensor  # the Linear's (C_next, C) weight
    bias: torch.Tensor | None = None  # the Linear's (C_next,) bias, for the complement form (``kept``)


@dataclass(frozen=True)
class ChainStep:
    """One step of a Linear/ReLU tail (``linear_relu_chain``): a Linear when ``weight`` is set, else a ReLU."""

    weight: torch.Tensor | None
    bias: torch.Tensor | None


class LesionBuffers:
    """Scratch tensors reused across chunks of lesions, so that every pass writes to memory that is already mapped
    and, with moderate chunks, still in cache."""

    def __init__(self) -> None:
        self._flat: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device, backed by the buffer ``name``."""
        size = int(np.prod(shape))
        flat = self._flat.get(name)
        if flat is None or flat.numel() < size or flat.dtype != like.dtype or flat.device != like.device:
            flat = torch.empty(size, dtype=like.dtype, device=like.device)
            self._flat[name] = flat
        return flat[:size].view(shape)


# -- Linear/ReLU chains ----------------------------------------------------------------------------------------------


def linear_relu_chain(start: fx.Node, modules: dict[str, nn.Module]) -> tuple[ChainStep, ...] | None:
    """The steps after ``start`` when they are a plain chain of Linear and ReLU to the output, else None.

    Such a tail runs on reused buffers with in-place ReLUs and no graph interpretation (``run_chain``), the same
    operations as the modules' own forward (``F.linear`` is ``addmm`` with the transposed weight).
    """
    steps: list[ChainStep] = []
    node = start
    while True:
        users = list(node.users)
        if len(users) != 1:
            return None
        user = users[0]
        if user.op == "output":
            return tuple(steps) if user.args and user.args[0] is node else None
        if user.args[:1] != (node,) or len(user.all_input_nodes) != 1:
            return None
        if user.op == "call_module":
            module = modules[str(user.target)]
            if type(module) is nn.Linear:
                steps.append(
                    ChainStep(module.weight.detach(), module.bias.detach() if module.bias is not None else None)
                )
            elif type(module) is nn.ReLU:
                steps.append(ChainStep(None, None))
            elif not (type(module) is nn.Identity or (type(module) is nn.Dropout and not module.training)):
                return None
        elif (
            user.op in ("call_function", "call_method")
            and op_name(user.target) in RELU_NAMES
            and len(user.args) == 1
            and set(user.kwargs) <= {"inplace"}
        ):
            steps.append(ChainStep(None, None))
        else:
            return None
        node = user


def run_chain(value: torch.Tensor, chain: Sequence[ChainStep], buffers: LesionBuffers) -> torch.Tensor:
    """Apply a Linear/ReLU tail to ``value`` (rows, C), which it may overwrite; the result lives in ``buffers``."""
    turn = 0
    for step in chain:
        if step.weight is None:
            value.relu_()
            continue
        out = buffers.get("ab"[turn], (value.shape[0], step.weight.shape[0]), value)
        turn = 1 - turn
        if step.bias is not None:  # what F.linear computes for 2-D inputs, written into the buffer
            torch.addmm(step.bias, value, step.weight.t(), out=out)
        else:
            torch.mm(value, step.weight.t(), out=out)
        value = out
    return value


# -- the delta path ---------------------------------------------------------------------------------------------------


def delta_operands(env: dict[str, Any], plan: DeltaPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """(C+1, B) values and (C+1, C_next) weight rows of the delta Linear; row C is "no unit" (padding)."""
    key = "__delta__" + plan.node  # cached in the intact run's environment: one per data batch
    if key not in env:
        h = env[plan.input]  # (B, C), intact: the steps between the layer and the Linear preserve 0
        rows = torch.cat([h.t(), h.new_zeros(1, h.shape[0])]).contiguous()
        weight = torch.cat([plan.weight.t(), plan.weight.new_zeros(1, plan.weight.shape[0])]).contiguous()
        env[key] = (rows, weight)
    return env[key]


def delta_value(
    env: dict[str, Any], plan: DeltaPlan, idx: torch.Tensor, *, complement: bool, batch: int, buffers: LesionBuffers
) -> torch.Tensor:
    """(M·B, C_next): the Linear's output with the lesions applied, ``delta`` or ``kept`` form."""
    rows, weight = delta_operands(env, plan)
    m, width = idx.shape[0], weight.shape[1]
    hs = rows[idx].transpose(1, 2)  # (M, B, s): the silenced (or kept) units' values
    out = buffers.get("start", (m, batch, width), weight)
    if complement:  # z' = b + h[:, K] W[:, K]ᵀ
        torch.bmm(hs, weight[idx], out=out)
        if plan.bias is not None:
            out += plan.bias
    else:  # z' = z − h[:, S] W[:, S]ᵀ for every lesion at once, in one fused batched product
        out.copy_(env[plan.node].unsqueeze(0).expand(m, batch, width))
        out.baddbmm_(hs, weight[idx], alpha=-1.0)
    return out.view(m * batch, width)


def delta_to_output(
    env: dict[str, Any], plan: DeltaPlan, idx: torch.Tensor, last: ChainStep, batch: int, buffers: LesionBuffers
) -> torch.Tensor:
    """The ``delta`` lesion of the last hidden layer's predecessor when only ReLU → Linear follow: the output.

    relu(z − Δ) = z − min(Δ, z) exactly, so W relu(z − Δ) + b = (W z + b) − W min(Δ, z), with W z + b computed once
    per data batch: one pass over the (M·B, C) values instead of a copy, the subtraction and the ReLU. Equal to the
    plain form up to float rounding, like every ``delta`` lesion.
    """
    assert last.weight is not None  # the chain's last step is a Linear
    rows, weight = delta_operands(env, plan)
    z = env[plan.node]  # (B, C), the intact Linear output
    m, width, outputs = idx.shape[0], weight.shape[1], last.weight.shape[0]
    low = buffers.get("start", (m, batch, width), weight)
    torch.bmm(rows[idx].transpose(1, 2), weight[idx], out=low)  # Δ
    low.clamp_max_(z)  # min(Δ, z), in place
    key = "__fold__" + plan.node  # cached in the intact run's environment: one per data batch
    if key not in env:
        env[key] = F.linear(z, last.weight, last.bias)
    out = buffers.get("a", (m, batch, outputs), weight)
    torch.mm(low.view(m * batch, width), last.weight.t(), out=out.view(m * batch, outputs))
    torch.sub(env[key], out, out=out)
    return out.view(m * batch, outputs)


# -- the compiled kernels ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NativeTail:
    """What the compiled kernels need for one layer's delta-path lesions (``LesionNetwork.native_tail``)."""

    kernels: LesionKernels
    plan: DeltaPlan = field(repr=False)
    wt: torch.Tensor = field(repr=False)  # the delta Linear's weight transposed, zero columns padding its width
    bias: torch.Tensor = field(repr=False)  # (1, width) its bias: the base of the complement form
    wout: torch.Tensor | None = field(default=None, repr=False)  # the last Linear, padded (None: no hidden step)
    bout: torch.Tensor | None = field(default=None, repr=False)
    hidden: DeepHidden | None = field(default=None, repr=False)  # a Linear between them (AMX)


def plan_native_tail(plan: DeltaPlan, chain: tuple[ChainStep, ...] | None) -> NativeTail | None:
    """The kernels' padded operands for lesions through ``plan`` followed by ``chain``, or None where they do not
    apply: not float32, no kernels here, or a tail other than nothing, ReLU → Linear, or (with AMX) ReLU → Linear →
    ReLU → Linear."""
    if chain is None or plan.weight.dtype != torch.float32:
        return None
    kinds = tuple(step.weight is not None for step in chain)  # True: a Linear, False: a ReLU
    if kinds not in ((), (False, True), (False, True, False, True)):
        return None
    linears = [(step.weight, step.bias) for step in chain if step.weight is not None]
    if linears and linears[-1][0].shape[0] > kernels.MAX_OUTPUTS:
        return None
    operands = [plan.weight, plan.bias] + [t for pair in linears for t in pair]
    if not all(bool(torch.isfinite(t).all()) for t in operands if t is not None):
        return None
    library = kernels.lesion_kernels()  # looked up on the module: tests replace it
    if library is None or (len(linears) == 2 and not library.amx):
        return None
    multiple = 32 if len(linears) == 2 else 16  # the kernel's vectors are 16 floats, AMX tiles 32 inputs
    width = -(-plan.weight.shape[0] // multiple) * multiple
    wt = pad_columns(plan.weight.t(), width)  # zero columns pad
    bias = plan.bias if plan.bias is not None else plan.weight.new_zeros(plan.weight.shape[0])
    bias = pad_columns(bias.unsqueeze(0), width)
    if not linears:
        return NativeTail(library, plan, wt, bias)
    (last_weight, last_bias), hidden = linears[-1], None
    if len(linears) == 2:
        hidden = DeepHidden.prepare(linears[0][0], linears[0][1], last_weight, last_bias, width)
    wout = pad_columns(last_weight, hidden.width if hidden else width)
    wout = torch.cat([wout, wout.new_zeros(-wout.shape[0] % 4, wout.shape[1])])  # 4 outputs at a time
    bout = (last_bias if last_bias is not None else last_weight.new_zeros(last_weight.shape[0])).contiguous()
    return NativeTail(library, plan, wt, bias, wout, bout, hidden)


def pad_columns(value: torch.Tensor, width: int) -> torch.Tensor:
    """(rows, width) contiguous float32: ``value`` with zero columns appended."""
    if value.shape[1] == width and value.is_contiguous():
        return value
    out = value.new_zeros(value.shape[0], width)
    out[:, : value.shape[1]] = value
    return out
