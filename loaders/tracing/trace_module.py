"""Front end for in-process modules: torch.fx symbolic tracing plus shape propagation → a TracedNetwork.

The graph comes from tracing, never from assuming ``nn.Sequential``: torch.nn modules are leaves
(``call_module``), user modules are traced through, and functional calls (``F.relu``, ``torch.flatten``,
``x.view``, ``+``) appear as ``call_function``/``call_method`` nodes.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from neuronmap.loaders.errors import ArchitectureError, UnsupportedLayerError
from neuronmap.loaders.records import KernelNorm, ModelGraph, ModelMeta
from neuronmap.loaders.tracing.folding import BatchNormParams
from neuronmap.loaders.tracing.graph_builder import Step, StepFields, StepKind, TracedNetwork, build_graph
from neuronmap.loaders.tracing.weight_edges import check_kernel_norm

_ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.LogSigmoid,
    nn.Tanhshrink,
    # Softmax mixes the units it normalises but carries no weights, so for the weight graph it passes through.
    nn.Softmax,
    nn.LogSoftmax,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_RESHAPE_MODULES = (nn.Flatten, nn.Unflatten)
_BATCHNORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d)


def _functions(*names: str, modules: Sequence[Any] = (torch, F)) -> frozenset[Callable[..., Any]]:
    """The callables that fx may record for each name, from whichever namespaces define it."""
    found = {getattr(module, name) for module in modules for name in names if hasattr(module, name)}
    return frozenset(f for f in found if callable(f) and not isinstance(f, torch.dtype))


_ELEMENTWISE_NAMES = (
    "relu",
    "relu_",
    "relu6",
    "leaky_relu",
    "leaky_relu_",
    "prelu",
    "elu",
    "elu_",
    "selu",
    "celu",
    "gelu",
    "silu",
    "mish",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "hardtanh",
    "hardtanh_",
    "hardswish",
    "hardsigmoid",
    "softplus",
    "softsign",
    "logsigmoid",
    "tanhshrink",
    "softmax",
    "log_softmax",
    "dropout",
    "dropout1d",
    "dropout2d",
    "alpha_dropout",
    "feature_alpha_dropout",
    "clone",
    "contiguous",
    "detach",
    "float",
    "double",
    "half",
    "to",
)
_KIND_OF_FUNCTION: dict[Callable[..., Any], StepKind] = {
    **{f: "elementwise" for f in _functions(*_ELEMENTWISE_NAMES)},
    **{f: "pool" for f in _functions("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d")},
    **{f: "reshape" for f in _functions("flatten", "reshape", "view", "squeeze", "unsqueeze")},
    **{f: "spatial_mean" for f in _functions("mean")},
    **{f: "add" for f in (operator.add, operator.iadd, *_functions("add", "add_"))},
    **{f: "linear" for f in _functions("linear", modules=(F,))},
    **{f: "conv" for f in _functions("conv2d", modules=(F, torch))},
    **{f: "batch_norm" for f in _functions("batch_norm", modules=(F,))},
}
_KIND_OF_METHOD: dict[str, StepKind] = {
    **{name: "elementwise" for name in _ELEMENTWISE_NAMES},
    **{name: "reshape" for name in ("flatten", "reshape", "view", "squeeze", "unsqueeze")},
    "mean": "spatial_mean",
    "add": "add",
    "add_": "add",
    "__add__": "add",
    "__iadd__": "add",
}


def graph_from_module(
    module: nn.Module,
    *,
    input_shape: Sequence[int] | None = None,
    kernel_norm: KernelNorm = "entry_l1",
    fold_batchnorm: bool = True,
) -> ModelGraph:
    """Trace an in-process module into neurons and weighted edges.

    Parameters
    ----------
    module : nn.Module
        Any module that ``torch.fx.symbolic_trace`` can trace, with one input tensor. It is traced and run in
        eval mode (so BatchNorm uses its running statistics and its buffers are left alone); its training flags
        are restored afterwards.
    input_shape : sequence of int, optional
        The input's shape without the batch dim, e.g. ``(1, 28, 28)``. Defaults to ``module.input_shape`` when the
        factory set one, else to ``(in_features,)`` of the first Linear. Conv nets need one of the two.
    kernel_norm : {"entry_l1", "induced1", "spectral2", "fro"}, default="entry_l1"
        The norm that turns a kernel slice into one channel edge; see ``weight_edges.kernel_slice_norm``.
    fold_batchnorm : bool, default=True
        Fold BatchNorm into the preceding Linear/Conv (methods.md §1.2). False treats it as a pass-through.

    Returns
    -------
    graph : ModelGraph
        ``meta.arch`` is ``"nn.Module:<class name>"`` and ``meta.sha256`` is empty.

    Raises
    ------
    UnsupportedLayerError
        For a module or operation outside the supported set, naming its module path and type.
    ArchitectureError
        When the module cannot be traced or run on the input shape.
    NonFiniteWeightsError
        When a layer holds NaN or inf.
    """
    kernel_norm = check_kernel_norm(kernel_norm)
    net = trace_module(module, input_shape)
    meta = ModelMeta(
        arch=f"nn.Module:{type(module).__name__}",
        source="in-process nn.Module",
        kernel_norm=kernel_norm,
        fold_batchnorm=fold_batchnorm,
    )
    return build_graph(net, kernel_norm=kernel_norm, fold_batchnorm=fold_batchnorm, meta=meta)


def trace_module(module: nn.Module, input_shape: Sequence[int] | None = None) -> TracedNetwork:
    """Trace ``module`` with torch.fx, propagate shapes, and translate its nodes into ``Step``s."""
    if not isinstance(module, nn.Module):
        raise ArchitectureError(f"Expected an nn.Module, got {type(module).__name__}.")
    flags = {m: m.training for m in module.modules()}
    module.eval()  # trace the inference network: BatchNorm reads running stats, `if self.training` is False
    try:
        try:
            gm = fx.symbolic_trace(module)
        except Exception as error:  # fx raises many types (TraceError, TypeError, ...) for untraceable code
            raise ArchitectureError(
                f"torch.fx cannot trace {type(module).__name__} ({type(error).__name__}: {error}). Export it with "
                "torch.export.export and torch.export.save, then load the .pt2 file instead."
            ) from error
        _check_leaf_modules(gm)  # before running anything: an Embedding would fail obscurely on a float input
        shape = _resolve_input_shape(module, input_shape)
        _propagate_shapes(gm, module, shape)
        return _Translator(gm, type(module).__name__).translate(shape)
    finally:
        for m, training in flags.items():
            m.training = training


def _check_leaf_modules(gm: fx.GraphModule) -> None:
    supported = (nn.Linear, nn.Conv2d, *_BATCHNORM_MODULES, *_ELEMENTWISE_MODULES, *_POOL_MODULES, *_RESHAPE_MODULES)
    for node in gm.graph.nodes:
        if node.op == "call_module":
            sub = gm.get_submodule(target_name(node))
            if not isinstance(sub, supported):
                raise UnsupportedLayerError(target_name(node), type(sub).__name__)


def _resolve_input_shape(module: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    shape = input_shape if input_shape is not None else getattr(module, "input_shape", None)
    if shape is None:
        first = next((m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)
        if isinstance(first, nn.Linear):
            return (first.in_features,)
        if first is None:
            raise ArchitectureError(
                f"{type(module).__name__} has no Linear or Conv2d layer, so it has no weights to build a graph from."
            )
        raise ArchitectureError(
            f"{type(module).__name__} starts with a Conv2d, so its input shape cannot be inferred. Pass "
            "input_shape=(C, H, W) (--input-shape), or set an input_shape attribute on the module in its factory."
        )
    try:
        shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError) as error:
        raise ArchitectureError(f"input_shape={shape!r} is not a sequence of ints, e.g. (1, 28, 28).") from error
    if not shape or any(d < 1 for d in shape):
        raise ArchitectureError(
            f"input_shape={shape!r} must be a non-empty sequence of positive ints, "
            "without the batch dim, e.g. (1, 28, 28)."
        )
    return shape


def _propagate_shapes(gm: fx.GraphModule, module: nn.Module, shape: tuple[int, ...]) -> None:
    param = next((p for p in module.parameters() if p.is_floating_point()), None)
    dtype, device = (param.dtype, param.device) if param is not None else (torch.float32, torch.device("cpu"))
    # Batch 2, not 1: a reshape that merged the batch dim into the features would otherwise look harmless.
    example = torch.zeros((2, *shape), dtype=dtype, device=device)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    except Exception as error:  # whatever the forward raises on a wrong shape
        raise ArchitectureError(
            f"Running {type(module).__name__} on an input of shape {tuple(example.shape)} failed "
            f"({type(error).__name__}: {error}). Pass the input shape without the batch dim as input_shape "
            "(--input-shape), e.g. (1, 28, 28)."
        ) from error


class _Translator:
    """Walks the traced graph once, turning network-valued nodes into Steps and resolving constants."""

    def __init__(self, gm: fx.GraphModule, root_type: str) -> None:
        self.gm, self.root_type = gm, root_type
        self.network: set[fx.Node] = set()  # nodes whose tensor depends on the input
        self.constants: dict[fx.Node, Any] = {}

    def translate(self, shape: tuple[int, ...]) -> TracedNetwork:
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            names = ", ".join(n.target for n in placeholders)
            raise ArchitectureError(
                f"{self.root_type}.forward takes {len(placeholders)} inputs ({names}); "
                "neuronmap traces networks with exactly one input tensor."
            )
        (x,) = placeholders
        self.network.add(x)
        steps: list[Step] = []
        outputs: tuple[str, ...] = ()
        for node in self.gm.graph.nodes:
            if node.op in ("placeholder", "get_attr"):
                continue
            if node.op == "output":
                outputs = tuple(n.name for n in nodes_in(node.args) if n in self.network)
                continue
            if not any(arg in self.network for arg in node.all_input_nodes):
                continue  # a constant or a Python value (sizes); evaluated on demand if a step needs it
            meta = node.meta.get("tensor_meta")
            if meta is None:
                continue  # x.size(0), x.shape: Python values that only feed reshapes
            if not isinstance(meta, TensorMetadata):
                path, type_name = self._where(node)
                what = "returns" if node.op == "call_module" else f"calls {self._op_name(node)}, which returns"
                raise UnsupportedLayerError(path, type_name, f"{what} a {type(meta).__name__} of tensors")
            self.network.add(node)
            steps.append(self._step(node, tuple(int(d) for d in meta.shape[1:])))
        return TracedNetwork(input=x.name, input_shape=shape, steps=steps, outputs=outputs)

    # -- one node ------------------------------------------------------------------------------------------------

    def _step(self, node: fx.Node, shape: tuple[int, ...]) -> Step:
        inputs = tuple(arg.name for arg in nodes_in((node.args, node.kwargs)) if arg in self.network)
        path, type_name = self._where(node)
        base = StepFields(out=node.name, inputs=inputs, shape=shape, path=path, type_name=type_name)
        if node.op == "call_module":
            return self._module_step(node, base)
        kind = _kind_of(node)
        if kind is None:
            raise UnsupportedLayerError(path, type_name, f"calls {self._op_name(node)}, which is not supported")
        if kind not in ("add",) and len(inputs) != 1:
            raise UnsupportedLayerError(path, type_name, f"calls {self._op_name(node)} on {len(inputs)} tensors")
        if kind == "add":
            alpha = node.kwargs.get("alpha", 1)
            if alpha != 1 or len(inputs) not in (1, 2):
                raise UnsupportedLayerError(path, type_name, f"calls {self._op_name(node)} with alpha={alpha}")
        elif kind == "spatial_mean":
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            check_spatial_dims(dims, len(input_node(node).meta["tensor_meta"].shape), path, type_name)
        elif kind == "linear":
            weight, bias = self._tensor(node, 1, "weight"), self._tensor(node, 2, "bias")
            return Step(kind="linear", name=self._weight_name(node, 1, path), weight=weight, bias=bias, **base)
        elif kind == "conv":
            weight, bias = self._tensor(node, 1, "weight"), self._tensor(node, 2, "bias")
            groups = self._arg(node, 6, "groups", 1)
            return Step(
                kind="conv", name=self._weight_name(node, 1, path), weight=weight, bias=bias, groups=int(groups), **base
            )
        elif kind == "batch_norm":  # F.batch_norm(input, running_mean, running_var, weight, bias, training, m, eps)
            mean, var = self._tensor(node, 1, "running_mean"), self._tensor(node, 2, "running_var")
            if mean is None or var is None:
                raise UnsupportedLayerError(path, type_name, "calls batch_norm without running statistics")
            bn = BatchNormParams(
                path=path,
                running_mean=mean,
                running_var=var,
                eps=float(self._arg(node, 7, "eps", 1e-5)),
                weight=self._tensor(node, 3, "weight"),
                bias=self._tensor(node, 4, "bias"),
            )
            return Step(kind="batch_norm", bn=bn, **base)
        return Step(kind=kind, **base)

    def _module_step(self, node: fx.Node, base: StepFields) -> Step:
        target = target_name(node)
        sub = self.gm.get_submodule(target)
        if len(base["inputs"]) != 1:
            raise UnsupportedLayerError(base["path"], base["type_name"], f"is called on {len(base['inputs'])} tensors")
        if isinstance(sub, nn.Linear):
            return Step(kind="linear", name=target, weight=sub.weight, bias=sub.bias, **base)
        if isinstance(sub, nn.Conv2d):
            return Step(kind="conv", name=target, weight=sub.weight, bias=sub.bias, groups=sub.groups, **base)
        if isinstance(sub, _BATCHNORM_MODULES):
            if sub.running_mean is None or sub.running_var is None:
                raise UnsupportedLayerError(
                    target,
                    type(sub).__name__,
                    "has no running statistics (track_running_stats=False)",
                    hint="Without them it normalises each batch by its own statistics, "
                    "so there is no fixed affine map to fold",
                )
            bn = BatchNormParams(
                path=target,
                running_mean=sub.running_mean,
                running_var=sub.running_var,
                eps=float(sub.eps),
                weight=sub.weight,
                bias=sub.bias,
            )
            return Step(kind="batch_norm", bn=bn, **base)
        if isinstance(sub, _POOL_MODULES):
            return Step(kind="pool", **base)
        if isinstance(sub, _RESHAPE_MODULES):
            return Step(kind="reshape", **base)
        return Step(kind="elementwise", **base)  # _check_leaf_modules let only these through

    # -- helpers -------------------------------------------------------------------------------------------------

    def _arg(self, node: fx.Node, index: int, name: str, default: Any = None) -> Any:
        """Argument ``index`` (or keyword ``name``), with a node resolved to its constant value."""
        value = node.args[index] if len(node.args) > index else node.kwargs.get(name, default)
        return self._constant(value) if isinstance(value, fx.Node) else value

    def _tensor(self, node: fx.Node, index: int, name: str) -> torch.Tensor | None:
        """A weight, bias or statistic argument: a tensor, or None where the call passes none."""
        value = self._arg(node, index, name)
        if value is not None and not isinstance(value, torch.Tensor):
            path, type_name = self._where(node)
            raise UnsupportedLayerError(path, type_name, f"passes a {type(value).__name__} as its {name}")
        return value

    def _constant(self, node: fx.Node) -> Any:
        """The value of a node that does not depend on the input (a parameter, or a function of parameters)."""
        if node in self.network:
            path, type_name = self._where(node)
            raise UnsupportedLayerError(path, type_name, "uses a value computed from the input as a weight")
        if node not in self.constants:
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), self._constant)
            if node.op == "get_attr":
                value = functools.reduce(getattr, target_name(node).split("."), self.gm)
            elif node.op == "call_function":
                assert callable(node.target)  # fx records the function itself
                value = node.target(*args, **kwargs)
            elif node.op == "call_method":
                value = getattr(args[0], target_name(node))(*args[1:], **kwargs)
            else:  # a module applied to constants: not a weight layout neuronmap knows
                path, type_name = self._where(node)
                raise UnsupportedLayerError(path, type_name, "computes a weight by calling a module")
            self.constants[node] = value
        return self.constants[node]

    def _weight_name(self, node: fx.Node, index: int, path: str) -> str:
        """A functional layer is named after its weight attribute, as ``fc`` for ``F.linear(x, self.fc.weight)``."""
        weight = node.args[index] if len(node.args) > index else node.kwargs.get("weight")
        if isinstance(weight, fx.Node) and weight.op == "get_attr":
            target = target_name(weight)
            return target[: -len(".weight")] if target.endswith(".weight") else target
        return path or node.name

    def _where(self, node: fx.Node) -> tuple[str, str]:
        """(module path, type name) of the innermost module a node ran in; ("", root type) at the top level."""
        if node.op == "call_module":
            return target_name(node), type(self.gm.get_submodule(target_name(node))).__name__
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path, cls = list(stack.values())[-1]
            return path, getattr(cls, "__name__", str(cls).rsplit(".", 1)[-1])
        return "", self.root_type

    @staticmethod
    def _op_name(node: fx.Node) -> str:
        if node.op == "call_method":
            return f"Tensor.{node.target}"
        module = getattr(node.target, "__module__", None) or ""
        name = getattr(node.target, "__name__", str(node.target))
        return f"{module.replace('torch.nn.functional', 'F')}.{name}" if module else name


def _kind_of(node: fx.Node) -> StepKind | None:
    """The step kind of a ``call_function`` or ``call_method`` node; None for an unsupported op."""
    if node.op == "call_function":
        return _KIND_OF_FUNCTION.get(node.target) if callable(node.target) else None
    return _KIND_OF_METHOD.get(target_name(node))


# -- shared with trace_export: reading fx nodes ---------------------------------------------------------------------


def nodes_in(arg: fx.node.Argument) -> list[fx.Node]:
    """The nodes in an fx argument structure, in order and with repeats: ``h + h`` reads h twice."""
    found: list[fx.Node] = []

    def visit(node: fx.Node) -> fx.Node:
        found.append(node)
        return node

    fx.node.map_arg(arg, visit)
    return found


def target_name(node: fx.Node) -> str:
    """The target of a ``call_module``, ``get_attr`` or ``call_method`` node: a module path or a name."""
    target = node.target
    assert isinstance(target, str), f"{node.op} node {node.name!r} has a callable target"  # fx records a str
    return target


def input_node(node: fx.Node) -> fx.Node:
    """The node's first argument, which for the ops that reach this is the tensor the op is applied to."""
    first = node.args[0]
    assert isinstance(first, fx.Node), f"{node.name!r} is not applied to a node"  # it reads a network value
    return first


def check_spatial_dims(dims: fx.node.Argument, ndim: int, path: str, type_name: str) -> None:
    """A mean over H and W of an (N, C, H, W) value, and nothing else, keeps one neuron per channel."""
    dim_list = (dims,) if isinstance(dims, int) else tuple(dims) if isinstance(dims, (tuple, list)) else ()
    ints = [d % ndim for d in dim_list if isinstance(d, int)]
    if ndim != 4 or len(ints) != len(dim_list) or sorted(ints) != [2, 3]:
        raise UnsupportedLayerError(
            path,
            type_name,
            f"takes a mean over dims {dim_list}",
            hint="neuronmap follows means over the two spatial dims of an (N, C, H, W) map",
        )
