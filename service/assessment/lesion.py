"""Batched lesions: many sets of silenced neurons evaluated in one forward pass per data batch.

A *lesion* of a set S of neurons in layer ℓ sets their value to 0: the Linear/Conv output (after a BatchNorm
that reads it directly, by default), which is what zeroing their incoming weights and bias does in the folded
graph neuronmap stores (methods.md §5). For a ReLU layer it equals zeroing the units' outputs.

How the batching works (methods.md §9.1). The network is traced with torch.fx, with the loaders' own tracer, so
the layers here are the stored layers (same names, same indices). For one batch of B inputs the intact network
runs once and keeps every value. A chunk of M lesions of layer ℓ then re-runs only the part of the graph that
depends on ℓ, with the batch expanded to M·B rows:

- ``"mask"``: ℓ's value (B, C[, H, W]) is multiplied by M keep-masks into (M·B, C[, H, W]); any other value that
  a later step reads (a residual branch from before ℓ) is repeated M times on the fly;
- ``"delta"``: when ℓ reaches the next Linear only through zero-preserving elementwise steps (ReLU, tanh, GELU,
  dropout in eval mode, …: f(0) = 0, so silencing a unit before or after them is the same), the lesion is applied
  at that Linear's output instead: z' = z − h[:, S] W[:, S]ᵀ, a batched product over |S| columns rather than a
  matrix product over all C. Equal to ``"mask"`` up to float rounding (the sum is ordered differently); ``"auto"``
  uses it only for sets of at most half their layer, where the subtraction cannot cancel most of the sum. For
  larger sets ``"auto"`` sums the kept units instead, z' = b + h[:, K] W[:, K]ᵀ (the complement form: the mask
  path's sum without its zero terms, over fewer than half the columns). When only ReLU → Linear follow that
  Linear (a lesion of the second-to-last hidden layer), relu(z − Δ) = z − min(Δ, z) lets the next Linear read
  min(Δ, z) against W z + b computed once per data batch.

When the graph after the lesion is a plain chain of Linear and ReLU modules (an MLP's tail), the lesioned runs skip
the graph interpreter: each pass writes into buffers reused from pass to pass, ReLUs work in place, and the Linears
are the modules' own ``addmm``, so ``"mask"`` stays exactly equal to one forward pass per lesion.

``lesion_correct_counts`` returns per-class counts of correct predictions for each lesion; the one-lesion-at-a-time
baseline (``one_at_a_time_correct_counts``) is kept for the tests and ``bench/importance.py``.

BatchNorm (methods.md §5 ⚠). In a Conv → BatchNorm → ReLU stack the neuron neuronmap stores is the folded
BatchNorm output. ``batchnorm="after"`` (the default) silences that value, so the channel's output is 0 like
every other lesioned unit. ``batchnorm="before"`` silences the Conv output only, as zeroing the Conv's kernel and
bias in the reference did: the BatchNorm then turns the channel into the constant β − γμ/√(σ²+ε), not 0.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from neuronmap.loaders.tracing.graph_builder import Step, TracedNetwork
from neuronmap.loaders.tracing.trace_module import trace_module

from neuronmap.service.errors import AssessmentInputError

LesionMethod = Literal["auto", "mask", "delta"]
BatchNormLesion = Literal["after", "before"]

# f(0) = 0 and elementwise: silencing a unit before or after these is the same (the "delta" path's condition).
_ZERO_PRESERVING_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU,
                            nn.Mish, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Softsign, nn.Tanhshrink, nn.Identity,
                            nn.Dropout, nn.Dropout1d, nn.AlphaDropout)
_ZERO_PRESERVING_NAMES = frozenset({
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "prelu", "_prelu_kernel", "elu", "elu_", "celu", "selu",
    "gelu", "silu", "mish", "tanh", "tanh_", "hardtanh", "hardtanh_", "hardswish", "softsign", "tanhshrink",
    "dropout", "native_dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "clone", "contiguous",
    "detach", "alias",
})
_RELU_NAMES = frozenset({"relu", "relu_"})
_FRESH_NAMES = frozenset({"linear", "conv2d", "convolution", "addmm", "batch_norm", "add", "baddbmm"})


def _op_name(target: Any) -> str:
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
class LayerPoint:
    """One layer of neurons of the traced network, named and numbered as the store numbers them."""

    index: int  # 0 is the input
    name: str  # module path, as stored
    kind: str  # "linear" or "conv"
    size: int  # neurons: units or channels
    shape: tuple[int, ...]  # the value's shape without the batch dim
    output: str  # the Linear/Conv output value
    value: str  # the neurons' value: after a BatchNorm that reads the output directly, else the output
    activation: str  # the value after the layer's elementwise steps (its activation function), for coherence
    batchnorm: str | None  # the BatchNorm value, when one follows directly
    delta: DeltaPlan | None  # the "delta" lesion path, when the layer reaches a Linear through f(0) = 0 steps only


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose gradient still flows through negative inputs of a sample when nothing else flows for it.

    lucid's ``relu_gradient_override`` (methods.md §6): without it, a unit that starts negative for a random image
    never receives a gradient and feature visualisation stalls. Where the plain ReLU gradient of a sample is all
    zero, the gradient passes unless it would push an already negative input further down.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        relu_grad = torch.where(x < 0, torch.zeros_like(grad), grad)
        redirected = torch.where((x < 0) & (grad > 0), torch.zeros_like(grad), grad)  # grad of the loss (minimised)
        magnitude = relu_grad.reshape(relu_grad.shape[0], -1).norm(dim=1)
        through = (magnitude > 0).reshape(-1, *([1] * (x.dim() - 1)))
        return torch.where(through, relu_grad, redirected)


def redirected_relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU with lucid's redirected gradient; see ``_RedirectedReLU``."""
    return _RedirectedReLU.apply(x)


class LesionNetwork:
    """A network traced once, runnable with batches of lesions on any of its layers.

    Parameters
    ----------
    module : nn.Module
        In eval mode (``model_source.reload_module`` gives one). Moved to ``device``.
    input_shape : sequence of int, optional
        One input's shape without the batch dim; defaults as ``loaders.trace_module`` defaults it.
    device : str or torch.device, default "cpu"
    batchnorm : {"after", "before"}, default "after"
        Where a layer followed directly by a BatchNorm is silenced; see the module docstring.
    traced : TracedNetwork, optional
        The loaders' trace of ``module`` when it is not an nn.Module that torch.fx can trace (a ``torch.export``
        program's ``.module()``: pass ``trace_export(ep)``). Its value names must be node names of ``module``.

    Attributes
    ----------
    layers : list of LayerPoint
        Every layer of neurons after the input, in the stored order (``layers[i].index == i + 1``).
    input_shape : tuple of int
    """

    def __init__(self, module: nn.Module, input_shape: Sequence[int] | None = None, *,
                 device: str | torch.device = "cpu", batchnorm: BatchNormLesion = "after",
                 traced: TracedNetwork | None = None) -> None:
        if batchnorm not in ("after", "before"):
            raise AssessmentInputError(f"batchnorm must be 'after' or 'before', got {batchnorm!r}.")
        self.device = torch.device(device)
        module = module.to(self.device)
        try:
            module.eval()
        except NotImplementedError:  # a torch.export program's module: already an inference graph
            pass
        self.module = module
        self.traced = traced if traced is not None else trace_module(module, input_shape)
        self.input_shape = tuple(int(d) for d in self.traced.input_shape)
        self.gm = module if isinstance(module, fx.GraphModule) else fx.symbolic_trace(module)
        self._nodes = list(self.gm.graph.nodes)
        self._by_name = {node.name: node for node in self._nodes}
        missing = [s.out for s in self.traced.steps if s.out not in self._by_name]
        if missing:
            raise AssessmentInputError(f"The traced network names values {missing[:3]} that the module's graph lacks; "
                                       "pass the trace of this very module.")
        self._modules = dict(self.gm.named_modules())
        placeholders = [n for n in self._nodes if n.op == "placeholder"]
        self._input = next((n for n in placeholders if n.name == self.traced.input), placeholders[0])
        self._depends: set[str] = set()
        for node in self._nodes:
            if node is self._input or any(a.name in self._depends for a in node.all_input_nodes):
                self._depends.add(node.name)
        self.batchnorm = batchnorm
        self.layers = self._plan_layers()
        self._descendants_cache: dict[frozenset[str], list[fx.Node]] = {}
        self._chain_cache: dict[str, tuple[_ChainStep, ...] | None] = {}
        self._native_cache: dict[str, NativeTail | None] = {}

    # -- structure -------------------------------------------------------------------------------------------------

    def _plan_layers(self) -> list[LayerPoint]:
        steps = self.traced.steps
        consumers: dict[str, list[Step]] = defaultdict(list)
        for step in steps:
            for name in step.inputs:
                consumers[name].append(step)
        outputs = Counter(self.traced.outputs)
        shapes = {step.out: step.shape for step in steps}

        def only_user(value: str) -> Step | None:
            users = consumers[value]
            return users[0] if len(users) == 1 and not outputs[value] else None

        taken, layers = {"input"}, []
        for step in steps:
            if step.kind not in ("linear", "conv"):
                continue
            name, k = step.name, 0
            while name in taken:  # the loaders name a module called twice fc, fc@1, … (graph_builder._unique)
                k += 1
                name = f"{step.name}@{k}"
            taken.add(name)
            follower = only_user(step.out)
            batchnorm = follower.out if follower is not None and follower.kind == "batch_norm" else None
            value = batchnorm if (batchnorm and self.batchnorm == "after") else step.out
            activation = batchnorm or step.out
            while (user := only_user(activation)) is not None and user.kind == "elementwise":
                activation = user.out
            layers.append(LayerPoint(index=len(layers) + 1, name=name, kind=step.kind,
                                     size=int(step.weight.shape[0]), shape=tuple(step.shape), output=step.out,
                                     value=value, activation=activation, batchnorm=batchnorm,
                                     delta=self._delta_plan(value, only_user, shapes)))
        return layers

    def _delta_plan(self, value: str, only_user: Callable[[str], Step | None],
                    shapes: dict[str, tuple[int, ...]]) -> DeltaPlan | None:
        if len(shapes.get(value, ())) != 1:
            return None  # conv maps: the mask path
        current = value
        while (user := only_user(current)) is not None:
            node = self._by_name[user.out]
            if user.kind == "linear":
                if user.weight is None or user.weight.dim() != 2:
                    return None
                bias = user.bias.detach() if user.bias is not None else None
                return DeltaPlan(node=user.out, input=current, weight=user.weight.detach(), bias=bias)
            if user.kind == "reshape" and user.shape == shapes[current]:
                current = user.out
                continue
            if user.kind == "elementwise" and self._zero_preserving(node):
                current = user.out
                continue
            return None
        return None

    def _zero_preserving(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            return isinstance(self._modules[node.target], _ZERO_PRESERVING_MODULES)
        return _op_name(node.target) in _ZERO_PRESERVING_NAMES

    def layer(self, layer: int | str) -> LayerPoint:
        """A layer by stored index (1 …) or name; raises AssessmentInputError naming the known ones."""
        for point in self.layers:
            if point.index == layer or point.name == layer:
                return point
        known = ", ".join(f"{p.index}:{p.name}" for p in self.layers)
        raise AssessmentInputError(f"The network has no layer {layer!r}; its layers are {known}.")

    # -- running ---------------------------------------------------------------------------------------------------

    def _call(self, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any], relu_override: bool) -> Any:
        # An in-place op would overwrite a value that the intact run keeps for the lesioned runs: work on a copy.
        if node.op == "call_module":
            module = self._modules[node.target]
            if relu_override and isinstance(module, nn.ReLU):
                return redirected_relu(args[0])
            if getattr(module, "inplace", False) and args and isinstance(args[0], torch.Tensor):
                args = (args[0].clone(), *args[1:])
            return module(*args, **kwargs)
        name = _op_name(node.target)
        if relu_override and name in _RELU_NAMES:
            return redirected_relu(args[0])
        in_place = (name.endswith("_") and not name.endswith("__")) or kwargs.get("inplace") is True
        if in_place and args and isinstance(args[0], torch.Tensor):
            args = (args[0].clone(), *args[1:])
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        raise AssertionError(node.op)  # pragma: no cover

    def _skip(self, node: fx.Node) -> bool:
        # torch.export's .module() checks its input shapes in a call that returns nothing; nothing reads it
        return node.op == "call_module" and str(node.target).startswith("_guards") and not node.users

    def run(self, x: torch.Tensor, *, stop_at: str | None = None, relu_override: bool = False,
            keep: bool = False) -> Any:
        """Run the intact network on ``x``.

        Parameters
        ----------
        x : torch.Tensor of shape (B, *input_shape)
        stop_at : str, optional
            Return this value (a node name, e.g. a layer's ``activation``) instead of the output.
        relu_override : bool, default False
            ReLUs pass lucid's redirected gradient (feature visualisation).
        keep : bool, default False
            Return every value by node name (the environment that ``run_lesioned`` reuses).

        Returns
        -------
        torch.Tensor, or dict of str to value when ``keep``
        """
        env: dict[str, Any] = {}
        for node in self._nodes:
            if node.op == "placeholder":
                env[node.name] = x if node is self._input else None
            elif node.op == "get_attr":
                env[node.name] = _fetch_attr(self.gm, node.target)
            elif node.op == "output":
                return env if keep else _first_tensor(fx.node.map_arg(node.args, lambda n: env[n.name]))
            elif self._skip(node):
                env[node.name] = None
            else:
                args = fx.node.map_arg(node.args, lambda n: env[n.name])
                kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n.name])
                env[node.name] = self._call(node, args, kwargs, relu_override)
            if node.name == stop_at:
                return env if keep else env[node.name]
        raise AssertionError("the graph has no output")  # pragma: no cover

    def _descendants(self, starts: frozenset[str]) -> list[fx.Node]:
        if starts not in self._descendants_cache:
            reached = set(starts)
            for node in self._nodes:
                if node.name not in reached and any(a.name in reached for a in node.all_input_nodes):
                    reached.add(node.name)
            self._descendants_cache[starts] = [n for n in self._nodes if n.name in reached]
        return self._descendants_cache[starts]

    @torch.no_grad()
    def run_lesioned(self, env: dict[str, Any], *, masks: dict[str, torch.Tensor] | None = None,
                     delta: tuple[DeltaPlan, torch.Tensor] | None = None,
                     kept: tuple[DeltaPlan, torch.Tensor] | None = None,
                     buffers: LesionBuffers | None = None) -> torch.Tensor:
        """The output of M lesioned copies of the network at once, reusing the intact run ``env`` (no gradients).

        Parameters
        ----------
        env : dict
            ``run(x, keep=True)`` for a batch of B inputs.
        masks : dict of str to torch.Tensor of shape (M, C)
            Keep-masks (1 keep, 0 silence) per layer value (``LayerPoint.value``); several layers are lesioned
            jointly, row m of every mask belonging to copy m.
        delta : (DeltaPlan, torch.Tensor of shape (M, s)), optional
            Instead of masks: silence the units ``idx[m]`` (padded with C, "no unit") of a layer through its
            ``DeltaPlan``: z' = z − h[:, S] W[:, S]ᵀ.
        kept : (DeltaPlan, torch.Tensor of shape (M, k)), optional
            Instead of masks: keep only the units ``idx[m]`` (padded with C) of a layer and silence the rest, through
            its ``DeltaPlan`` in complement form: z' = b + h[:, K] W[:, K]ᵀ. The same sum as ``masks`` without the
            silenced units' zero terms (up to float rounding), and cheaper when most of the layer is silenced.
        buffers : LesionBuffers, optional
            Scratch memory reused from call to call (``lesion_correct_counts`` passes one); the result is then a
            view into it, valid until the next call with the same buffers.

        Returns
        -------
        torch.Tensor of shape (M·B, n_outputs)
            Row m·B + b is copy m on input b.
        """
        masks = masks or {}
        if sum((bool(masks), delta is not None, kept is not None)) != 1:
            raise AssessmentInputError("Pass exactly one of masks, a delta lesion or a kept lesion.")
        batch = _first_tensor(env[self._input.name]).shape[0]
        buffers = buffers or LesionBuffers()
        if not masks:
            plan, idx = delta if delta is not None else kept
            chain = self._chain(plan.node)
            if (chain is not None and delta is not None and len(chain) == 2 and chain[0].weight is None
                    and chain[1].weight is not None):
                return self._delta_to_output(env, plan, idx, chain[1], batch, buffers)
            if chain is not None:
                value = self._delta_value(env, plan, idx, complement=kept is not None, batch=batch,
                                          buffers=buffers)
                return _run_chain(value, chain, buffers)
            return self._run_graph(env, {}, (plan, idx, kept is not None), batch, buffers)
        if len(masks) == 1:
            (name, keep), = masks.items()
            value = env[name]
            chain = self._chain(name) if isinstance(value, torch.Tensor) and value.dim() == 2 else None
            if chain is not None:
                m, size = keep.shape
                out = buffers.get("start", (m, batch, size), value)
                torch.mul(value.unsqueeze(0), keep.to(value.dtype).unsqueeze(1), out=out)
                return _run_chain(out.view(m * batch, size), chain, buffers)
        return self._run_graph(env, masks, None, batch, buffers)

    def _run_graph(self, env: dict[str, Any], masks: dict[str, torch.Tensor],
                   delta: tuple[DeltaPlan, torch.Tensor, bool] | None, batch: int,
                   buffers: LesionBuffers) -> torch.Tensor:
        """``run_lesioned`` for any graph: interpret every node downstream of the lesion on the expanded batch."""
        starts = frozenset(masks) if masks else frozenset({delta[0].node})
        todo = self._descendants(starts)
        m = next(iter(masks.values())).shape[0] if masks else delta[1].shape[0]
        position = {node.name: i for i, node in enumerate(todo)}
        last_use: dict[str, int] = {}
        for i, node in enumerate(todo):
            for a in node.all_input_nodes:
                last_use[a.name] = i
        local: dict[str, Any] = {}  # expanded (M·B) values and expanded copies of intact ones

        def fetch(n: fx.Node) -> Any:
            if n.name in local:
                return local[n.name]
            value = env[n.name]
            if (n.name in self._depends and isinstance(value, torch.Tensor) and value.dim() > 0
                    and value.shape[0] == batch):
                value = value.unsqueeze(0).expand(m, *value.shape).reshape(m * batch, *value.shape[1:])
                local[n.name] = value  # a residual branch from before the lesion, repeated once
            return value

        output: Any = None
        for i, node in enumerate(todo):
            if node.op == "output":
                output = _first_tensor(fx.node.map_arg(node.args, fetch))
                break
            if delta is not None and node.name == delta[0].node:
                plan, idx, complement = delta  # a fresh buffer: the graph below may work on it in place
                value = self._delta_value(env, plan, idx, complement=complement, batch=batch,
                                          buffers=LesionBuffers())
                expanded = True
            elif node.name in starts and not any(a.name in position for a in node.all_input_nodes):
                value = env[node.name]  # the intact value: the lesion is the first change
                expanded = False
            elif self._skip(node):
                continue
            else:
                args = fx.node.map_arg(node.args, fetch)
                kwargs = fx.node.map_arg(node.kwargs, fetch)
                if self._relu_in_place(node, starts):
                    value = torch.relu_(args[0])  # its input is a fresh (M·B) tensor that nothing else reads
                else:
                    value = self._call(node, args, kwargs, False)
                expanded = True
            if node.name in masks:
                keep = masks[node.name].to(value.dtype)
                view = (m, 1, keep.shape[1]) + (1,) * (value.dim() - 2)
                if expanded:
                    value = (value.reshape(m, batch, *value.shape[1:]) * keep.reshape(view)).reshape(value.shape)
                else:
                    value = (value.unsqueeze(0) * keep.reshape(view)).reshape(m * batch, *value.shape[1:])
            local[node.name] = value
            for a in node.all_input_nodes:
                if last_use.get(a.name) == i and a.name in local:
                    del local[a.name]  # free the expanded values as soon as nothing reads them
        if output is None:
            raise AssertionError("the lesioned graph has no output")  # pragma: no cover
        return output

    def _delta_value(self, env: dict[str, Any], plan: DeltaPlan, idx: torch.Tensor, *, complement: bool,
                     batch: int, buffers: LesionBuffers) -> torch.Tensor:
        """(M·B, C_next): the Linear's output with the lesions applied, ``delta`` or ``kept`` form."""
        rows, weight = self._delta_operands(env, plan)  # (C+1, B), (C+1, C_next); row C is "no unit"
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

    def _delta_to_output(self, env: dict[str, Any], plan: DeltaPlan, idx: torch.Tensor, last: _ChainStep,
                         batch: int, buffers: LesionBuffers) -> torch.Tensor:
        """The ``delta`` lesion of the last hidden layer's predecessor when only ReLU → Linear follow: the output.

        relu(z − Δ) = z − min(Δ, z) exactly, so W relu(z − Δ) + b = (W z + b) − W min(Δ, z), with W z + b
        computed once per data batch: one pass over the (M·B, C) values instead of a copy, the subtraction and the
        ReLU. Equal to the plain form up to float rounding, like every ``delta`` lesion.
        """
        rows, weight = self._delta_operands(env, plan)
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

    def _chain(self, start: str) -> tuple[_ChainStep, ...] | None:
        """The steps after ``start`` when they are a plain chain of Linear and ReLU to the output, else None.

        Such a tail runs on reused buffers with in-place ReLUs and no graph interpretation (``_run_chain``), the
        same operations as the modules' own forward (``F.linear`` is ``addmm`` with the transposed weight).
        """
        if start in self._chain_cache:
            return self._chain_cache[start]
        steps: list[_ChainStep] = []
        node, chain = self._by_name[start], None
        while True:
            users = list(node.users)
            if len(users) != 1:
                break
            user = users[0]
            if user.op == "output":
                if user.args and user.args[0] is node:
                    chain = tuple(steps)
                break
            if user.args[:1] != (node,) or len(user.all_input_nodes) != 1:
                break
            if user.op == "call_module":
                module = self._modules[user.target]
                if type(module) is nn.Linear:
                    steps.append(_ChainStep(module.weight.detach(),
                                            module.bias.detach() if module.bias is not None else None))
                elif type(module) is nn.ReLU:
                    steps.append(_ChainStep(None, None))
                elif not (type(module) is nn.Identity or (type(module) is nn.Dropout and not module.training)):
                    break
            elif (user.op in ("call_function", "call_method") and _op_name(user.target) in _RELU_NAMES
                  and len(user.args) == 1 and set(user.kwargs) <= {"inplace"}):
                steps.append(_ChainStep(None, None))
            else:
                break
            node = user
        self._chain_cache[start] = chain
        return chain

    def _relu_in_place(self, node: fx.Node, starts: frozenset[str]) -> bool:
        """A ReLU whose single input is a freshly computed value read by nothing else: safe to apply in place."""
        if node.op == "call_module":
            if not isinstance(self._modules[node.target], nn.ReLU):
                return False
        elif node.op not in ("call_function", "call_method") or _op_name(node.target) != "relu" or node.kwargs:
            return False
        inputs = node.all_input_nodes
        if len(inputs) != 1 or len(inputs[0].users) != 1:
            return False
        source = inputs[0]
        if source.name in starts:
            return True
        if source.op == "call_module":
            return isinstance(self._modules[source.target], (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d))
        return source.op == "call_function" and _op_name(source.target) in _FRESH_NAMES

    def _delta_operands(self, env: dict[str, Any], plan: DeltaPlan) -> tuple[torch.Tensor, torch.Tensor]:
        key = "__delta__" + plan.node  # cached in the intact run's environment: one per data batch
        if key not in env:
            h = env[plan.input]  # (B, C), intact: the steps between the layer and the Linear preserve 0
            rows = torch.cat([h.t(), h.new_zeros(1, h.shape[0])]).contiguous()
            weight = torch.cat([plan.weight.t(), plan.weight.new_zeros(1, plan.weight.shape[0])]).contiguous()
            env[key] = (rows, weight)
        return env[key]

    def native_tail(self, point: LayerPoint) -> NativeTail | None:
        """The compiled kernels and padded operands for ``point``'s delta-path lesions, or None where they do not
        apply: not CPU float32, no kernels here, or a tail after the delta Linear other than nothing, ReLU → Linear,
        or (with AMX) ReLU → Linear → ReLU → Linear."""
        if point.delta is None or self.device.type != "cpu":
            return None
        key = point.delta.node
        if key not in self._native_cache:
            self._native_cache[key] = self._plan_native(point.delta)
        return self._native_cache[key]

    def _plan_native(self, plan: DeltaPlan) -> NativeTail | None:
        from neuronmap.service.assessment.kernels import MAX_OUTPUTS, DeepHidden, lesion_kernels

        chain = self._chain(plan.node)
        if chain is None or plan.weight.dtype != torch.float32:
            return None
        kinds = tuple(step.weight is not None for step in chain)  # True: a Linear, False: a ReLU
        if kinds not in ((), (False, True), (False, True, False, True)):
            return None
        linears = [step for step in chain if step.weight is not None]
        if linears and linears[-1].weight.shape[0] > MAX_OUTPUTS:
            return None
        operands = [plan.weight, plan.bias] + [t for step in linears for t in (step.weight, step.bias)]
        if not all(bool(torch.isfinite(t).all()) for t in operands if t is not None):
            return None
        kernels = lesion_kernels()
        if kernels is None or (len(linears) == 2 and not kernels.amx):
            return None
        multiple = 32 if len(linears) == 2 else 16  # the kernel's vectors are 16 floats, AMX tiles 32 inputs
        width = -(-plan.weight.shape[0] // multiple) * multiple
        wt = _pad_columns(plan.weight.t(), width)  # zero columns pad
        bias = plan.bias if plan.bias is not None else plan.weight.new_zeros(plan.weight.shape[0])
        bias = _pad_columns(bias.unsqueeze(0), width)
        if not linears:
            return NativeTail(kernels, plan, wt, bias)
        last, hidden = linears[-1], None
        if len(linears) == 2:
            hidden = DeepHidden.prepare(linears[0].weight, linears[0].bias, last.weight, last.bias, width)
        wout = _pad_columns(last.weight, hidden.width if hidden else width)
        wout = torch.cat([wout, wout.new_zeros(-wout.shape[0] % 4, wout.shape[1])])  # 4 outputs at a time
        bout = (last.bias if last.bias is not None else last.weight.new_zeros(last.weight.shape[0])).contiguous()
        return NativeTail(kernels, plan, wt, bias, wout, bout, hidden)

    def widest(self, starts: Sequence[str]) -> int:
        """The most elements one input has in any value recomputed after lesioning ``starts``."""
        shapes = {step.out: step.shape for step in self.traced.steps}
        return max([int(np.prod(shapes[n.name])) for n in self._descendants(frozenset(starts)) if n.name in shapes]
                   + [1])

    def activations(self, x: torch.Tensor, layer: LayerPoint) -> torch.Tensor:
        """The layer's post-activation values (B, C): spatial means for conv channels (methods.md §6)."""
        value = self.run(x, stop_at=layer.activation)
        return value.mean(dim=tuple(range(2, value.dim()))) if value.dim() > 2 else value


def _fetch_attr(gm: fx.GraphModule, target: str) -> Any:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _first_tensor(value: Any) -> Any:
    while isinstance(value, (tuple, list)):
        value = value[0]
    return value


@dataclass(frozen=True)
class _ChainStep:
    """One step of a Linear/ReLU tail (``LesionNetwork._chain``): a Linear when ``weight`` is set, else a ReLU."""

    weight: torch.Tensor | None
    bias: torch.Tensor | None


@dataclass(frozen=True)
class NativeTail:
    """What the compiled kernels need for one layer's delta-path lesions (``LesionNetwork.native_tail``)."""

    kernels: Any  # native.LesionKernels
    plan: DeltaPlan = field(repr=False)
    wt: torch.Tensor = field(repr=False)  # the delta Linear's weight transposed, zero columns padding its width
    bias: torch.Tensor = field(repr=False)  # (1, width) its bias: the base of the complement form
    wout: torch.Tensor | None = field(default=None, repr=False)  # the last Linear, padded (None: no hidden step)
    bout: torch.Tensor | None = field(default=None, repr=False)
    hidden: Any = field(default=None, repr=False)  # native.DeepHidden: a Linear between them (AMX)


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


def _run_chain(value: torch.Tensor, chain: Sequence[_ChainStep], buffers: LesionBuffers) -> torch.Tensor:
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
        idx[row, :len(units)] = np.asarray(units, dtype=np.int64)
    return torch.from_numpy(idx).to(device)


def draw_random_sets(pool: np.ndarray, size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, size) units drawn uniformly without replacement from ``pool``, one independent draw per row."""
    pool = np.asarray(pool, dtype=np.int64)
    if not 0 <= size <= pool.size:
        raise AssessmentInputError(f"Cannot draw {size} units from a layer pool of {pool.size}.")
    keys = rng.random((n, pool.size))
    return pool[np.argsort(keys, axis=1, kind="stable")[:, :size]]


# -- evaluation ------------------------------------------------------------------------------------------------------

def _prepare_inputs(net: LesionNetwork, x: torch.Tensor) -> torch.Tensor:
    shape = net.input_shape
    if tuple(x.shape[1:]) == shape:
        return x
    if int(np.prod(x.shape[1:])) == int(np.prod(shape)):
        return x.reshape(x.shape[0], *shape)  # e.g. flat 784 pixels for a (1, 28, 28) network
    raise AssessmentInputError(f"The data set's inputs have shape {tuple(x.shape[1:])}, but the network reads "
                               f"{shape}; choose a data set made for this network.")


def _class_counts(logits: torch.Tensor, y: torch.Tensor, onehot: torch.Tensor, m: int) -> torch.Tensor:
    pred = logits.max(dim=1).indices.reshape(m, -1)  # (M, B); the first maximum, as argmax, and faster
    correct = (pred == y.unsqueeze(0)).to(onehot.dtype)
    return (correct @ onehot).round().to(torch.int64)  # (M, n_classes)


def lesion_correct_counts(net: LesionNetwork, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                          lesions: Sequence[dict[int, np.ndarray]], *, method: LesionMethod = "auto",
                          batch_size: int = 1000, max_elements: int = 2 ** 22, max_lesions: int = 32,
                          delta_max_fraction: float = 0.5, native: bool = True,
                          on_chunk: Callable[[int], None] | None = None) -> np.ndarray:
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
        ``"auto"``: where the layer allows the delta path (module docstring), ``"delta"`` for sets of at most
        ``delta_max_fraction`` of the layer and the complement form (``run_lesioned(kept=...)``) for larger ones;
        elsewhere ``"mask"``. ``"mask"`` gives exactly the one-at-a-time counts; the other two equal them up to
        float rounding.
    batch_size : int, default 1000
        Inputs per intact run.
    max_elements : int, default 2**22
        Bounds the expanded batch: lesions per pass × inputs × the widest value stays under it. The passes reuse
        their buffers (``LesionBuffers``); on a 2-core CPU, 2**21 to 2**22 was fastest on ``bench/importance.py``.
    max_lesions : int, default 32
        At most this many lesions per pass, whatever the width: for lesions just before the output the gathered
        operands of the delta path, not the width, set the memory of a pass.
    delta_max_fraction : float, default 0.5
        ``"auto"`` takes the delta path for sets of at most this share of their layer, the complement form above.
    native : bool, default True
        Lesions on the delta path whose tail is at most ReLU → Linear (an MLP's last two hidden layers) run in the
        compiled kernels of ``native.py`` when they can be built here (CPU, float32): one fused pass per input and
        lesion that skips the layer's zeros. Same formula as the torch path, summed in another order, so equal to
        it up to float rounding. Where the CPU has AMX, a tail of ReLU → Linear → ReLU → Linear (the layer before)
        runs there too, its hidden product in bfloat16 parts with every prediction certified against exact
        arithmetic or recomputed in float32 (``native.DeepHidden``). False: torch only.
    on_chunk : callable, optional
        Called with the number of lesions finished after each chunk of one data batch (summed over batches, the
        total is ``len(lesions) × n_batches``).

    Returns
    -------
    counts : numpy.ndarray of shape (len(lesions), n_classes), int64
    """
    x = _prepare_inputs(net, x)
    groups: dict[tuple[tuple[int, ...], str], list[int]] = defaultdict(list)  # (layers lesioned, path) → rows
    for row, lesion in enumerate(lesions):
        layers = tuple(sorted(lesion))
        point = net.layer(layers[0]) if len(layers) == 1 else None
        if method == "delta" and (point is None or point.delta is None):
            names = [net.layer(i).name for i in layers]
            raise AssessmentInputError(f"Layer(s) {names} do not reach a Linear through zero-preserving steps only, "
                                       "so method='delta' cannot lesion them; use method='auto' or 'mask'.")
        path = "mask"
        if point is not None and point.delta is not None and method != "mask":
            # The delta path subtracts the silenced units' share from the intact sum: cheap and accurate for small
            # sets; for large ones (a whole layer) the difference cancels and its rounding could decide an argmax
            # tie, so "auto" sums the kept units' share instead, which is also the cheaper form there.
            small = len(lesion[layers[0]]) <= delta_max_fraction * point.size
            path = "delta" if method == "delta" or small else "kept"
        groups[(layers, path)].append(row)
    for (layers, path), rows in groups.items():
        if path != "mask":  # similar sizes together: less padding in the batched product
            rows.sort(key=lambda r: len(lesions[r][layers[0]]))
    counts = torch.zeros(len(lesions), n_classes, dtype=torch.int64)
    buffers = LesionBuffers()
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(net.device)
            yb = y[start:start + batch_size].to(net.device)
            onehot = F.one_hot(yb, n_classes).to(torch.float32)
            env = net.run(xb, keep=True)
            for (layers, path), rows in groups.items():
                points = [net.layer(i) for i in layers]
                if path != "mask" and native:
                    done = _native_counts(net, env, points[0], [lesions[r][layers[0]] for r in rows],
                                          complement=path == "kept", y=yb, n_classes=n_classes)
                    if done is not None:
                        counts[rows] += torch.from_numpy(done)
                        if on_chunk is not None:
                            on_chunk(len(rows))
                        continue
                starts = [points[0].delta.node] if path != "mask" else [p.value for p in points]
                per_pass = max(1, min(max_lesions, max_elements // (xb.shape[0] * net.widest(starts))))
                for lo in range(0, len(rows), per_pass):
                    chunk = rows[lo:lo + per_pass]
                    point = points[0]
                    if path == "delta":
                        idx = padded_indices([lesions[r][point.index] for r in chunk], point.size, net.device)
                        logits = net.run_lesioned(env, delta=(point.delta, idx), buffers=buffers)
                    elif path == "kept":
                        kept = _complements([lesions[r][point.index] for r in chunk], point.size)
                        idx = padded_indices(kept, point.size, net.device)
                        logits = net.run_lesioned(env, kept=(point.delta, idx), buffers=buffers)
                    else:
                        masks = {p.value: keep_masks([lesions[r][p.index] for r in chunk], p.size, net.device)
                                 for p in points}
                        logits = net.run_lesioned(env, masks=masks, buffers=buffers)
                    counts[chunk] += _class_counts(logits, yb, onehot, len(chunk)).cpu()
                    if on_chunk is not None:
                        on_chunk(len(chunk))
            del env
    return counts.numpy()


def _native_counts(net: LesionNetwork, env: dict[str, Any], point: LayerPoint, sets: Sequence[np.ndarray], *,
                   complement: bool, y: torch.Tensor, n_classes: int) -> np.ndarray | None:
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
        base = _pad_columns(z, tail.wt.shape[1])
    idx = padded_indices(sets, point.size)
    y = y.to(torch.int64).contiguous()
    threads = torch.get_num_threads()
    if tail.hidden is not None:
        counts, _ = tail.kernels.lesion_counts_deep(h.contiguous(), tail.wt, idx, base, subtract=not complement,
                                                    hidden=tail.hidden, wout=tail.wout, bout=tail.bout,
                                                    n_out=tail.bout.shape[0], y=y, n_classes=n_classes,
                                                    threads=threads)
        return counts
    n_out = z.shape[1] if tail.wout is None else tail.bout.shape[0]
    return tail.kernels.lesion_counts(h.contiguous(), tail.wt, idx, base, subtract=not complement, wout=tail.wout,
                                      bout=tail.bout, n_out=n_out, y=y, n_classes=n_classes, threads=threads)


def _complements(sets: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """The units of a layer of ``size`` that each set leaves: what the complement form keeps."""
    return [np.setdiff1d(np.arange(size), units) for units in sets]


def _finite(env: dict[str, Any], plan: DeltaPlan) -> bool:
    """Whether the intact values the kernels read are finite (their argmax and ReLU have no NaN semantics)."""
    key = "__finite__" + plan.node  # once per data batch
    if key not in env:
        env[key] = bool(torch.isfinite(env[plan.input]).all()) and bool(torch.isfinite(env[plan.node]).all())
    return env[key]


def _pad_columns(value: torch.Tensor, width: int) -> torch.Tensor:
    """(rows, width) contiguous float32: ``value`` with zero columns appended."""
    if value.shape[1] == width and value.is_contiguous():
        return value
    out = value.new_zeros(value.shape[0], width)
    out[:, :value.shape[1]] = value
    return out


def intact_correct_counts(net: LesionNetwork, x: torch.Tensor, y: torch.Tensor, n_classes: int, *,
                          batch_size: int = 1000) -> np.ndarray:
    """(n_classes,) correct predictions per class of the intact network."""
    x = _prepare_inputs(net, x)
    counts = torch.zeros(n_classes, dtype=torch.int64)
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start:start + batch_size].to(net.device), y[start:start + batch_size].to(net.device)
            onehot = F.one_hot(yb, n_classes).to(torch.float32)
            counts += _class_counts(net.run(xb), yb, onehot, 1)[0].cpu()
    return counts.numpy()


def one_at_a_time_correct_counts(net: LesionNetwork, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                                 lesions: Sequence[dict[int, np.ndarray]], *,
                                 how: Literal["weights", "mask"] = "weights",
                                 batch_size: int = 1000) -> np.ndarray:
    """The baseline: one forward pass over the data per lesion.

    ``how="weights"`` does what the reference did: zero the silenced units' incoming weights and bias in the module
    itself, run it as is, and restore the weights (layers followed by a BatchNorm are refused: zeroing their weights
    leaves the BatchNorm's offset, see the module docstring). ``how="mask"`` multiplies the layer's value by one
    keep-mask in an otherwise intact run.
    """
    x = _prepare_inputs(net, x)
    out = np.zeros((len(lesions), n_classes), dtype=np.int64)
    with torch.no_grad():
        for row, lesion in enumerate(lesions):
            saved: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
            if how == "weights":
                for layer, units in lesion.items():
                    point = net.layer(layer)
                    if point.batchnorm is not None:
                        raise AssessmentInputError(f"Layer {point.name!r} is followed by a BatchNorm; zeroing its "
                                                   "weights does not silence it. Use how='mask'.")
                    target = net.module.get_submodule(point.name)
                    index = torch.as_tensor(np.asarray(units, dtype=np.int64), device=net.device)
                    for param in (target.weight, target.bias):
                        if param is not None:
                            saved.append((param, index, param[index].clone()))
                            param[index] = 0.0
            try:
                for start in range(0, x.shape[0], batch_size):
                    xb, yb = x[start:start + batch_size].to(net.device), y[start:start + batch_size].to(net.device)
                    onehot = F.one_hot(yb, n_classes).to(torch.float32)
                    if how == "weights":
                        logits = net.module(xb)
                    else:
                        env = net.run(xb, keep=True)
                        masks = {net.layer(i).value: keep_masks([u], net.layer(i).size, net.device)
                                 for i, u in lesion.items()}
                        logits = net.run_lesioned(env, masks=masks)
                    out[row] += _class_counts(logits, yb, onehot, 1)[0].cpu().numpy()
            finally:
                for param, index, values in saved:
                    param[index] = values
    return out


# -- a stored model ------------------------------------------------------------------------------------------------

def load_network(store: Any, model: str, *, device: str | torch.device = "cpu",
                 batchnorm: BatchNormLesion = "after") -> LesionNetwork:
    """The stored model's network, re-loaded from its ingest source and checked against its stored layers.

    Parameters
    ----------
    store : neuronmap.cypher.Store
    model : str
    device : str or torch.device, default "cpu"
    batchnorm : {"after", "before"}, default "after"

    Raises
    ------
    ModelNotFoundError, ModelNotReadyError, SourceUnavailableError
        As ``model_source.reload_module`` raises them (a missing or changed source file is refused).
    LayerMismatchError
        The network's layers (names, sizes) are not the stored ones.
    """
    from neuronmap.loaders import load_exported
    from neuronmap.loaders.tracing.trace_export import trace_export

    from neuronmap.service.errors import LayerMismatchError
    from neuronmap.service.store.model_source import reload_module

    module, input_shape = reload_module(store, model)
    source = store.run("admin.model_source", model=model)[0]
    traced = trace_export(load_exported(source["source"])) if source.get("arch") == "torch.export" else None
    net = LesionNetwork(module, input_shape or None, device=device, batchnorm=batchnorm, traced=traced)
    stored = [(row["index"], row["name"], row["size"]) for row in store.run("admin.model_layers", model=model)
              if row["index"] > 0]
    found = [(p.index, p.name, p.size) for p in net.layers]
    if stored != found:
        differ = next(((a, b) for a, b in zip(stored, found) if a != b), None)
        detail = (f"stored layer {differ[0]} vs re-loaded {differ[1]} (index, name, size)" if differ
                  else f"{len(stored)} stored layers vs {len(found)} re-loaded")
        raise LayerMismatchError(model, detail)
    return net
