"""The traced network runner: one torch.fx trace of a model, run intact or with batches of lesions on its layers.

The layers are the stored layers (the loaders' tracer names and numbers them). ``run`` keeps every value of an
intact run; ``run_lesioned`` re-runs only what depends on the lesioned layer, for M lesions at once on an M·B batch
(methods.md §9.1), through the fast tails of ``tails.py`` where the graph allows. Importance (lesions) and coherence
(activations, feature visualisation with lucid's redirected ReLU) both run their networks here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import fx, nn

from neuronmap.device import resolve_device
from neuronmap.loaders.tracing.graph_builder import TracedNetwork
from neuronmap.loaders.tracing.trace_module import trace_module
from neuronmap.options import BatchNormLesion, choices
from neuronmap.service.assessment.layer_plan import LayerPoint, plan_layers
from neuronmap.service.assessment.tails import (
    RELU_NAMES,
    ChainStep,
    DeltaPlan,
    LesionBuffers,
    NativeTail,
    delta_to_output,
    delta_value,
    linear_relu_chain,
    op_name,
    plan_native_tail,
    run_chain,
)
from neuronmap.service.errors import AssessmentInputError

_FRESH_NAMES = frozenset({"linear", "conv2d", "convolution", "addmm", "batch_norm", "add", "baddbmm"})


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose gradient still flows through negative inputs of a sample when nothing else flows for it.

    lucid's ``relu_gradient_override`` (methods.md §6): without it, a unit that starts negative for a random image
    never receives a gradient and feature visualisation stalls. Where the plain ReLU gradient of a sample is all
    zero, the gradient passes unless it would push an already negative input further down.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
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
        As ``neuronmap.device.resolve_device`` reads it.
    batchnorm : {"after", "before"}, default "after"
        Where a layer followed directly by a BatchNorm is silenced (methods.md §5): ``"after"`` silences the
        BatchNorm output, the stored neuron; ``"before"`` the Conv output only, as zeroing the Conv's weights does.
    traced : TracedNetwork, optional
        The loaders' trace of ``module`` when it is not an nn.Module that torch.fx can trace (a ``torch.export``
        program's ``.module()``: pass ``trace_export(ep)``). Its value names must be node names of ``module``.

    Attributes
    ----------
    layers : list of LayerPoint
        Every layer of neurons after the input, in the stored order (``layers[i].index == i + 1``).
    input_shape : tuple of int
    """

    def __init__(
        self,
        module: nn.Module,
        input_shape: Sequence[int] | None = None,
        *,
        device: str | torch.device = "cpu",
        batchnorm: BatchNormLesion = "after",
        traced: TracedNetwork | None = None,
    ) -> None:
        if batchnorm not in choices(BatchNormLesion):
            raise AssessmentInputError(f"batchnorm must be 'after' or 'before', got {batchnorm!r}.")
        self.device = resolve_device(device)
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
            raise AssessmentInputError(
                f"The traced network names values {missing[:3]} that the module's graph lacks; "
                "pass the trace of this very module."
            )
        self._modules = dict(self.gm.named_modules())
        placeholders = [n for n in self._nodes if n.op == "placeholder"]
        self._input = next((n for n in placeholders if n.name == self.traced.input), placeholders[0])
        self._depends: set[str] = set()
        for node in self._nodes:
            if node is self._input or any(a.name in self._depends for a in node.all_input_nodes):
                self._depends.add(node.name)
        self.batchnorm = batchnorm
        self.layers = plan_layers(self.traced, self._by_name, self._modules, batchnorm)
        self._descendants_cache: dict[frozenset[str], list[fx.Node]] = {}
        self._chain_cache: dict[str, tuple[ChainStep, ...] | None] = {}
        self._native_cache: dict[str, NativeTail | None] = {}

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
            module = self._modules[str(node.target)]
            if relu_override and isinstance(module, nn.ReLU):
                return redirected_relu(args[0])
            if getattr(module, "inplace", False) and args and isinstance(args[0], torch.Tensor):
                args = (args[0].clone(), *args[1:])
            return module(*args, **kwargs)
        name = op_name(node.target)
        if relu_override and name in RELU_NAMES:
            return redirected_relu(args[0])
        in_place = (name.endswith("_") and not name.endswith("__")) or kwargs.get("inplace") is True
        if in_place and args and isinstance(args[0], torch.Tensor):
            args = (args[0].clone(), *args[1:])
        if node.op == "call_function":
            assert callable(node.target)
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        raise AssertionError(node.op)  # pragma: no cover

    def _skip(self, node: fx.Node) -> bool:
        # torch.export's .module() checks its input shapes in a call that returns nothing; nothing reads it
        return node.op == "call_module" and str(node.target).startswith("_guards") and not node.users

    def run(
        self, x: torch.Tensor, *, stop_at: str | None = None, relu_override: bool = False, keep: bool = False
    ) -> Any:
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
                env[node.name] = _fetch_attr(self.gm, str(node.target))
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
    def run_lesioned(
        self,
        env: dict[str, Any],
        *,
        masks: dict[str, torch.Tensor] | None = None,
        delta: tuple[DeltaPlan, torch.Tensor] | None = None,
        kept: tuple[DeltaPlan, torch.Tensor] | None = None,
        buffers: LesionBuffers | None = None,
    ) -> torch.Tensor:
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
        if delta is not None or kept is not None:
            pair = delta if delta is not None else kept
            assert pair is not None
            plan, idx = pair
            chain = self._chain(plan.node)
            if (
                chain is not None
                and delta is not None
                and len(chain) == 2
                and chain[0].weight is None
                and chain[1].weight is not None
            ):
                return delta_to_output(env, plan, idx, chain[1], batch, buffers)
            if chain is not None:
                value = delta_value(env, plan, idx, complement=kept is not None, batch=batch, buffers=buffers)
                return run_chain(value, chain, buffers)
            return self._run_graph(env, {}, (plan, idx, kept is not None), batch, buffers)
        if len(masks) == 1:
            ((name, keep),) = masks.items()
            value = env[name]
            chain = self._chain(name) if isinstance(value, torch.Tensor) and value.dim() == 2 else None
            if chain is not None:
                m, size = keep.shape
                out = buffers.get("start", (m, batch, size), value)
                torch.mul(value.unsqueeze(0), keep.to(value.dtype).unsqueeze(1), out=out)
                return run_chain(out.view(m * batch, size), chain, buffers)
        return self._run_graph(env, masks, None, batch, buffers)

    def _run_graph(
        self,
        env: dict[str, Any],
        masks: dict[str, torch.Tensor],
        delta: tuple[DeltaPlan, torch.Tensor, bool] | None,
        batch: int,
        buffers: LesionBuffers,
    ) -> torch.Tensor:
        """``run_lesioned`` for any graph: interpret every node downstream of the lesion on the expanded batch."""
        if delta is None:
            starts, m = frozenset(masks), next(iter(masks.values())).shape[0]
        else:
            starts, m = frozenset({delta[0].node}), delta[1].shape[0]
        todo = self._descendants(starts)
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
            if (
                n.name in self._depends
                and isinstance(value, torch.Tensor)
                and value.dim() > 0
                and value.shape[0] == batch
            ):
                value = value.unsqueeze(0).expand(m, *value.shape).reshape(m * batch, *value.shape[1:])
                local[n.name] = value  # a residual branch from before the lesion, repeated once
            return value

        for i, node in enumerate(todo):
            if node.op == "output":
                output = _first_tensor(fx.node.map_arg(node.args, fetch))
                if output is None:
                    break
                return output
            if delta is not None and node.name == delta[0].node:
                plan, idx, complement = delta  # a fresh buffer: the graph below may work on it in place
                value = delta_value(env, plan, idx, complement=complement, batch=batch, buffers=LesionBuffers())
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
                    # its input is a fresh (M·B) tensor that nothing else reads
                    value = torch.relu_(cast(torch.Tensor, args[0]))
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
        raise AssertionError("the lesioned graph has no output")  # pragma: no cover

    def _relu_in_place(self, node: fx.Node, starts: frozenset[str]) -> bool:
        """A ReLU whose single input is a freshly computed value read by nothing else: safe to apply in place."""
        if node.op == "call_module":
            if not isinstance(self._modules[str(node.target)], nn.ReLU):
                return False
        elif node.op not in ("call_function", "call_method") or op_name(node.target) != "relu" or node.kwargs:
            return False
        inputs = node.all_input_nodes
        if len(inputs) != 1 or len(inputs[0].users) != 1:
            return False
        source = inputs[0]
        if source.name in starts:
            return True
        if source.op == "call_module":
            return isinstance(self._modules[str(source.target)], (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d))
        return source.op == "call_function" and op_name(source.target) in _FRESH_NAMES

    # -- planned tails ---------------------------------------------------------------------------------------------

    def _chain(self, start: str) -> tuple[ChainStep, ...] | None:
        """The Linear/ReLU chain from the value ``start`` to the output (``tails.linear_relu_chain``), cached."""
        if start not in self._chain_cache:
            self._chain_cache[start] = linear_relu_chain(self._by_name[start], self._modules)
        return self._chain_cache[start]

    def native_tail(self, point: LayerPoint) -> NativeTail | None:
        """The compiled kernels and padded operands for ``point``'s delta-path lesions, or None where they do not
        apply: not CPU float32, no kernels here, or a tail after the delta Linear other than nothing, ReLU → Linear,
        or (with AMX) ReLU → Linear → ReLU → Linear."""
        if point.delta is None or self.device.type != "cpu":
            return None
        key = point.delta.node
        if key not in self._native_cache:
            self._native_cache[key] = plan_native_tail(point.delta, self._chain(key))
        return self._native_cache[key]

    def widest(self, starts: Sequence[str]) -> int:
        """The most elements one input has in any value recomputed after lesioning ``starts``."""
        shapes = {step.out: step.shape for step in self.traced.steps}
        return max(
            [int(np.prod(shapes[n.name])) for n in self._descendants(frozenset(starts)) if n.name in shapes] + [1]
        )

    def activations(self, x: torch.Tensor, layer: LayerPoint) -> torch.Tensor:
        """The layer's post-activation values (B, C): spatial means for conv channels (methods.md §6)."""
        value = self.run(x, stop_at=layer.activation)
        return value.mean(dim=tuple(range(2, value.dim()))) if value.dim() > 2 else value


def prepare_inputs(net: LesionNetwork, x: torch.Tensor) -> torch.Tensor:
    """``x`` in the network's input shape: as is, or reshaped when only the layout differs (flat pixels)."""
    shape = net.input_shape
    if tuple(x.shape[1:]) == shape:
        return x
    if int(np.prod(x.shape[1:])) == int(np.prod(shape)):
        return x.reshape(x.shape[0], *shape)  # e.g. flat 784 pixels for a (1, 28, 28) network
    raise AssessmentInputError(
        f"The data set's inputs have shape {tuple(x.shape[1:])}, but the network reads "
        f"{shape}; choose a data set made for this network."
    )


def _fetch_attr(gm: fx.GraphModule, target: str) -> Any:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _first_tensor(value: Any) -> Any:
    while isinstance(value, (tuple, list)):
        value = value[0]
    return value
