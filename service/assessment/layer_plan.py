"""Where the lesions of each layer act: the traced network's Linear/Conv layers as the store numbers them, with
the value their neurons are, their activation, and the "delta" path when one exists (methods.md §5, §9.1)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from torch import fx, nn

from neuronmap.loaders.tracing.graph_builder import Step, TracedNetwork
from neuronmap.options import BatchNormLesion
from neuronmap.service.assessment.tails import DeltaPlan, op_name

# f(0) = 0 and elementwise: silencing a unit before or after these is the same (the "delta" path's condition).
_ZERO_PRESERVING_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.AlphaDropout,
)
_ZERO_PRESERVING_NAMES = frozenset(
    {
        "relu",
        "relu_",
        "relu6",
        "leaky_relu",
        "leaky_relu_",
        "prelu",
        "_prelu_kernel",
        "elu",
        "elu_",
        "celu",
        "selu",
        "gelu",
        "silu",
        "mish",
        "tanh",
        "tanh_",
        "hardtanh",
        "hardtanh_",
        "hardswish",
        "softsign",
        "tanhshrink",
        "dropout",
        "native_dropout",
        "feature_dropout",
        "alpha_dropout",
        "feature_alpha_dropout",
        "clone",
        "contiguous",
        "detach",
        "alias",
    }
)


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


def plan_layers(
    traced: TracedNetwork, by_name: dict[str, fx.Node], modules: dict[str, nn.Module], batchnorm: BatchNormLesion
) -> list[LayerPoint]:
    """Every Linear/Conv layer of the trace, with its neurons' value, activation and delta path."""
    consumers: dict[str, list[Step]] = defaultdict(list)
    for step in traced.steps:
        for name in step.inputs:
            consumers[name].append(step)
    outputs = Counter(traced.outputs)
    shapes = {step.out: step.shape for step in traced.steps}

    def only_user(value: str) -> Step | None:
        users = consumers[value]
        return users[0] if len(users) == 1 and not outputs[value] else None

    def zero_preserving(node: fx.Node) -> bool:
        if node.op == "call_module":
            return isinstance(modules[str(node.target)], _ZERO_PRESERVING_MODULES)
        return op_name(node.target) in _ZERO_PRESERVING_NAMES

    taken, layers = {"input"}, list[LayerPoint]()
    for step in traced.steps:
        if step.kind not in ("linear", "conv"):
            continue
        name, k = step.name, 0
        while name in taken:  # the loaders name a module called twice fc, fc@1, … (graph_builder._unique)
            k += 1
            name = f"{step.name}@{k}"
        taken.add(name)
        assert step.weight is not None  # the loaders keep every Linear/Conv weight
        follower = only_user(step.out)
        bn = follower.out if follower is not None and follower.kind == "batch_norm" else None
        value = bn if (bn and batchnorm == "after") else step.out
        activation = bn or step.out
        while (user := only_user(activation)) is not None and user.kind == "elementwise":
            activation = user.out
        delta = delta_plan(value, only_user, shapes, lambda out: zero_preserving(by_name[out]))
        layers.append(
            LayerPoint(
                index=len(layers) + 1,
                name=name,
                kind=step.kind,
                size=int(step.weight.shape[0]),
                shape=tuple(step.shape),
                output=step.out,
                value=value,
                activation=activation,
                batchnorm=bn,
                delta=delta,
            )
        )
    return layers


def delta_plan(
    value: str,
    only_user: Callable[[str], Step | None],
    shapes: dict[str, tuple[int, ...]],
    zero_preserving: Callable[[str], bool],
) -> DeltaPlan | None:
    """The delta path of the layer whose neurons are ``value``: the next Linear, reached through f(0) = 0 steps."""
    if len(shapes.get(value, ())) != 1:
        return None  # conv maps: the mask path
    current = value
    while (user := only_user(current)) is not None:
        if user.kind == "linear":
            if user.weight is None or user.weight.dim() != 2:
                return None
            bias = user.bias.detach() if user.bias is not None else None
            return DeltaPlan(node=user.out, input=current, weight=user.weight.detach(), bias=bias)
        if user.kind == "reshape" and user.shape == shapes[current]:
            current = user.out
            continue
        if user.kind == "elementwise" and zero_preserving(user.out):
            current = user.out
            continue
        return None
    return None
