"""Turn a traced network (a list of steps over named values) into a ModelGraph.

Both front ends, ``trace_module`` (torch.fx) and ``trace_export`` (torch.export), translate their graphs into the
same ``Step`` vocabulary, so the rules for which neurons exist and which edges join them live here once: values carry
the layers whose units they hold (a residual add carries both operands', methods.md §1.2), Linear and Conv2d give
edge blocks, and BatchNorm folds into the layer whose output it reads. Pass 1 checks the structure and plans layers
and blocks symbolically (every unsupported construct fails before any number is computed); pass 2 folds, checks
finiteness and computes the blocks.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Literal, TypedDict

import numpy as np
import torch

from neuronmap.loaders.errors import ArchitectureError, NonFiniteWeightsError, UnsupportedLayerError
from neuronmap.loaders.records import EdgeBlock, KernelNorm, LayerRecord, ModelGraph, ModelMeta
from neuronmap.loaders.tracing.folding import BatchNormParams, fold_batchnorm
from neuronmap.loaders.tracing.weight_edges import conv_edges, flatten_linear_edges, linear_edges

StepKind = Literal["linear", "conv", "batch_norm", "elementwise", "pool", "spatial_mean", "reshape", "add"]
Layout = Literal["units", "channels", "flat"]

_FOLD_HINT = (
    "neuronmap folds BatchNorm into the Linear or Conv2d whose output it reads directly; pass "
    "fold_batchnorm=False (--no-fold-batchnorm) to keep the weights unscaled and treat it as a pass-through"
)


class StepFields(TypedDict):
    """The fields every ``Step`` has, which a front end works out before it knows the step's kind."""

    out: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    path: str
    type_name: str


@dataclass(frozen=True)
class Step:
    """One operation of the traced network, in the front-end-neutral vocabulary.

    ``inputs`` are the network values it reads (values derived from the network input); constants such as
    weights are resolved by the front end into ``weight``, ``bias`` and ``bn``.
    """

    kind: StepKind
    out: str  # the value this step produces
    inputs: tuple[str, ...]
    shape: tuple[int, ...]  # the output's shape without the batch dim
    path: str  # module path, "" for the top-level forward; used in names and messages
    type_name: str  # module type or op name, for messages
    name: str = ""  # the layer name of a linear/conv step
    weight: torch.Tensor | None = None  # linear (out, in); conv (out, in/groups, kh, kw)
    bias: torch.Tensor | None = None
    groups: int = 1
    bn: BatchNormParams | None = None


@dataclass(frozen=True)
class TracedNetwork:
    """A network as the front ends see it: one input value, steps in topological order, output values."""

    input: str
    input_shape: tuple[int, ...]  # without the batch dim
    steps: list[Step]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class _Value:
    sources: tuple[int, ...]  # layer indices whose units this value carries; repeated if added twice
    layout: Layout  # units: one per element; channels: a (C, H, W) map; flat: a flattened (C, H, W) map
    shape: tuple[int, ...]
    map_shape: tuple[int, int, int] | None = None  # the (C, H, W) a "flat" value came from


@dataclass
class _Layer:
    name: str
    kind: Literal["input", "linear", "conv"]
    size: int
    shape: tuple[int, ...]
    step: Step | None = None
    batch_norms: list[BatchNormParams] = field(default_factory=list)

    @property
    def weight_step(self) -> Step:
        """The Linear/Conv step of a weight layer (every layer but the input)."""
        assert self.step is not None, "the input layer has no weights"
        return self.step


@dataclass(frozen=True)
class _Contribution:
    src: int
    dst: int
    how: Literal["linear", "flat", "conv"]
    map_shape: tuple[int, int, int] | None = None


def build_graph(
    net: TracedNetwork,
    *,
    kernel_norm: KernelNorm = "entry_l1",
    fold_batchnorm: bool = True,
    meta: ModelMeta | None = None,
) -> ModelGraph:
    """Layers, edge blocks and biases of a traced network.

    Parameters
    ----------
    net : TracedNetwork
        The output of ``trace_module`` or ``trace_export``.
    kernel_norm : {"entry_l1", "induced1", "spectral2", "fro"}, default="entry_l1"
        How a kh×kw kernel slice (or an H×W map of a Linear's weights on one channel) becomes one edge weight.
    fold_batchnorm : bool, default=True
        Fold each BatchNorm into the layer it follows. False keeps the raw weights and treats BatchNorm as a
        pass-through, as the reference's CIFAR graphs did.
    meta : ModelMeta, optional
        Stored on the result as given.

    Returns
    -------
    graph : ModelGraph
    """
    layers, contributions, output_layers = _plan(net, fold_batchnorm)
    weights, biases = _fold_and_check(layers)
    blocks = _compute_blocks(layers, contributions, weights, kernel_norm)
    records = [
        LayerRecord(
            index=i,
            name=layer.name,
            kind=layer.kind,
            role="input" if i == 0 else ("output" if i in output_layers else "hidden"),
            size=layer.size,
            shape=list(layer.shape),
        )
        for i, layer in enumerate(layers)
    ]
    return ModelGraph(layers=records, blocks=blocks, biases=biases, meta=meta or ModelMeta())


# -- pass 1: structure ---------------------------------------------------------------------------------------------


def _input_layout(net: TracedNetwork) -> Layout:
    """Whether the input's neurons are its features (MLP) or its channels (CNN).

    An MLP's input layer has one neuron per input feature, e.g. 784 pixels for a flattened image (methods.md
    §1.1); a CNN's has one per input channel. Which one is decided by the first weight layers the input reaches.
    """
    consumers: dict[str, list[Step]] = defaultdict(list)
    for step in net.steps:
        for name in step.inputs:
            consumers[name].append(step)
    reached: dict[str, Step] = {}
    seen, frontier = {net.input}, [net.input]
    while frontier:
        for step in consumers[frontier.pop()]:
            if step.kind in ("linear", "conv"):
                reached.setdefault(step.kind, step)
            elif step.out not in seen:
                seen.add(step.out)
                frontier.append(step.out)
    if not reached:
        raise ArchitectureError(
            "No Linear or Conv2d layer reads the network's input, so the network has no weights to build a graph from."
        )
    if len(reached) == 2:
        raise UnsupportedLayerError(
            reached["linear"].path,
            reached["linear"].type_name,
            f"reads the network input while Conv2d {reached['conv'].path!r} also does",
            hint="neuronmap needs the input's neurons to be either its features (an MLP) "
            "or its channels (a CNN), not both",
        )
    if "conv" in reached:
        if len(net.input_shape) != 3:
            raise ArchitectureError(
                f"The network's input has shape {net.input_shape} (without the batch dim), but "
                "a Conv2d reads it; pass a (C, H, W) input shape."
            )
        return "channels"
    return "units"


def _plan(net: TracedNetwork, fold_batchnorm: bool) -> tuple[list[_Layer], list[_Contribution], set[int]]:
    """Layers and symbolic edge blocks; raises on anything unsupported before any number is computed."""
    layout = _input_layout(net)
    in_shape = net.input_shape
    in_size = in_shape[0] if layout == "channels" else math.prod(in_shape)
    layers = [_Layer(name="input", kind="input", size=in_size, shape=in_shape)]
    values = {net.input: _Value(sources=(0,), layout=layout, shape=in_shape)}
    n_consumers: dict[str, int] = defaultdict(int)
    for step in net.steps:
        for name in step.inputs:
            n_consumers[name] += 1
    for name in net.outputs:
        n_consumers[name] += 1
    layer_of_value: dict[str, int] = {}  # values that are exactly a layer's (folded) output
    contributions: list[_Contribution] = []
    names: set[str] = {"input"}

    for step in net.steps:
        ins = [values[name] for name in step.inputs]
        if step.kind in ("linear", "conv"):
            (x,) = ins
            index = len(layers)
            name = _unique(step.name, names)
            contributions += _weight_contributions(step, x, index)
            layers.append(
                _Layer(name=name, kind=step.kind, size=int(_weight(step).shape[0]), shape=step.shape, step=step)
            )
            values[step.out] = _Value(
                sources=(index,), layout="channels" if step.kind == "conv" else "units", shape=step.shape
            )
            layer_of_value[step.out] = index
        elif step.kind == "batch_norm":
            (x,) = ins
            values[step.out] = replace(x, shape=step.shape)
            if fold_batchnorm:
                layer_index = layer_of_value.get(step.inputs[0])
                if layer_index is None or n_consumers[step.inputs[0]] != 1:
                    raise UnsupportedLayerError(
                        step.path,
                        step.type_name,
                        "does not directly follow a Linear or Conv2d output"
                        if layer_index is None
                        else "reads a layer output that is also used elsewhere",
                        hint=_FOLD_HINT,
                    )
                _attach_batch_norm(step, layers[layer_index])
                layer_of_value[step.out] = layer_index
        elif step.kind == "elementwise":
            (x,) = ins
            if step.shape != x.shape:
                raise UnsupportedLayerError(step.path, step.type_name, f"changes the shape {x.shape} to {step.shape}")
            values[step.out] = x
        elif step.kind == "pool":
            (x,) = ins
            if x.layout != "channels" or len(step.shape) != 3 or step.shape[0] != x.shape[0]:
                raise UnsupportedLayerError(
                    step.path,
                    step.type_name,
                    f"pools a value of shape {x.shape} that is not a (C, H, W) map of channels",
                )
            values[step.out] = replace(x, shape=step.shape)
        elif step.kind == "spatial_mean":
            (x,) = ins
            if x.layout != "channels":
                raise UnsupportedLayerError(
                    step.path, step.type_name, f"averages a value of shape {x.shape} that is not a (C, H, W) map"
                )
            # One scalar per channel: a (C,) vector of the same neurons, or (C, 1, 1) with keepdim.
            values[step.out] = _Value(x.sources, "units" if len(step.shape) == 1 else "channels", step.shape)
        elif step.kind == "reshape":
            (x,) = ins
            values[step.out] = _reshape(step, x)
        elif step.kind == "add":
            values[step.out] = _add(step, ins)
        else:  # pragma: no cover - the front ends only build the kinds above
            raise AssertionError(f"unknown step kind {step.kind!r}")

    output_layers = {source for name in net.outputs if name in values for source in values[name].sources}
    output_layers.discard(0)
    return layers, contributions, output_layers


def _weight(step: Step) -> torch.Tensor:
    assert step.weight is not None, f"{step.kind} step {step.out!r} has no weight"  # both front ends set one
    return step.weight


def _attach_batch_norm(step: Step, layer: _Layer) -> None:
    """Queue a BatchNorm step for folding into the layer whose output it reads."""
    bn = step.bn
    assert bn is not None, f"batch_norm step {step.out!r} has no parameters"  # both front ends set them
    if bn.num_features != layer.size:
        raise ArchitectureError(
            f"BatchNorm {step.path!r} normalises {bn.num_features} features, but layer {layer.name!r} has {layer.size}."
        )
    layer.batch_norms.append(bn)


def _unique(name: str, taken: set[str]) -> str:
    """A module called twice gives two layers (two sets of activations); name the second ``fc@1``, as fx does."""
    candidate, k = name, 0
    while candidate in taken:
        k += 1
        candidate = f"{name}@{k}"
    taken.add(candidate)
    return candidate


def _weight_contributions(step: Step, x: _Value, dst: int) -> list[_Contribution]:
    weight = _weight(step)
    if step.kind == "conv":
        if x.layout != "channels" or len(x.shape) != 3:
            raise UnsupportedLayerError(
                step.path, step.type_name, f"reads a value of shape {x.shape} that is not a (C, H, W) map of channels"
            )
        if weight.dim() != 4:
            raise UnsupportedLayerError(
                step.path,
                step.type_name,
                f"has a {weight.dim() - 2}-D kernel",
                hint="neuronmap reads 2-D convolutions only",
            )
        if x.shape[0] != weight.shape[1] * step.groups:
            raise ArchitectureError(
                f"Conv2d {step.path!r} expects {weight.shape[1] * step.groups} input channels but reads {x.shape[0]}."
            )
        return [_Contribution(src, dst, "conv") for src in x.sources]
    if len(x.shape) != 1:
        raise UnsupportedLayerError(
            step.path,
            step.type_name,
            f"is applied to the last dim of a value of shape {x.shape}",
            hint="Flatten the value first so every element is one input feature",
        )
    if x.shape[0] != weight.shape[1]:
        raise ArchitectureError(
            f"Linear {step.path!r} expects {weight.shape[1]} input features but reads {x.shape[0]}."
        )
    if x.layout == "flat":
        return [_Contribution(src, dst, "flat", x.map_shape) for src in x.sources]
    return [_Contribution(src, dst, "linear") for src in x.sources]


def _reshape(step: Step, x: _Value) -> _Value:
    """Flatten, view, reshape, squeeze: which neurons the reshaped elements belong to."""
    shape = step.shape
    if math.prod(shape) != math.prod(x.shape):
        raise UnsupportedLayerError(step.path, step.type_name, f"reshapes {x.shape} to {shape} across the batch dim")
    if shape == x.shape:
        return x
    if x.layout == "units":
        return replace(x, shape=shape)  # row-major reshapes keep the element order, so each unit stays itself
    if x.layout == "channels":
        c, h, w = x.shape
        if h * w == 1:
            # One element per channel: any reshape keeps the channel order, and the edge into a Linear is the
            # signed weight itself rather than a norm over a 1×1 map.
            if len(shape) == 3 and shape[0] == c:
                return replace(x, shape=shape)
            return _Value(x.sources, "units", shape)
        if len(shape) == 1:
            return _Value(x.sources, "flat", shape, map_shape=(c, h, w))
    if x.layout == "flat" and shape == x.map_shape:
        return _Value(x.sources, "channels", shape)
    raise UnsupportedLayerError(
        step.path,
        step.type_name,
        f"reshapes a {x.layout} value of shape {x.shape} to {shape}",
        hint="neuronmap follows flattening a (C, H, W) map to (C·H·W,) and reshapes that "
        "keep whole channels or units together",
    )


def _add(step: Step, ins: list[_Value]) -> _Value:
    if len(ins) == 1:
        return replace(ins[0], shape=step.shape)  # adding a constant moves no neuron
    a, b = ins
    if (a.layout, a.shape, a.map_shape) != (b.layout, b.shape, b.map_shape) or a.shape != step.shape:
        raise UnsupportedLayerError(
            step.path,
            step.type_name,
            f"adds values of shapes {a.shape} and {b.shape} ({a.layout}, {b.layout})",
            hint="neuronmap follows residual adds of two values with the same neurons",
        )
    return _Value(a.sources + b.sources, a.layout, a.shape, a.map_shape)


# -- pass 2: numbers -----------------------------------------------------------------------------------------------


def _fold_and_check(layers: list[_Layer]) -> tuple[dict[int, torch.Tensor], list[np.ndarray | None]]:
    """Float64 weights (by layer index) and biases of every layer after folding; raises on NaN or inf."""
    weights: dict[int, torch.Tensor] = {}
    biases: list[np.ndarray | None] = [None]
    for index, layer in enumerate(layers[1:], start=1):
        step = layer.weight_step
        _check_finite(layer.name, _weight(step), "weights")
        if step.bias is not None:
            _check_finite(layer.name, step.bias, "biases")
        weight = _weight(step).detach().to("cpu", torch.float64)
        bias = (
            torch.zeros(layer.size, dtype=torch.float64)
            if step.bias is None
            else step.bias.detach().to("cpu", torch.float64)
        )
        for bn in layer.batch_norms:
            weight, bias = fold_batchnorm(weight, bias, bn)
        if layer.batch_norms:
            note = f"after folding BatchNorm {', '.join(repr(bn.path) for bn in layer.batch_norms)}"
            _check_finite(layer.name, weight, "weights", note)
            _check_finite(layer.name, bias, "biases", note)
        weights[index] = weight
        biases.append(bias.numpy().copy())
    return weights, biases


def _check_finite(layer: str, tensor: torch.Tensor, what: str, note: str = "") -> None:
    bad = int((~torch.isfinite(tensor.detach())).sum())
    if bad:
        raise NonFiniteWeightsError(layer, bad, tensor.numel(), what=what, note=note)


def _compute_blocks(
    layers: list[_Layer], contributions: list[_Contribution], weights: dict[int, torch.Tensor], kernel_norm: KernelNorm
) -> list[EdgeBlock]:
    """One block per (source layer, layer) pair; contributions that meet on the same pair are summed."""
    cache: dict[tuple[int, str, tuple[int, int, int] | None], np.ndarray] = {}
    summed: dict[tuple[int, int], np.ndarray] = {}
    for c in contributions:
        key = (c.dst, c.how, c.map_shape)
        if key not in cache:  # every source of one layer sees the same matrix
            weight = weights[c.dst]
            if c.how == "linear":
                cache[key] = linear_edges(weight)
            elif c.how == "flat":
                assert c.map_shape is not None  # a "flat" value always records the map it came from
                cache[key] = flatten_linear_edges(weight, c.map_shape, kernel_norm)
            else:
                cache[key] = conv_edges(weight, layers[c.dst].weight_step.groups, kernel_norm)
        block = cache[key]
        pair = (c.src, c.dst)
        summed[pair] = summed[pair] + block if pair in summed else block.copy()
    return [
        EdgeBlock(src_layer=src, dst_layer=dst, weight=w)
        for (src, dst), w in sorted(summed.items(), key=lambda item: (item[0][1], item[0][0]))
    ]
