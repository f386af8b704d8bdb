"""Front end for ``torch.export`` programs (``.pt2`` files): aten graph plus ``meta["val"]`` shapes → TracedNetwork.

An ExportedProgram carries its own graph, so no architecture spec is needed. Parameters and buffers arrive as
placeholders that the graph signature maps to their state-dict names. Both the default export IR (``aten.linear``,
``aten.conv2d``, ``aten.batch_norm``) and the decomposed one that ``run_decompositions()`` gives (``aten.addmm`` on a
transposed weight, ``aten.convolution``, ``aten._native_batch_norm_legit_no_training`` + ``getitem``) are read.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx
from torch.export import ExportedProgram

from neuronmap.loaders.errors import ArchitectureError, UnsupportedLayerError
from neuronmap.loaders.records import KernelNorm, ModelGraph, ModelMeta
from neuronmap.loaders.tracing.folding import BatchNormParams
from neuronmap.loaders.tracing.graph_builder import Step, StepFields, StepKind, TracedNetwork, build_graph
from neuronmap.loaders.tracing.trace_module import check_spatial_dims, input_node, nodes_in, target_name
from neuronmap.loaders.tracing.weight_edges import check_kernel_norm

aten = torch.ops.aten


def _packets(*names: str) -> set[Any]:
    """The aten op packets of this torch version with these names (some are absent in some versions)."""
    return {getattr(aten, name) for name in names if hasattr(aten, name)}


_ELEMENTWISE = _packets(
    "relu",
    "relu_",
    "relu6",
    "leaky_relu",
    "leaky_relu_",
    "prelu",
    "_prelu_kernel",
    "elu",
    "elu_",
    "selu",
    "selu_",
    "celu",
    "gelu",
    "gelu_",
    "silu",
    "silu_",
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
    "log_sigmoid",
    "softmax",
    "_softmax",
    "log_softmax",
    "_log_softmax",
    "dropout",
    "feature_dropout",
    "alpha_dropout",
    "feature_alpha_dropout",
    "clone",
    "alias",
    "detach",
    "contiguous",
    "_to_copy",
    "to",
)
_POOL = _packets("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d")
_RESHAPE = _packets("flatten", "view", "reshape", "_unsafe_view", "squeeze", "unsqueeze")
# Ops that return a tuple whose element 0 is the activation (the rest: pooling indices, saved BN statistics).
_TUPLE_OPS: dict[Any, StepKind] = {
    **{p: "pool" for p in _packets("max_pool2d_with_indices", "adaptive_max_pool2d")},
    **{p: "elementwise" for p in _packets("native_dropout")},
    **{p: "batch_norm" for p in _packets("_native_batch_norm_legit_no_training")},
}


def graph_from_exported(
    ep: ExportedProgram, *, kernel_norm: KernelNorm = "entry_l1", fold_batchnorm: bool = True
) -> ModelGraph:
    """Read a ``torch.export`` program into neurons and weighted edges.

    Parameters
    ----------
    ep : torch.export.ExportedProgram
        From ``torch.export.export`` or ``torch.export.load``, with one tensor input. Its example input fixes the
        shapes; BatchNorm is folded with its running statistics whichever mode it was exported in.
    kernel_norm : {"entry_l1", "induced1", "spectral2", "fro"}, default="entry_l1"
        The norm that turns a kernel slice into one channel edge; see ``weight_edges.kernel_slice_norm``.
    fold_batchnorm : bool, default=True
        Fold BatchNorm into the preceding Linear/Conv (methods.md §1.2). False treats it as a pass-through.

    Returns
    -------
    graph : ModelGraph
        The same graph that ``graph_from_module`` gives for the module that was exported; ``meta.arch`` is
        ``"torch.export"``.

    Raises
    ------
    UnsupportedLayerError
        For an op outside the supported set, naming the module path (from ``nn_module_stack``) and type.
    NonFiniteWeightsError
        When a layer holds NaN or inf.
    """
    kernel_norm = check_kernel_norm(kernel_norm)
    net = trace_export(ep)
    meta = ModelMeta(
        arch="torch.export", source="ExportedProgram", kernel_norm=kernel_norm, fold_batchnorm=fold_batchnorm
    )
    return build_graph(net, kernel_norm=kernel_norm, fold_batchnorm=fold_batchnorm, meta=meta)


def trace_export(ep: ExportedProgram) -> TracedNetwork:
    """Translate an exported program's aten graph into ``Step``s."""
    if not isinstance(ep, ExportedProgram):
        raise ArchitectureError(f"Expected a torch.export.ExportedProgram, got {type(ep).__name__}.")
    return _Translator(ep).translate()


class _Translator:
    def __init__(self, ep: ExportedProgram) -> None:
        self.ep = ep
        sig = ep.graph_signature
        self.fqn: dict[str, str] = {
            **sig.inputs_to_parameters,
            **sig.inputs_to_buffers,
            **sig.inputs_to_lifted_tensor_constants,
        }
        self.user_inputs = list(sig.user_inputs)
        self.user_outputs = list(sig.user_outputs)
        self.value_of: dict[fx.Node, str] = {}  # network nodes → the value name they carry
        self.constants: dict[fx.Node, Any] = {}
        self.root_type = "the exported module"

    def translate(self) -> TracedNetwork:
        graph = self.ep.graph
        inputs = [n for n in graph.nodes if n.op == "placeholder" and n.name in self.user_inputs]
        tensors = [n for n in inputs if isinstance(n.meta.get("val"), torch.Tensor)]
        if len(tensors) != 1 or len(inputs) != 1:
            names = ", ".join(n.name for n in inputs)
            raise ArchitectureError(
                f"The exported program takes {len(inputs)} inputs ({names}); neuronmap reads "
                "networks with exactly one input tensor."
            )
        (x,) = tensors
        self.value_of[x] = x.name
        steps: list[Step] = []
        for node in graph.nodes:
            if node.op in ("placeholder", "output"):
                continue
            if not any(arg in self.value_of for arg in node.all_input_nodes):
                continue  # constants and shape arithmetic; evaluated on demand if a step needs them
            if node.target is operator.getitem:
                self._getitem(node)
                continue
            if not isinstance(node.meta.get("val"), (torch.Tensor, tuple, list)):
                continue  # sym_size and friends: Python values that only feed reshapes
            step = self._step(node)
            self.value_of[node] = step.out
            steps.append(step)
        output = next(n for n in graph.nodes if n.op == "output")
        outputs = tuple(
            self.value_of[n] for n in nodes_in(output.args) if n.name in self.user_outputs and n in self.value_of
        )
        return TracedNetwork(input=x.name, input_shape=_shape(x, "the input"), steps=steps, outputs=outputs)

    def _getitem(self, node: fx.Node) -> None:
        source, index = node.args
        if isinstance(source, fx.Node) and (
            source.target in _TUPLE_OPS or getattr(source.target, "overloadpacket", None) in _TUPLE_OPS
        ):
            if index == 0:
                self.value_of[node] = self.value_of[source]  # the activation; other items are never followed
            return
        path, type_name = self._where(node)
        raise UnsupportedLayerError(path, type_name, f"indexes the result of {getattr(source, 'target', source)}")

    def _step(self, node: fx.Node) -> Step:
        packet = getattr(node.target, "overloadpacket", None)
        path, type_name = self._where(node)
        tuple_kind = _TUPLE_OPS.get(packet)
        val = node.meta.get("val")
        if isinstance(val, (tuple, list)):
            if tuple_kind is None:
                raise UnsupportedLayerError(path, type_name, f"calls {node.target}, which is not supported")
            val = val[0]
        if not isinstance(val, torch.Tensor):
            raise UnsupportedLayerError(path, type_name, f"calls {node.target}, which does not return a tensor")
        inputs = tuple(self.value_of[a] for a in nodes_in((node.args, node.kwargs)) if a in self.value_of)
        base = StepFields(
            out=node.name, inputs=inputs, shape=tuple(int(d) for d in val.shape[1:]), path=path, type_name=type_name
        )
        if packet in (aten.linear, aten.addmm, aten.mm):
            return self._linear_step(node, packet, base)
        if packet in (aten.conv2d, aten.convolution):
            return self._conv_step(node, packet, base)
        if packet is aten.batch_norm or tuple_kind == "batch_norm":
            return self._batch_norm_step(node, packet, base)
        if tuple_kind is not None:
            return Step(kind=tuple_kind, **base)
        return self._elementwise_step(node, packet, base)

    def _linear_step(self, node: fx.Node, packet: Any, base: StepFields) -> Step:
        arg, tensor, weight_of = self._arg, self._tensor, self._weight
        path, type_name = base["path"], base["type_name"]
        if packet is aten.linear:
            return Step(
                kind="linear", name=self._layer_name(node, 1), weight=weight_of(node, 1), bias=tensor(node, 2), **base
            )
        # decomposed linear: addmm(b, x, W.T), mm(x, W.T)
        offset = 1 if packet is aten.addmm else 0
        if arg(node, 3 + offset, default=1) != 1 or arg(node, 4 + offset, default=1) != 1:
            raise UnsupportedLayerError(path, type_name, f"calls {node.target} with beta/alpha other than 1")
        if node.args[offset] not in self.value_of:
            raise UnsupportedLayerError(path, type_name, f"calls {node.target} with the input on the right")
        weight = weight_of(node, offset + 1).T
        bias = tensor(node, 0) if packet is aten.addmm else None
        return Step(kind="linear", name=self._layer_name(node, offset + 1), weight=weight, bias=bias, **base)

    def _conv_step(self, node: fx.Node, packet: Any, base: StepFields) -> Step:
        arg, tensor, weight_of = self._arg, self._tensor, self._weight
        if packet is aten.conv2d:  # conv2d(x, w, b, stride, padding, dilation, groups)
            groups, weight = int(arg(node, 6, default=1)), weight_of(node, 1)
        else:  # convolution(x, w, b, stride, padding, dilation, transposed, out_pad, groups)
            weight = weight_of(node, 1)
            if arg(node, 6) or weight.dim() != 4:
                raise UnsupportedLayerError(
                    base["path"],
                    base["type_name"],
                    f"calls {node.target} as a transposed or non-2-D convolution, which is not supported",
                )
            groups = int(arg(node, 8))
        return Step(
            kind="conv", name=self._layer_name(node, 1), weight=weight, bias=tensor(node, 2), groups=groups, **base
        )

    def _batch_norm_step(self, node: fx.Node, packet: Any, base: StepFields) -> Step:
        # batch_norm(x, w, b, mean, var, training, momentum, eps, cudnn)
        # _native_batch_norm_legit_no_training(x, w, b, mean, var, momentum, eps)
        arg, tensor = self._arg, self._tensor
        eps = arg(node, 7) if packet is aten.batch_norm else arg(node, 6)
        mean, var = tensor(node, 3), tensor(node, 4)
        if mean is None or var is None:
            raise UnsupportedLayerError(
                base["path"],
                base["type_name"],
                "normalises without running statistics",
                hint="Without them there is no fixed affine map to fold",
            )
        bn = BatchNormParams(
            path=base["path"],
            running_mean=mean,
            running_var=var,
            eps=float(eps),
            weight=tensor(node, 1),
            bias=tensor(node, 2),
        )
        return Step(kind="batch_norm", bn=bn, **base)

    def _elementwise_step(self, node: fx.Node, packet: Any, base: StepFields) -> Step:
        path, type_name = base["path"], base["type_name"]
        if packet in _ELEMENTWISE:
            return Step(kind="elementwise", **self._single(node, base))
        if packet in _POOL:
            return Step(kind="pool", **self._single(node, base))
        if packet in _RESHAPE:
            return Step(kind="reshape", **self._single(node, base))
        if packet in (aten.add, aten.add_):
            if self._arg(node, 2, "alpha", 1) != 1:
                raise UnsupportedLayerError(path, type_name, f"calls {node.target} with alpha other than 1")
            return Step(kind="add", **base)
        if packet is aten.mean and node.target is aten.mean.dim:
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            check_spatial_dims(dims, input_node(node).meta["val"].dim(), path, type_name)
            return Step(kind="spatial_mean", **self._single(node, base))
        raise UnsupportedLayerError(path, type_name, f"calls {node.target}, which is not supported")

    # -- helpers -------------------------------------------------------------------------------------------------

    def _single(self, node: fx.Node, base: StepFields) -> StepFields:
        if len(base["inputs"]) != 1:
            raise UnsupportedLayerError(
                base["path"], base["type_name"], f"calls {node.target} on {len(base['inputs'])} tensors"
            )
        return base

    def _arg(self, node: fx.Node, index: int, name: str = "", default: Any = None) -> Any:
        """Argument ``index`` (or keyword ``name``), with a node resolved to its constant value."""
        value = node.args[index] if len(node.args) > index else node.kwargs.get(name, default)
        return self._constant(value) if isinstance(value, fx.Node) else value

    def _tensor(self, node: fx.Node, index: int) -> torch.Tensor | None:
        """A bias or statistic argument: a tensor, or None where the call passes none."""
        value = self._arg(node, index)
        if value is not None and not isinstance(value, torch.Tensor):
            path, type_name = self._where(node)
            raise UnsupportedLayerError(path, type_name, f"passes a {type(value).__name__} as argument {index}")
        return value

    def _weight(self, node: fx.Node, index: int) -> torch.Tensor:
        """The weight argument of a Linear or Conv op, which the op requires."""
        value = self._tensor(node, index)
        if value is None:
            path, type_name = self._where(node)
            raise UnsupportedLayerError(path, type_name, f"calls {node.target} without a weight")
        return value

    def _constant(self, node: fx.Node) -> Any:
        """A parameter, buffer or constant, or an op on them (``aten.t`` of a weight after decomposition)."""
        if node in self.value_of:
            path, type_name = self._where(node)
            raise UnsupportedLayerError(path, type_name, "uses a value computed from the input as a weight")
        if node not in self.constants:
            if node.op == "placeholder":
                name = self.fqn.get(node.name)
                if name is None:
                    raise ArchitectureError(
                        f"The exported program's placeholder {node.name!r} is neither the "
                        "input nor a parameter, buffer or constant."
                    )
                value = self.ep.state_dict[name] if name in self.ep.state_dict else self.ep.constants[name]
            elif node.op == "get_attr":
                value = getattr(self.ep.graph_module, target_name(node))
            else:
                args, kwargs = fx.node.map_arg((node.args, node.kwargs), self._constant)
                assert callable(node.target)  # an aten op: export graphs hold no call_module or call_method
                value = node.target(*args, **kwargs)
            self.constants[node] = value.detach() if isinstance(value, torch.Tensor) else value
        return self.constants[node]

    def _layer_name(self, node: fx.Node, weight_index: int) -> str:
        """The module path of a Linear/Conv2d, else the weight's state-dict name without ``.weight``.

        The same rule as the fx front end, so both give the same layer names for the same module.
        """
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path, type_str = list(stack.values())[-1]
            if str(type_str).rsplit(".", 1)[-1] in ("Linear", "Conv2d"):
                return path
        weight = node.args[weight_index]
        while isinstance(weight, fx.Node) and weight.op != "placeholder" and weight.all_input_nodes:
            weight = weight.all_input_nodes[0]  # through aten.t / permute to the parameter
        name = self.fqn.get(weight.name, "") if isinstance(weight, fx.Node) else ""
        if name:
            return name[: -len(".weight")] if name.endswith(".weight") else name
        return self._where(node)[0] or node.name

    def _where(self, node: fx.Node) -> tuple[str, str]:
        stack = node.meta.get("nn_module_stack") or {}
        entries = [entry for entry in stack.values() if entry[0]]  # the root has path ""
        if entries:
            path, type_str = entries[-1]
            return path, str(type_str).rsplit(".", 1)[-1]
        if stack:
            return "", str(list(stack.values())[0][1]).rsplit(".", 1)[-1]
        return "", self.root_type


def _shape(node: fx.Node, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in node.meta["val"].shape[1:])
    except (TypeError, ValueError) as error:  # a symbolic non-batch dim
        raise ArchitectureError(
            f"The shape of {what} has symbolic dims beyond the batch dim "
            f"({tuple(node.meta['val'].shape)}); export with static feature dims."
        ) from error
