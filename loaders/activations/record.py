"""Record the units of a network over a data set, one batch at a time (methods.md §2).

:class:`ActivationRecorder` traces the module with torch.fx as ``graph_from_module`` does (a ``torch.export``
program: reads its graph as ``graph_from_exported`` does, and runs ``ExportedProgram.module()``), so layers, unit
indexes and global neuron ordinals are the weight graph's. An identity *tap* after each recorded value carries a
forward hook; one forward pass gives a ``(batch, n_units)`` float32 matrix on the device, conv channels reduced per
image.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.export import ExportedProgram

from neuronmap.device import resolve_device
from neuronmap.loaders.errors import ActivationError, ArchitectureError, OptionError
from neuronmap.loaders.records import LayerRecord
from neuronmap.loaders.tracing.graph_builder import TracedNetwork, build_graph
from neuronmap.loaders.tracing.trace_export import trace_export
from neuronmap.loaders.tracing.trace_module import trace_module
from neuronmap.options import ChannelReduction, RecordPoint, choices

REDUCTIONS = choices(ChannelReduction)
POINTS = choices(RecordPoint)


def _check_option(name: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise OptionError(name, value, allowed)


class _Tap(nn.Module):
    """An identity inserted after a recorded value, so a forward hook can see it (functional calls have no hook)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _select_layers(layers: list[LayerRecord], selection: str | Sequence[str | int]) -> list[int]:
    if isinstance(selection, str):
        if selection == "hidden":
            chosen = [layer.index for layer in layers if layer.role == "hidden"]
        elif selection == "all":
            chosen = [layer.index for layer in layers]
        else:
            chosen = [_layer_index(layers, selection)]
    else:
        chosen = sorted({_layer_index(layers, item) for item in selection})
    if not chosen:
        names = ", ".join(f"{layer.name} ({layer.role})" for layer in layers)
        raise ActivationError(
            f"layers={selection!r} selects no layer; this network's layers are: {names}. Pass "
            "layers='all' or name them."
        )
    return chosen


def _layer_index(layers: list[LayerRecord], item: str | int) -> int:
    for layer in layers:
        if item == layer.name or (isinstance(item, int) and not isinstance(item, bool) and item == layer.index):
            return layer.index
    names = ", ".join(layer.name for layer in layers)
    raise ActivationError(
        f"There is no layer {item!r} in this network; its layers are: {names}. Pass 'hidden', "
        "'all', or names or indexes from that list."
    )


def _recorded_values(net: TracedNetwork, layer_values: list[str], recorded: list[int], point: str) -> list[str]:
    """The fx value recorded for each layer: its output, then (``post``) the BatchNorm and element-wise steps that
    read it alone, e.g. ``fc1 → bn1 → relu``; the chain stops at anything shared, pooled, added or reshaped."""
    if point == "pre":
        return [layer_values[i] for i in recorded]
    consumers: dict[str, list[Any]] = defaultdict(list)
    for step in net.steps:
        for name in set(step.inputs):
            consumers[name].append(step)
    outputs = set(net.outputs)
    values = []
    for index in recorded:
        name = layer_values[index]
        while index > 0 and name not in outputs and len(consumers[name]) == 1:
            step = consumers[name][0]
            if step.kind not in ("elementwise", "batch_norm") or step.inputs != (name,):
                break
            name = step.out
        values.append(name)
    return values


class ActivationRecorder:
    """Record the units of chosen layers with forward hooks, one batch at a time.

    Parameters
    ----------
    module : nn.Module or torch.export.ExportedProgram
        Anything ``graph_from_module`` reads. It runs in eval mode under ``torch.inference_mode``; its training
        flags are restored after every batch. When ``device`` differs from the module's, a copy is moved there.
        An exported program (a ``.pt2`` file's) is read as ``graph_from_exported`` reads it and run through
        ``ExportedProgram.module()``; its input shape is the one it was exported with, except the batch size.
    layers : {"hidden", "all"}, str, int or sequence of them, default="hidden"
        The layers whose units are recorded: hidden layers only (the reference's ``exclude_inputs=True``), every
        layer, or layers by name or index. Inputs of an MLP are its features; of a CNN, its channels.
    reduction : {"l2", "mean", "spectral"}, default="l2"
        How a conv channel's H×W map becomes one value per image: the L2 (Frobenius) norm, the mean, or the
        spectral norm (largest singular value), which is what the reference's ``np.linalg.norm(fmap, ord=2,
        axis=(1, 2))`` computes (methods.md §2 ⚠; use it for parity).
    point : {"post", "pre"}, default="post"
        Record after the layer's BatchNorm and element-wise activation (the reference's), or its raw output.
    input_shape : sequence of int, optional
        One input's shape without the batch dim, when the module does not set ``input_shape``.
    device : {"auto", "cpu", "cuda"} or torch.device, default="auto"

    Attributes
    ----------
    layers : list of LayerRecord
        Every layer of the traced network, as ``graph_from_module`` numbers them.
    recorded : list of int
        The recorded layers' indexes.
    units : np.ndarray of shape (n_units,)
        Global ordinal of each recorded column.
    """

    def __init__(
        self,
        module: nn.Module | ExportedProgram,
        *,
        layers: str | Sequence[str | int] = "hidden",
        reduction: ChannelReduction = "l2",
        point: RecordPoint = "post",
        input_shape: Sequence[int] | None = None,
        device: str | torch.device = "auto",
    ) -> None:
        _check_option("reduction", reduction, REDUCTIONS)
        _check_option("point", point, POINTS)
        if not isinstance(module, (nn.Module, ExportedProgram)):
            raise ArchitectureError(
                f"Expected an nn.Module or a torch.export ExportedProgram, got {type(module).__name__}."
            )
        self.device = resolve_device(device)
        self.reduction, self.point = reduction, point
        exported: ExportedProgram | None = None
        runnable: nn.Module
        if isinstance(module, ExportedProgram):
            # It runs as a fresh GraphModule of its ATen calls, whose node names are its graph's.
            exported, runnable = module, module.module()
        else:
            runnable = module
        param = next(iter(runnable.parameters()), None)
        if param is not None and param.device != self.device:
            runnable = (runnable if exported is not None else copy.deepcopy(runnable)).to(self.device)
        self.dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        if exported is not None:
            net = trace_export(exported)  # checks the architecture, as graph_from_exported does
            _check_exported_shape(net, input_shape)
        else:
            net = trace_module(runnable, input_shape)  # checks the architecture; eval mode while tracing
        graph = build_graph(net, fold_batchnorm=False)  # the weight graph's layers (BatchNorm changes no layer)
        self.layers: list[LayerRecord] = graph.layers
        self.input_shape = tuple(net.input_shape)
        self.recorded = _select_layers(self.layers, layers)
        layer_values = [net.input] + [step.out for step in net.steps if step.kind in ("linear", "conv")]
        values = _recorded_values(net, layer_values, self.recorded, point)

        self._module = runnable
        self._captured: dict[int, torch.Tensor] = {}
        if isinstance(runnable, fx.GraphModule) and exported is not None:
            self._gm = self._tap(runnable, _exported_values(runnable, net, values))
        else:
            self._gm = self._tapped_trace(runnable, values)
        offsets = np.concatenate([[0], np.cumsum([layer.size for layer in self.layers])]).astype(np.int64)
        self.units = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in self.recorded])
        self._layer_of_column = np.repeat(self.recorded, [self.layers[i].size for i in self.recorded])

    def _tapped_trace(self, module: nn.Module, values: list[str]) -> fx.GraphModule:
        """The module traced by torch.fx, with a hooked tap after the value recorded for each layer."""
        flags = {m: m.training for m in module.modules()}
        module.eval()
        try:
            gm = fx.symbolic_trace(module)  # the same trace as trace_module's, so node names agree
        finally:
            for m, training in flags.items():
                m.training = training
        return self._tap(gm, values)

    def _tap(self, gm: fx.GraphModule, values: list[str]) -> fx.GraphModule:
        """``gm`` with a hooked tap after the value recorded for each layer (``values``: node names of ``gm``)."""
        nodes = {node.name: node for node in gm.graph.nodes}
        for index, value in zip(self.recorded, values):
            node = nodes.get(value)
            if node is None:  # pragma: no cover - both traces run the same tracer on the same module
                raise ArchitectureError(
                    f"Cannot find the value {value!r} of layer {self.layers[index].name!r} in "
                    "the traced graph; record with point='pre' or report this network."
                )
            tap = f"_neuronmap_tap_{index}"
            gm.add_submodule(tap, _Tap())
            with gm.graph.inserting_after(node):
                gm.graph.call_module(tap, (node,))
            gm.get_submodule(tap).register_forward_hook(self._hook(index))
        gm.recompile()
        return gm

    @property
    def n_units(self) -> int:
        return int(self.units.size)

    def describe_unit(self, column: int) -> str:
        """'unit 3 of layer 'fc2'' for a column of the recorded matrix."""
        layer = self.layers[int(self._layer_of_column[column])]
        first = int(np.searchsorted(self._layer_of_column, layer.index))
        return f"unit {column - first} of layer {layer.name!r}"

    def _hook(self, index: int) -> Callable[..., None]:
        layer = self.layers[index]

        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            self._captured[index] = self._reduce(output, layer)

        return hook

    def _reduce(self, x: torch.Tensor, layer: LayerRecord) -> torch.Tensor:
        """(batch, layer.size): units as they are, channels reduced over H×W."""
        if x.dim() == 2 and x.shape[1] == layer.size:
            return x
        if x.dim() == 4 and x.shape[1] == layer.size and (layer.kind == "conv" or layer.size != x[0].numel()):
            if self.reduction == "mean":
                return x.mean(dim=(2, 3))
            if self.reduction == "l2":
                return torch.linalg.vector_norm(x, ord=2, dim=(2, 3))
            # The spectral norm needs an SVD, which torch has in float32/64 only.
            return torch.linalg.matrix_norm(x.float() if x.dtype not in (torch.float32, torch.float64) else x, ord=2)
        if x[0].numel() == layer.size:
            return x.reshape(x.shape[0], -1)
        raise ActivationError(
            f"Layer {layer.name!r} produced a value of shape {tuple(x.shape[1:])}, which is neither "
            f"its {layer.size} units nor a (C, H, W) map of {layer.size} channels."
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_units) float32 activations of one batch of inputs, on the device.

        Flat inputs of the right size are reshaped to the network's input shape (e.g. (N, 784) → (N, 1, 28, 28)).
        """
        if tuple(x.shape[1:]) != self.input_shape and x[0].numel() == math.prod(self.input_shape):
            x = x.reshape(x.shape[0], *self.input_shape)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ActivationError(
                f"Inputs of shape {tuple(x.shape[1:])} do not fit this network, which reads "
                f"{self.input_shape} (without the batch dim). Reshape the data set's inputs."
            )
        flags = {m: m.training for m in self._module.modules()}
        _eval(self._module)
        self._captured.clear()
        try:
            with torch.inference_mode():
                self._gm(x.to(device=self.device, dtype=self.dtype))
                missing = [self.layers[i].name for i in self.recorded if i not in self._captured]
                if missing:  # pragma: no cover - every tap sits on the forward path
                    raise ActivationError(f"Layers {', '.join(missing)} were not reached by the forward pass.")
                return torch.cat([self._captured[i].reshape(x.shape[0], -1).float() for i in self.recorded], dim=1)
        finally:
            self._captured.clear()
            for m, training in flags.items():
                m.training = training

    def batches(
        self, inputs: torch.Tensor | np.ndarray | Iterable[Any], batch_size: int = 512
    ) -> Iterator[torch.Tensor]:
        """Record ``inputs`` batch by batch; see :func:`iter_inputs` for what ``inputs`` may be."""
        for batch in iter_inputs(inputs, batch_size):
            yield self(batch)


def _eval(module: nn.Module) -> None:
    try:
        module.eval()
    except NotImplementedError:  # an exported program's module: already an inference graph, with no eval()
        pass


def _check_exported_shape(net: TracedNetwork, input_shape: Sequence[int] | None) -> None:
    if input_shape is not None and tuple(int(d) for d in input_shape) != tuple(net.input_shape):
        raise ActivationError(
            f"input_shape={tuple(input_shape)} differs from the shape {tuple(net.input_shape)} the program was "
            "exported with (without the batch dim); leave input_shape out for an exported program."
        )


def _exported_values(gm: fx.GraphModule, net: TracedNetwork, values: list[str]) -> list[str]:
    """The recorded values as node names of ``gm`` (an exported program's ``.module()``), whose graph may call the
    program's input otherwise; its shape guard is dropped, so any batch size runs."""
    for node in list(gm.graph.nodes):
        # torch.export's .module() checks its input shapes (batch size included) in a call that returns nothing
        if node.op == "call_module" and str(node.target).startswith("_guards") and not node.users:
            gm.graph.erase_node(node)
    placeholders = [node.name for node in gm.graph.nodes if node.op == "placeholder"]
    return [placeholders[0] if value == net.input else value for value in values]


def iter_inputs(inputs: torch.Tensor | np.ndarray | Iterable[Any], batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of inputs: slices of a tensor or array, or the items of an iterable (a DataLoader yields ``(x, y)``
    pairs; their first element is taken)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ActivationError(f"batch_size={batch_size!r} must be a positive int.")
    if isinstance(inputs, np.ndarray):
        inputs = torch.from_numpy(inputs)
    if isinstance(inputs, torch.Tensor):
        for start in range(0, inputs.shape[0], batch_size):
            yield inputs[start : start + batch_size]
        return
    for item in inputs:
        if isinstance(item, (tuple, list)):
            item = item[0]
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(item)
        if not isinstance(item, torch.Tensor):
            raise ActivationError(
                f"An input batch is a {type(item).__name__}; pass tensors, arrays, or (x, y) pairs of them."
            )
        yield item


def _count_inputs(inputs: Any) -> int | None:
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        return int(inputs.shape[0])
    dataset = getattr(inputs, "dataset", None)  # a DataLoader over a map-style dataset
    if dataset is not None and getattr(inputs, "drop_last", False) is False:
        try:
            return len(dataset)
        except TypeError:
            return None
    return None
