"""Edges from activation correlations (methods.md §2), streamed in batches on the device. No database here.

Three steps, each usable alone:

1. **Record.** :class:`ActivationRecorder` traces the module with torch.fx, exactly as ``graph_from_module`` does,
   so its layers, unit indices and hence neuron ordinals are those of the weight graph. It inserts an identity
   *tap* after each recorded value and registers a forward hook on it; one forward pass over a batch gives a
   ``(batch, n_units)`` float32 matrix on the device. Hidden units are recorded after their BatchNorm and
   element-wise activation (``point="post"``, as the reference's Keras layers with ``activation=relu``), conv
   channels are reduced per image to a scalar (``reduction``: mean, L2 (Frobenius) norm, or the reference's
   spectral norm of the H×W map, for parity).
2. **Correlate.** :func:`correlate` streams the batches into float64 accumulators on the device:

   - ``pearson``: Chan's parallel update of the mean and the co-moment matrix (Welford for blocks), so no batch
     is kept and nothing cancels catastrophically.
   - ``spearman``: ranks need every input's value, so the batches are kept: ``4 · n_units · n_inputs`` bytes of
     float32, e.g. 40 MB for 1,024 units × 10,000 inputs, 4 GB for 1,024 × 1M. They stay on the GPU if they fit
     a quarter of its free memory, else in RAM up to ``memory_limit`` bytes, else in a temporary memory-mapped
     file (``spill_dir``). That buffer is the memory trade-off: the forward pass never holds more than a batch,
     but exact ranks need every value once. Each unit's values are then ranked (ties share their average rank,
     as scipy's ``rankdata``) and centred by the mean rank (n+1)/2, which leaves half-integers, exact in float32
     and float64; Spearman's ρ is the normalised Gram matrix of these centred ranks. On the CPU, where
     ``torch._int_mm`` works, twice the centred ranks (integers) are split into signed int8 digits and the Gram
     matrix is a few int8 products summed in int64: exact, and about four times float64's speed where the CPU
     has AMX or VNNI. Elsewhere it is accumulated in float64 (on the CPU, tiles of units are ranked while a
     second thread multiplies those already ranked). When a copy of the ranks fits (``RANK_COPY_BYTES`` and
     ``memory_limit``), units are ranked into it and the values stay as they are; otherwise the buffer is
     ranked in place and the products are accumulated over chunks of inputs, so a spilled buffer is read chunk
     by chunk. Given the whole activation matrix at once, :func:`correlate` ranks straight from it, without a
     buffer.

   Units whose value never changes over the data set (dead ReLUs, constant maps) have no correlation: they are
   reported in ``excluded`` and left out, as the reference masks them.
3. **Sparsify.** :func:`sparsify` turns the ``(n_units, n_units)`` correlation matrix into edges, lower ordinal →
   higher ordinal, once per pair, within and across layers. A complete graph has n(n−1)/2 edges (523,776 for
   1,024 units); ``min_r2`` keeps edges with r² ≥ min_r2, ``top_k`` keeps each neuron's k strongest partners (an
   edge stays when either end keeps it: between n·k/2 and n·k edges). :func:`count_edges` tells how many edges
   a choice gives without building them.

The edge weight clustering uses is r², the reference's squared Spearman (``method="spearman"``); the signed r is
kept on every edge too.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import fx, nn

from neuronmap.loaders.errors import ActivationError, ArchitectureError, OptionError
from neuronmap.loaders.tracing.graph_builder import TracedNetwork, build_graph
from neuronmap.loaders.records import LayerRecord
from neuronmap.loaders.tracing.trace_module import trace_module

Method = Literal["pearson", "spearman"]
Reduction = Literal["mean", "l2", "spectral"]
Point = Literal["post", "pre"]
METHODS: tuple[str, ...] = ("pearson", "spearman")
REDUCTIONS: tuple[str, ...] = ("mean", "l2", "spectral")
POINTS: tuple[str, ...] = ("post", "pre")

MEMORY_LIMIT = 4 << 30  # bytes of RAM the Spearman buffer may take before it spills to disk
GRAM_CHUNK_BYTES = 128 << 20  # working copy of one chunk of inputs while accumulating the Gram matrix
RANK_ROWS = 16  # units ranked at once on the CPU: their work arrays stay in the L2 cache …
RANK_VALUES = 1 << 18  # … up to this many values a block (fewer units for long rows; ~46 bytes a value)
GRAM_TILE = 128  # units per row tile of the upper-triangular Gram update, and per transposed tile of values
GRAM_TILE_MIN_INPUTS = 4096  # … which pays only for long rows: small tiles run below BLAS's full speed
TRANSPOSE_INPUTS = 128  # inputs per copy while transposing a tile
RANK_COPY_BYTES = 1 << 30  # ranks copied (int8 digits or float64) up to this size leave the values untouched
INT8_GRAM: bool | None = None  # None: int8 products wherever torch._int_mm works on the CPU; True/False force it
INT8_CHUNK = 1 << 16  # inputs per int8 product: |a·b| ≤ 2¹⁴ per input keeps each int32 sum within 2³⁰


# -- options and devices ------------------------------------------------------------------------------------------

def _check_option(name: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise OptionError(name, value, allowed)


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise OptionError("device", device, ("auto", "cpu", "cuda")) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ActivationError(f"device={str(device)!r} asks for CUDA, but torch sees no GPU here. Pass device='cpu' "
                              "(--device cpu) or 'auto'.")
    if resolved.type not in ("cpu", "cuda"):
        raise OptionError("device", str(device), ("auto", "cpu", "cuda"))
    return resolved


def _cpu_threads() -> int:
    return max(1, torch.get_num_threads())


# -- what the correlations describe -------------------------------------------------------------------------------

class ActivationMeta(BaseModel):
    """How an activation graph was computed; stored on its (:ActivationGraph) node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: str = ""  # the data set's name or description, e.g. "digits:test"
    method: Method = "spearman"
    reduction: Reduction = "l2"
    point: Point = "post"
    n_inputs: int = Field(default=0, ge=0)


@dataclass
class ActivationCorrelations:
    """The correlation matrix of the recorded units that vary over the data set.

    Ordinals are the model's global neuron ordinals (numbered over ``layers`` in order, as the weight graph), so
    they name the same (:Neuron)s in the store.
    """

    layers: list[LayerRecord]  # every layer of the traced model
    recorded: list[int]  # indexes of the recorded layers, ascending
    ordinals: np.ndarray  # (n_units,) int64, ascending: the kept units
    excluded: np.ndarray  # (n_excluded,) int64: recorded units of zero variance, left out
    r: torch.Tensor  # (n_units, n_units) float64 on the CPU, unit diagonal
    meta: ActivationMeta = field(default_factory=ActivationMeta)

    @property
    def n_units(self) -> int:
        return int(self.ordinals.size)

    @property
    def n_pairs(self) -> int:
        """Edges of the complete graph: n(n−1)/2."""
        return self.n_units * (self.n_units - 1) // 2

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([layer.size for layer in self.layers])]).astype(np.int64)


@dataclass
class ActivationEdges:
    """Correlation edges ready for the store: ``src < dst`` global ordinals, each pair once."""

    layers: list[LayerRecord]
    recorded: list[int]
    ordinals: np.ndarray  # (n_units,) the kept units (nodes of the graph, with or without edges)
    excluded: np.ndarray  # (n_excluded,) zero-variance units
    src: np.ndarray  # (n_edges,) int64
    dst: np.ndarray  # (n_edges,) int64
    r: np.ndarray  # (n_edges,) float64
    r2: np.ndarray  # (n_edges,) float64
    min_r2: float = 0.0
    top_k: int | None = None
    meta: ActivationMeta = field(default_factory=ActivationMeta)

    @property
    def n_edges(self) -> int:
        return int(self.src.size)

    @property
    def n_units(self) -> int:
        return int(self.ordinals.size)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([layer.size for layer in self.layers])]).astype(np.int64)

    def properties(self) -> dict[str, Any]:
        """The (:ActivationGraph) node's properties (without model, name and status)."""
        props: dict[str, Any] = {**self.meta.model_dump(), "min_r2": float(self.min_r2),
                                 "n_units": self.n_units, "n_excluded": int(self.excluded.size),
                                 "layers": [int(i) for i in self.recorded],
                                 "excluded": [int(o) for o in self.excluded]}
        if self.top_k is not None:
            props["top_k"] = int(self.top_k)
        return props


# -- 1. recording -------------------------------------------------------------------------------------------------

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
        raise ActivationError(f"layers={selection!r} selects no layer; this network's layers are: {names}. Pass "
                              "layers='all' or name them.")
    return chosen


def _layer_index(layers: list[LayerRecord], item: str | int) -> int:
    for layer in layers:
        if item == layer.name or (isinstance(item, int) and not isinstance(item, bool) and item == layer.index):
            return layer.index
    names = ", ".join(layer.name for layer in layers)
    raise ActivationError(f"There is no layer {item!r} in this network; its layers are: {names}. Pass 'hidden', "
                          "'all', or names or indexes from that list.")


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
    module : nn.Module
        Anything ``graph_from_module`` reads. It runs in eval mode under ``torch.inference_mode``; its training
        flags are restored after every batch. When ``device`` differs from the module's, a copy is moved there.
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

    def __init__(self, module: nn.Module, *, layers: str | Sequence[str | int] = "hidden",
                 reduction: Reduction = "l2", point: Point = "post", input_shape: Sequence[int] | None = None,
                 device: str | torch.device = "auto") -> None:
        _check_option("reduction", reduction, REDUCTIONS)
        _check_option("point", point, POINTS)
        if not isinstance(module, nn.Module):
            raise ArchitectureError(f"Expected an nn.Module, got {type(module).__name__}.")
        self.device = _resolve_device(device)
        self.reduction, self.point = reduction, point
        param = next(iter(module.parameters()), None)
        if param is not None and param.device != self.device:
            module = copy.deepcopy(module).to(self.device)
        self.dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        net = trace_module(module, input_shape)  # checks the architecture; eval mode while tracing
        graph = build_graph(net, fold_batchnorm=False)  # the weight graph's layers (BatchNorm changes no layer)
        self.layers: list[LayerRecord] = graph.layers
        self.input_shape = tuple(net.input_shape)
        self.recorded = _select_layers(self.layers, layers)
        layer_values = [net.input] + [step.out for step in net.steps if step.kind in ("linear", "conv")]
        values = _recorded_values(net, layer_values, self.recorded, point)

        self._module = module
        flags = {m: m.training for m in module.modules()}
        module.eval()
        try:
            self._gm = fx.symbolic_trace(module)  # the same trace as trace_module's, so node names agree
        finally:
            for m, training in flags.items():
                m.training = training
        nodes = {node.name: node for node in self._gm.graph.nodes}
        self._captured: dict[int, torch.Tensor] = {}
        for index, value in zip(self.recorded, values):
            node = nodes.get(value)
            if node is None:  # pragma: no cover - both traces run the same tracer on the same module
                raise ArchitectureError(f"Cannot find the value {value!r} of layer {self.layers[index].name!r} in "
                                        "the traced graph; record with point='pre' or report this network.")
            tap = f"_neuronmap_tap_{index}"
            self._gm.add_submodule(tap, _Tap())
            with self._gm.graph.inserting_after(node):
                self._gm.graph.call_module(tap, (node,))
            self._gm.get_submodule(tap).register_forward_hook(self._hook(index))
        self._gm.recompile()
        offsets = np.concatenate([[0], np.cumsum([layer.size for layer in self.layers])]).astype(np.int64)
        self.units = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in self.recorded])
        self._layer_of_column = np.repeat(self.recorded, [self.layers[i].size for i in self.recorded])

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
        raise ActivationError(f"Layer {layer.name!r} produced a value of shape {tuple(x.shape[1:])}, which is neither "
                              f"its {layer.size} units nor a (C, H, W) map of {layer.size} channels.")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_units) float32 activations of one batch of inputs, on the device.

        Flat inputs of the right size are reshaped to the network's input shape (e.g. (N, 784) → (N, 1, 28, 28)).
        """
        if tuple(x.shape[1:]) != self.input_shape and x[0].numel() == math.prod(self.input_shape):
            x = x.reshape(x.shape[0], *self.input_shape)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ActivationError(f"Inputs of shape {tuple(x.shape[1:])} do not fit this network, which reads "
                                  f"{self.input_shape} (without the batch dim). Reshape the data set's inputs.")
        flags = {m: m.training for m in self._module.modules()}
        self._module.eval()
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

    def batches(self, inputs: torch.Tensor | np.ndarray | Iterable[Any], batch_size: int = 512
                ) -> Iterator[torch.Tensor]:
        """Record ``inputs`` batch by batch; see :func:`iter_inputs` for what ``inputs`` may be."""
        for batch in iter_inputs(inputs, batch_size):
            yield self(batch)


def iter_inputs(inputs: torch.Tensor | np.ndarray | Iterable[Any], batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of inputs: slices of a tensor or array, or the items of an iterable (a DataLoader yields ``(x, y)``
    pairs; their first element is taken)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ActivationError(f"batch_size={batch_size!r} must be a positive int.")
    if isinstance(inputs, np.ndarray):
        inputs = torch.from_numpy(inputs)
    if isinstance(inputs, torch.Tensor):
        for start in range(0, inputs.shape[0], batch_size):
            yield inputs[start:start + batch_size]
        return
    for item in inputs:
        if isinstance(item, (tuple, list)):
            item = item[0]
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(item)
        if not isinstance(item, torch.Tensor):
            raise ActivationError(f"An input batch is a {type(item).__name__}; pass tensors, arrays, or (x, y) pairs "
                                  "of them.")
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


# -- 2. streaming correlation ------------------------------------------------------------------------------------

def _add_gram_upper_(out: torch.Tensor, a: torch.Tensor) -> None:
    """out += a aᵀ, for a of shape (n_units, k) in float64; only the upper block triangle is guaranteed.

    The Gram matrix is symmetric, so on the CPU, for many units and long rows, only row tiles × the columns from
    the tile on are multiplied (about 56% of the flops for 1,024 units) and the strict lower part of ``out`` is
    left stale. Short rows (a batch of a few thousand inputs) run faster as one full product, and so does a GPU.
    """
    p, k = a.shape
    strided = a.stride(0) != 1 and a.stride(1) != 1  # BLAS takes either layout, but not a general stride
    if a.device.type != "cpu" or p <= 2 * GRAM_TILE or k < GRAM_TILE_MIN_INPUTS or strided:
        out.addmm_(a, a.T)
        return
    for i in range(0, p, GRAM_TILE):
        out[i:i + GRAM_TILE, i:].addmm_(a[i:i + GRAM_TILE], a[i:].T)


def _symmetric_from_upper(upper: torch.Tensor) -> torch.Tensor:
    return torch.triu(upper) + torch.triu(upper, 1).T


class _Moments:
    """Running mean and co-moment matrix (Chan et al.'s pairwise update, float64), one batch at a time."""

    def __init__(self, n_units: int, device: torch.device) -> None:
        self.n = 0
        self.mean = torch.zeros(n_units, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(n_units, n_units, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor) -> None:
        centred = x.to(torch.float64, copy=True)
        b = centred.shape[0]
        batch_mean = centred.mean(0)
        centred -= batch_mean
        _add_gram_upper_(self.m2, centred.T)
        if self.n:
            delta = batch_mean - self.mean
            total = self.n + b
            # Combining two groups' co-moments: M = M_a + M_b + δδᵀ·n_a·n_b/(n_a + n_b).
            self.m2 += torch.outer(delta, delta) * (self.n * b / total)
            self.mean += delta * (b / total)
            self.n = total
        else:
            self.mean, self.n = batch_mean, b

    def gram(self) -> torch.Tensor:
        return _symmetric_from_upper(self.m2)


class _ValueBuffer:
    """Spearman's float32 activations, kept whole for ranking.

    On the device or in RAM they are kept input-major, (n_inputs, n_units), as the batches come (a plain copy);
    ranking reads a few units' columns at a time, whole cache lines each. In a temporary file they are kept
    unit-major, (n_units, n_inputs), so that ranking reads a unit's values contiguously from disk.
    """

    def __init__(self, n_units: int, n_inputs: int | None, device: torch.device, memory_limit: int,
                 spill_dir: str | os.PathLike[str] | None) -> None:
        self.n_units, self.device, self.memory_limit, self.spill_dir = n_units, device, memory_limit, spill_dir
        self.n = 0
        self.data: torch.Tensor | None = None
        self.chunks: list[torch.Tensor] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.location = "pending"
        if n_inputs is not None:
            self.data = self._allocate(n_inputs)

    def _allocate(self, n_inputs: int) -> torch.Tensor:
        nbytes = 4 * self.n_units * n_inputs
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if nbytes <= free // 4:
                self.location = "device"
                return torch.empty(n_inputs, self.n_units, dtype=torch.float32, device=self.device)
        if nbytes <= self.memory_limit:
            self.location = "memory"
            return torch.empty(n_inputs, self.n_units, dtype=torch.float32)
        self._tmp = tempfile.TemporaryDirectory(prefix="neuronmap-activations-", dir=self.spill_dir)
        path = os.path.join(self._tmp.name, "values.npy")
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(self.n_units, n_inputs))
        self.location = "disk"
        return torch.from_numpy(array)

    def _rows(self, start: int, stop: int) -> torch.Tensor:
        """The (stop − start, n_units) slice of inputs, whatever the layout."""
        data = self.data
        if data is None:  # pragma: no cover - callers allocate first
            raise RuntimeError("The activation buffer is not allocated yet.")
        return data[:, start:stop].T if self.location == "disk" else data[start:stop]

    def append(self, x: torch.Tensor) -> None:
        b = x.shape[0]
        if self.data is None:
            self.chunks.append(x.to("cpu", torch.float32, copy=True))
        else:
            capacity = self.data.shape[1] if self.location == "disk" else self.data.shape[0]
            if self.n + b > capacity:
                raise ActivationError(f"Received more than the {capacity:,} inputs announced; pass n_inputs=None "
                                      "when the count is unknown.")
            self._rows(self.n, self.n + b).copy_(x)
        self.n += b

    def units(self) -> torch.Tensor:
        """Every value received, as a (n_units, n_inputs) view (strided when the buffer is input-major)."""
        if self.data is None:  # the count was unknown: assemble the chunks (held twice for a moment)
            self.data = self._allocate(self.n)
            at = 0
            for chunk in self.chunks:
                self._rows(at, at + chunk.shape[0]).copy_(chunk)
                at += chunk.shape[0]
            self.chunks = []
        return self.data[:, :self.n] if self.location == "disk" else self.data[:self.n].T

    def close(self) -> None:
        self.data = None
        self.chunks = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# Centred average ranks. Ties share the mean of their positions, as scipy.stats.rankdata(method="average");
# subtracting the mean rank (n+1)/2 leaves half-integers, exact in float32 below 2²³ inputs. The CPU ranks in
# twice those, the *doubled* ranks: a run of ties over sorted positions start..end gets start + end − (n−1), an
# integer in [−(n−1), n−1], halved only when floats are written.

def centered_ranks(values: torch.Tensor) -> torch.Tensor:
    """Rank each row of a (rows, n) float tensor: average ranks of ties, minus (n+1)/2; float32, same device.

    On the CPU this sorts packed integer keys with numpy's vectorised sort, a few rows at a time and on every
    core; on a GPU it uses ``torch.sort``. Both give exactly scipy's ``rankdata(..., axis=1) - (n + 1) / 2``.
    """
    if not bool(torch.isfinite(values).all()):
        raise ActivationError("centered_ranks takes finite values; NaN and inf have no rank.")
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float16, torch.bfloat16):
        out = np.empty(tuple(values.shape), dtype=np.float32)
        _rank_rows_numpy(np.ascontiguousarray(values.float().numpy()), out)
        return torch.from_numpy(out)
    return _rank_rows_torch(values)


def _rank_rows_torch(values: torch.Tensor) -> torch.Tensor:
    rows, n = values.shape
    sorted_values, order = torch.sort(values, dim=1, stable=True)
    new = torch.ones_like(sorted_values, dtype=torch.bool)
    new[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]  # -0.0 == 0.0 here, so they tie
    pos = torch.arange(n, device=values.device).expand(rows, n)
    start = torch.where(new, pos, 0).cummax(dim=1).values
    last = torch.ones_like(new)
    last[:, :-1] = new[:, 1:]
    end = torch.where(last, pos, n - 1).flip(1).cummin(dim=1).values.flip(1)
    centred = ((start + end - (n - 1)).to(torch.float64) * 0.5).to(torch.float32)
    return torch.empty_like(centred).scatter_(1, order, centred)


class _RankWork:
    """Per-thread scratch arrays for ranking ``rows`` rows of length n on the CPU, reused for every block."""

    def __init__(self, rows: int, n: int) -> None:
        size = rows * n
        self.bits = np.empty((rows, n), np.int32)  # the keys; at the end the doubled ranks in input order
        self.bottom = np.empty((rows, n), bool)
        self.keys = np.empty(size, np.int32)
        self.packed = np.empty(size, np.int64)
        self.index = np.empty(size, np.int64)
        self.tied = np.empty(size, bool)
        self.start = np.empty(size, np.int32)
        self.end = np.empty(size, np.int32)
        self.flat = np.arange(size, dtype=np.int64)
        self.pos = np.arange(size, dtype=np.int32)


_MAX_FINITE_KEY = 0x7F7FFFFF  # the key of FLT_MAX; −FLT_MAX's is its negation
COMPACT_SHARE = 8  # a block whose bottom runs hold ≥ 1/8 of its values sorts only the other values
SPARSE_TIES = 16  # fewer ties than 1/16 of the sorted values are ranked tie by tie, more by scanning all


class _NonFinite(Exception):
    """A NaN or inf met while ranking: (row, column) of the first one, and how many the block holds."""

    def __init__(self, row: int, column: int, count: int) -> None:
        super().__init__(row, column, count)
        self.row, self.column, self.count = row, column, count


def _float_keys(block: np.ndarray, keys: np.ndarray, sign: np.ndarray) -> None:
    """int32 keys in the order of the float32 values: flip the 31 low bits of negatives, then add 1 to them, so
    that -0.0 lands on +0.0's key (0) and the two zeros tie, as they compare equal."""
    raw = np.ascontiguousarray(block, dtype=np.float32).view(np.int32)
    np.right_shift(raw, 31, out=sign)  # −1 for negatives, 0 otherwise
    np.bitwise_and(sign, np.int32(0x7FFFFFFF), out=keys)
    np.bitwise_xor(raw, keys, out=keys)
    np.subtract(keys, sign, out=keys)


def _rank_block(block: np.ndarray, out: np.ndarray, w: _RankWork) -> None:
    """Ranks of each row of ``block`` (c, n) into ``out``: float centred ranks (c, n), where ``out`` may be
    ``block`` itself, or the int8 digits (digits, c, n) of the doubled ranks (see :func:`_split_digits`).

    Keys are sorted packed with their flat position (key high, position low) into int64: numpy's SIMD sort of
    64-bit integers is several times faster than an argsort, and the positions come out with the keys. A row's
    bottom run (the values equal to its minimum, e.g. a ReLU's zeros, often half the row) shares one rank and
    needs no sorting: where such runs are a good part of the block, they are set aside and only the other values
    are sorted.
    """
    c, n = block.shape
    bits = w.bits[:c]
    _float_keys(block, bits, w.start[:c * n].reshape(c, n))  # the block is read here, once: ``out`` may be it
    low, high = bits.min(axis=1), bits.max(axis=1)
    if bool((low < -_MAX_FINITE_KEY).any() or (high > _MAX_FINITE_KEY).any()):  # ±inf, NaN: beyond ±FLT_MAX
        bad = ~np.isfinite(block)
        row, column = np.argwhere(bad)[0]
        raise _NonFinite(int(row), int(column), int(bad.sum()))
    bottom = np.equal(bits, low[:, None], out=w.bottom[:c])
    runs = np.count_nonzero(bottom, axis=1)
    if int(runs.sum()) * COMPACT_SHARE >= c * n:
        index = np.flatnonzero(np.logical_not(bottom, out=bottom))
        keys = np.take(bits.reshape(-1), index, out=w.keys[:index.size])
    else:
        runs[:] = 0
        index, keys = w.flat[:c * n], bits.reshape(-1)
    m = index.size
    packed = w.packed[:m]
    np.copyto(packed, keys)
    np.multiply(packed, np.int64(1 << 32), out=packed)  # key · 2³² (a shift of a negative is undefined in C)
    np.bitwise_or(packed, index, out=packed)
    offsets = np.zeros(c + 1, np.int64)
    np.cumsum(n - runs, out=offsets[1:])
    for row in range(c):
        packed[offsets[row]:offsets[row + 1]].sort()
    # Sorted value g of row r has place g − offsets[r] + runs[r] in its row: without ties its doubled rank is
    # twice that minus (n−1); ties from g = s to e share s + e + 2(runs[r] − offsets[r]) − (n−1).
    doubled = w.start[:m]
    np.add(w.pos[:m], w.pos[:m], out=doubled)
    if m > 1:
        tied = w.tied[:m]  # a sorted value equal to the one before it, in the same row
        sorted_keys = np.right_shift(packed, 32, out=w.index[:m])
        tied[0] = False
        np.equal(sorted_keys[1:], sorted_keys[:-1], out=tied[1:])
        tied[offsets[:-1][runs < n]] = False
        ties = np.flatnonzero(tied)
        if 0 < ties.size * SPARSE_TIES < m:
            _sparse_ties(ties, doubled)
        elif ties.size:
            _tied_ranks(np.logical_not(tied, out=tied), doubled, w)
    np.add(doubled, np.repeat((2 * (runs - offsets[:-1]) - (n - 1)).astype(np.int32), n - runs), out=doubled)
    # Into input order through flat positions (faster than 2-D fancy indexing): the bottom runs first, z values
    # sharing (z−1) − (n−1), then the sorted values over them.
    inorder = bits
    if runs.any():
        inorder[...] = (runs - n)[:, None]
    positions = np.bitwise_and(packed, np.int64(0xFFFFFFFF), out=w.index[:m])
    inorder.reshape(-1)[positions] = doubled
    if out.dtype == np.int8:
        _split_digits(inorder, out)
    else:
        np.multiply(inorder, 0.5, out=out, casting="same_kind")  # half-integers: exact in float32


def _sparse_ties(ties: np.ndarray, twice: np.ndarray) -> None:
    """s + e for the sorted values in runs of ties, s and e the first and last place of the run, from the places
    ``ties`` (ascending) of the values equal to the one before: cost by tie, not by value."""
    first = np.ones(ties.size, bool)  # a tie that starts a run: its place does not follow the last tie's
    np.not_equal(ties[1:], ties[:-1] + 1, out=first[1:])
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], ties.size) - 1
    s, e = ties[starts] - 1, ties[ends]
    twice[ties] = np.repeat(s + e, ends - starts + 1)
    twice[s] = s + e


def _tied_ranks(new: np.ndarray, twice: np.ndarray, w: _RankWork) -> None:
    """s + e for each sorted value, s and e the first and last place of its run of equal keys, by a forward and
    a backward scan (for blocks with many ties)."""
    m = new.size
    start, end = w.keys[:m], w.end[:m]  # the gathered keys are packed by now: their array is free
    np.multiply(new, w.pos[:m], out=start)
    np.maximum.accumulate(start, out=start)
    end[-1] = m - 1
    np.multiply(new[1:], w.pos[1:m], out=end[:-1])
    np.subtract(end[:-1], 1, out=end[:-1])
    end[:-1][~new[1:]] = m - 1
    backwards = end[::-1]
    np.minimum.accumulate(backwards, out=backwards)
    np.add(start, end, out=twice)


def _rank_rows_numpy(values: np.ndarray | torch.Tensor, out: np.ndarray) -> None:
    """Rank every row of ``values`` (rows, n) into ``out``, a block of rows at a time per thread.

    ``out`` takes float centred ranks (rows, n), and may be ``values`` itself, or the int8 digits
    (digits, rows, n) of the doubled ranks. ``values`` may be strided (the transpose of an input-major matrix):
    each thread then copies up to GRAM_TILE units at a time into a contiguous tile, TRANSPOSE_INPUTS inputs per
    copy.
    """
    rows, n = values.shape
    if rows == 0 or n == 0:
        return
    if n >= 2 ** 23:
        raise ActivationError(f"Spearman ranks of {n:,} inputs would lose precision in float32; use at most "
                              f"{2 ** 23 - 1:,} inputs or method='pearson'.")
    if isinstance(values, torch.Tensor):
        values = values.numpy()
    strided = values.strides[1] != values.itemsize
    threads = min(_cpu_threads(), max(1, rows // RANK_ROWS))
    bounds = np.linspace(0, rows, threads + 1).astype(int)
    block_rows = max(1, min(RANK_ROWS, RANK_VALUES // n))
    tile_rows = max(block_rows, min(GRAM_TILE, GRAM_TILE * RANK_VALUES // (RANK_ROWS * n)))  # 8 MB at most

    def work(lo: int, hi: int) -> None:
        scratch = _RankWork(min(block_rows, hi - lo), n)
        tile = np.empty((min(tile_rows, hi - lo), n), np.float32) if strided else None
        for t in range(lo, hi, tile_rows):
            u = min(t + tile_rows, hi)
            block = values[t:u] if tile is None else _transpose_into(tile[:u - t], values[t:u])
            for i in range(t, u, block_rows):
                j = min(i + block_rows, u)
                # _rank_block reads its block once, into scratch, before writing: ``out`` may be ``values``.
                try:
                    _rank_block(block[i - t:j - t], out[:, i:j] if out.dtype == np.int8 else out[i:j], scratch)
                except _NonFinite as error:
                    raise _NonFinite(i + error.row, error.column, error.count) from None

    if threads == 1:
        work(0, rows)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rank") as pool:
        for future in [pool.submit(work, int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]:
            future.result()


def _transpose_into(tile: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Copy strided ``values`` into the contiguous ``tile`` a few inputs at a time. The rows of an input-major
    matrix are often a power of two apart (4 KiB for 1,024 float32 units): walking one long column block misses
    the TLB and the same cache sets at every row, while a short block stays in the L1 cache (5× faster)."""
    for k in range(0, values.shape[1], TRANSPOSE_INPUTS):
        np.copyto(tile[:, k:k + TRANSPOSE_INPUTS], values[:, k:k + TRANSPOSE_INPUTS])
    return tile


def _rank_in_place(data: torch.Tensor, *, use_torch: bool | None = None) -> None:
    """Replace every row of a (n_units, n_inputs) view by its centred ranks (numpy on the CPU, torch on a GPU)."""
    if use_torch is None:
        use_torch = data.device.type != "cpu"
    if not use_torch:
        array = data.numpy()
        _rank_rows_numpy(array, array)
        return
    finite = torch.isfinite(data)
    if not bool(finite.all()):
        row, column = (int(v) for v in torch.nonzero(~finite)[0])
        raise _NonFinite(row, column, int((~finite).sum()))
    n = data.shape[1]
    rows = max(1, min(data.shape[0], (64 << 20) // max(1, 24 * n)))  # sort workspace per block ≈ 64 MB
    for i in range(0, data.shape[0], rows):
        data[i:i + rows] = _rank_rows_torch(data[i:i + rows])


# The exact int8 Gram matrix. A doubled rank v is an integer, written as signed base-256 digits,
# v = Σ_d 256^d · a_d with a_d in [−128, 127]; then Σ_k v_ik v_jk = Σ_{d,e} 256^(d+e) Σ_k a_dik a_ejk, and every
# inner sum is one torch._int_mm of int8 digit planes into int32 (AMX or VNNI on recent x86: for 1,024 units
# over 10,000 inputs, the three products of two digits take ~22 ms on 2 cores, float64's one ~120 ms). Inner
# sums stop after INT8_CHUNK inputs, so none exceeds int32; they add up in int64, which holds the whole sum
# exactly (:func:`_int8_digits` checks), and the result is converted to float64 once. Ranks and Gram are thus
# exact integers; only the final normalisation rounds.

def _int8_matmul_works() -> bool:
    """Whether ``torch._int_mm`` multiplies int8 matrices exactly on this CPU (older torch lacks it); probed once."""
    global _INT8_MATMUL
    if _INT8_MATMUL is None:
        a = (torch.arange(32 * 48) % 256 - 128).to(torch.int8).reshape(32, 48)  # every int8, −128 included
        try:
            product = torch._int_mm(a, a.T)
            _INT8_MATMUL = product.dtype == torch.int32 and torch.equal(product.long(), a.long() @ a.long().T)
        except (AttributeError, RuntimeError, NotImplementedError, TypeError):
            _INT8_MATMUL = False
    return _INT8_MATMUL


_INT8_MATMUL: bool | None = None


def _use_int8(device: torch.device) -> bool:
    if device.type != "cpu":
        return False  # a GPU's float64 products are fast enough, and _int_mm there wants other shapes
    return _int8_matmul_works() if INT8_GRAM is None else INT8_GRAM


def _int8_digits(n: int) -> int | None:
    """How many signed base-256 digits the doubled ranks of n inputs need, or None where their Gram matrix could
    pass int64 (beyond about a million inputs: float64 then)."""
    top, digits = n - 1, 1
    while top > 127:
        top = (top + 128) >> 8  # the largest digit left after taking the low one off |v| ≤ top
        digits += 1
    # The digits' weighted magnitudes Σ_d 256^d·|a_d| stay below n − 1 + 256^(digits−1), so no partial sum of a
    # Gram entry passes n times its square.
    return digits if n * (n - 1 + 256 ** (digits - 1)) ** 2 < 2 ** 63 else None


def _padded(size: int) -> int:
    # torch._int_mm wants sizes that are multiples of 8 and above 16 on some devices and versions; zero rows
    # and inputs add nothing to the products.
    return max(32, -(-size // 8) * 8)


def _split_digits(v: np.ndarray, out: np.ndarray) -> None:
    """Write the int32 (c, w) array ``v`` as ``out.shape[0]`` int8 planes, v = Σ_d 256^d · out[d]; ``v`` is used up.

    Each digit is the low byte of what is left, read as a signed byte, so in [−128, 127]; taking it off leaves a
    multiple of 256: (v − digit) / 256 = (v + 128) >> 8.
    """
    low = v.view(np.int8)[..., 0::4] if np.little_endian else v.view(np.int8)[..., 3::4]
    for d in range(out.shape[0] - 1):
        np.copyto(out[d], low)
        np.add(v, 128, out=v)
        np.right_shift(v, 8, out=v)
    np.copyto(out[-1], v, casting="unsafe")  # within int8: _int8_digits counted enough digits


def _add_int8_products_(same: torch.Tensor, cross: torch.Tensor | None, planes: torch.Tensor) -> None:
    """same += Σ_d 256^(2d) A_d A_dᵀ and cross += Σ_{d<e} 256^(d+e) A_d A_eᵀ (int64), for digit planes A_d."""
    digits = planes.shape[0]
    for d in range(digits):
        for e in range(d, digits):
            # A_e A_dᵀ is (A_d A_eᵀ)ᵀ: each pair of digits is multiplied once, its transpose added at the end.
            target = same if d == e else cross
            target.add_(torch._int_mm(planes[d], planes[e].T), alpha=256 ** (d + e))  # type: ignore[union-attr]


def _int8_gram_from(same: torch.Tensor, cross: torch.Tensor | None, p: int) -> torch.Tensor:
    if cross is not None:
        same += cross
        same += cross.T
    # Doubled ranks: a quarter of their products is the Gram of the centred ranks (a power of 2, so exact).
    gram = same.to(torch.float64).mul_(0.25)  # exact below 2⁵³; above, rounded once
    return gram if gram.shape[0] == p else gram[:p, :p].clone()


def _spearman_gram_int8(units: torch.Tensor, digits: int, memory_limit: int) -> torch.Tensor:
    """:func:`_spearman_gram` with int8 products; exactly the float64 one wherever that one is exact."""
    p, n = units.shape
    size = _padded(p)
    same = torch.zeros(size, size, dtype=torch.int64)
    cross = torch.zeros(size, size, dtype=torch.int64) if digits > 1 else None
    if _ranks_fit(units, torch.device("cpu"), memory_limit):
        # Rank straight into the digit planes; the values are left as they are.
        planes = torch.empty(digits, size, _padded(n), dtype=torch.int8)
        planes[:, p:] = 0
        planes[:, :p, n:] = 0
        _rank_rows_numpy(units, planes[:, :p, :n].numpy())
        for k in range(0, n, INT8_CHUNK):
            _add_int8_products_(same, cross, planes[:, :, k:k + INT8_CHUNK])
        return _int8_gram_from(same, cross, p)
    # Too many values for a copy: rank them in place, then take the digits of one chunk of inputs at a time.
    _rank_in_place(units)
    chunk = max(8, min(INT8_CHUNK, max(256, GRAM_CHUNK_BYTES // max(1, (4 + digits) * p))) // 8 * 8)
    doubled = np.empty(p * min(chunk, n), dtype=np.int32)
    planes = torch.zeros(digits, size, _padded(min(chunk, n)), dtype=torch.int8)
    for k in range(0, n, chunk):
        width = min(chunk, n - k)
        part = planes[:, :, :_padded(width)]
        part[:, :, width:] = 0  # the last chunk's padding may hold the previous chunk's digits
        v = doubled[:p * width].reshape(p, width)
        np.multiply(units[:, k:k + width].numpy(), 2, out=v, casting="unsafe")  # half-integers: exact
        _split_digits(v, part[:, :p, :width].numpy())
        _add_int8_products_(same, cross, part)
    return _int8_gram_from(same, cross, p)


def _ranks_fit(units: torch.Tensor, device: torch.device, memory_limit: int) -> bool:
    """Whether the CPU may rank into a separate copy (int8 digits or float64), leaving the values as they are."""
    p, n = units.shape
    digits = _int8_digits(n) if _use_int8(device) else None
    size = digits * _padded(p) * _padded(n) if digits else 8 * p * n
    return device.type == "cpu" and units.device.type == "cpu" and size <= min(RANK_COPY_BYTES, memory_limit)


def _spearman_gram(units: torch.Tensor, device: torch.device, memory_limit: int) -> torch.Tensor:
    """Σ over inputs of the products of centred ranks, in float64, for a (n_units, n_inputs) view of the values.

    On the CPU, where ``torch._int_mm`` works (``INT8_GRAM``), the doubled ranks are multiplied as int8 digits
    (see above), exactly. Otherwise the products are float64: when a float64 copy of the ranks fits
    ``RANK_COPY_BYTES`` and ``memory_limit``, the values are left untouched: tiles of units are ranked into that
    copy from the last tile to the first, and as soon as tile i is ranked its row of the upper block triangle,
    G[i, i:], is multiplied on a second thread. Ranking is mostly numpy work that holds the GIL while BLAS
    releases it, so the two share the cores. On either path, more values than that (or a GPU's) are replaced by
    their ranks in place and the products are accumulated over chunks of inputs, so a spilled buffer is read
    chunk by chunk.
    """
    p, n = units.shape
    digits = _int8_digits(n) if _use_int8(device) and units.device.type == "cpu" else None
    if digits is not None:
        return _spearman_gram_int8(units, digits, memory_limit)
    gram = torch.zeros(p, p, dtype=torch.float64, device=device)
    if _ranks_fit(units, device, memory_limit):
        ranks = torch.empty(p, n, dtype=torch.float64)
        out = ranks.numpy()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gram") as pool:
            pending = []
            for i in reversed(range(0, p, GRAM_TILE)):
                j = min(i + GRAM_TILE, p)
                try:
                    _rank_rows_numpy(units[i:j], out[i:j])
                except _NonFinite as error:
                    raise _NonFinite(i + error.row, error.column, error.count) from None
                pending.append(pool.submit(lambda i=i, j=j: gram[i:j, i:].addmm_(ranks[i:j], ranks[i:].T)))
            for future in pending:
                future.result()
        return _symmetric_from_upper(gram)
    _rank_in_place(units)
    chunk = max(256, GRAM_CHUNK_BYTES // max(1, 8 * p))
    work = torch.empty(p, min(chunk, n), dtype=torch.float64, device=device)  # reused: no fresh pages per chunk
    for k in range(0, n, chunk):
        width = min(chunk, n - k)
        part = work[:, :width]
        part.copy_(units[:, k:k + width])
        _add_gram_upper_(gram, part)
    return _symmetric_from_upper(gram)


@dataclass
class Correlation:
    """What :func:`correlate` returns."""

    r: torch.Tensor  # (n_kept, n_kept) float64 on the CPU, unit diagonal
    constant: torch.Tensor  # (n_units,) bool on the CPU: True for the zero-variance units, left out of r
    n_inputs: int
    buffer: str = ""  # where Spearman's values were held: "device", "memory", "disk", or "none" (the matrix given)


def correlate(activations: torch.Tensor | np.ndarray | Iterable[torch.Tensor], *, method: Method = "spearman",
              device: str | torch.device = "auto", n_inputs: int | None = None, batch_size: int = 8192,
              memory_limit: int = MEMORY_LIMIT, spill_dir: str | os.PathLike[str] | None = None,
              describe_unit: Callable[[int], str] | None = None) -> Correlation:
    """Correlation matrix of units over inputs, streamed in batches with float64 accumulation.

    Parameters
    ----------
    activations : torch.Tensor or np.ndarray of shape (n_inputs, n_units), or iterable of (batch, n_units) tensors
        One row per input; an iterable is consumed once (e.g. :meth:`ActivationRecorder.batches`).
    method : {"spearman", "pearson"}, default="spearman"
        Spearman's ρ (Pearson's r of the ranks within the data set, ties averaged) or Pearson's r.
    device : {"auto", "cpu", "cuda"} or torch.device, default="auto"
        Where the accumulation runs.
    n_inputs : int, optional
        The number of inputs an iterable will yield, so Spearman's buffer is allocated once, at its final place.
        Unknown counts are fine: the batches are then collected and assembled at the end (twice the memory for
        a moment).
    batch_size : int, default=8192
        Rows per update when ``activations`` is one matrix.
    memory_limit : int, default=4 GiB
        RAM Spearman's ``4 · n_units · n_inputs``-byte buffer may use before it goes to a temporary file.
    spill_dir : path, optional
        Where that file goes (default: the system's temporary folder). It is removed afterwards.
    describe_unit : callable(int) -> str, optional
        Names a column in error messages.

    Returns
    -------
    Correlation
        ``r`` over the units that vary, ``constant`` marking those that do not.

    Raises
    ------
    ActivationError
        Fewer than 2 inputs, a non-finite activation, or batches of different widths.
    """
    _check_option("method", method, METHODS)
    dev = _resolve_device(device)
    if n_inputs is None and isinstance(activations, (torch.Tensor, np.ndarray)):
        n_inputs = int(activations.shape[0])
    if isinstance(activations, np.ndarray):
        activations = torch.from_numpy(activations)
    if method == "spearman" and isinstance(activations, torch.Tensor) and activations.dim() == 2 \
            and activations.shape[0] >= 2 and _ranks_fit(activations.T, dev, memory_limit):
        # The whole matrix is here and its ranks fit in RAM: rank straight from it, no buffer and no copy.
        try:
            gram = _spearman_gram(activations.to(torch.float32).T, dev, memory_limit)
        except _NonFinite as error:
            raise _non_finite_error(error, describe_unit) from None
        return _normalise(gram, (gram.diagonal() == 0).cpu(), activations.shape[0], "none")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ActivationError(f"batch_size={batch_size!r} must be a positive int.")
    if isinstance(activations, torch.Tensor):
        # Equal batches: a short last one would run the products below BLAS's full speed.
        rows = max(1, activations.shape[0])
        batches: Iterator[torch.Tensor] = iter_inputs(activations, math.ceil(rows / math.ceil(rows / batch_size)))
    else:
        batches = iter(activations)
    moments: _Moments | None = None
    buffer: _ValueBuffer | None = None
    low = high = None
    width: int | None = None
    n = 0
    try:
        for batch in batches:
            if isinstance(batch, np.ndarray):
                batch = torch.from_numpy(batch)
            if batch.dim() != 2:
                raise ActivationError(f"An activation batch has shape {tuple(batch.shape)}; correlate takes "
                                      "(batch, n_units) matrices.")
            if batch.shape[0] == 0:
                continue
            batch = batch.to(dev)
            if width is None:
                width = batch.shape[1]
                if method == "pearson":
                    moments = _Moments(width, dev)
                    low = torch.full((width,), math.inf, dtype=torch.float64, device=dev)
                    high = torch.full((width,), -math.inf, dtype=torch.float64, device=dev)
                else:
                    buffer = _ValueBuffer(width, n_inputs, dev, memory_limit, spill_dir)
            elif batch.shape[1] != width:
                raise ActivationError(f"Activation batches differ in width: {width} units, then {batch.shape[1]}.")
            if moments is not None:
                batch_low, batch_high = torch.aminmax(batch, dim=0)  # NaN propagates: this checks finiteness too
                finite = torch.isfinite(batch_low) & torch.isfinite(batch_high)
                if not bool(finite.all()):
                    column = int(torch.nonzero(~finite)[0])
                    row = int(torch.nonzero(~torch.isfinite(batch[:, column]))[0])
                    raise _NonFinite(column, n + row, int((~torch.isfinite(batch)).sum()))
                low = torch.minimum(low, batch_low.to(torch.float64))
                high = torch.maximum(high, batch_high.to(torch.float64))
                moments.update(batch)
            else:
                buffer.append(batch)  # type: ignore[union-attr]
            n += batch.shape[0]
        if n < 2 or width is None:
            raise ActivationError(f"Correlations need at least 2 inputs; got {n}.")
        if moments is not None:
            gram = moments.gram()
            constant = (low == high).cpu()  # exact: no variance at all, whatever a rounded variance would say
            where = ""
        else:
            gram = _spearman_gram(buffer.units(), dev, memory_limit)  # type: ignore[union-attr]
            # Centred ranks of a constant unit are all 0, so its sum of squares is exactly 0; any other's is ≥ 1/2.
            constant = (gram.diagonal() == 0).cpu()
            where = buffer.location  # type: ignore[union-attr]
    except _NonFinite as error:
        raise _non_finite_error(error, describe_unit) from None
    finally:
        if buffer is not None:
            buffer.close()
    return _normalise(gram, constant, n, where)


def _non_finite_error(error: _NonFinite, describe_unit: Callable[[int], str] | None) -> ActivationError:
    unit = describe_unit(error.row) if describe_unit else f"column {error.row}"
    return ActivationError(f"Non-finite activations (NaN or inf): {error.count:,}, the first in {unit} at input "
                           f"{error.column:,}. neuronmap does not correlate them; check the model and the inputs' "
                           "scale.")


def _normalise(gram: torch.Tensor, constant: torch.Tensor, n_inputs: int, where: str) -> Correlation:
    """r = G_ij / √(G_ii G_jj) over the units that vary."""
    keep = torch.nonzero(~constant).flatten().to(gram.device)
    if keep.numel() < constant.numel():
        gram = gram.index_select(0, keep).index_select(1, keep)
    scale = gram.diagonal().sqrt()
    r = gram.div_(scale[:, None]).div_(scale[None, :]).clamp_(-1.0, 1.0)
    r.fill_diagonal_(1.0)
    return Correlation(r=r.cpu(), constant=constant, n_inputs=n_inputs, buffer=where)


def compute_correlations(module: nn.Module, inputs: torch.Tensor | np.ndarray | Iterable[Any], *,
                         method: Method = "spearman", layers: str | Sequence[str | int] = "hidden",
                         reduction: Reduction = "l2", point: Point = "post", batch_size: int = 512,
                         device: str | torch.device = "auto", input_shape: Sequence[int] | None = None,
                         data: str = "", memory_limit: int = MEMORY_LIMIT,
                         spill_dir: str | os.PathLike[str] | None = None) -> ActivationCorrelations:
    """Record a module's units over a data set in batches and correlate them (methods.md §2).

    Parameters
    ----------
    module : nn.Module
        The network, e.g. ``build_module("neuronmap.examples.nets:mlp_4x256")`` with its weights loaded. Its
        layers must be those of the stored model the graph is meant for (``ingest_activation_graph`` checks).
    inputs : torch.Tensor, np.ndarray or iterable
        The data set's inputs (N, *input_shape), or an iterable of batches (a DataLoader's ``(x, y)`` pairs).
        The reference used the test set.
    method : {"spearman", "pearson"}, default="spearman"
    layers, reduction, point, input_shape, device
        See :class:`ActivationRecorder`.
    batch_size : int, default=512
        Inputs per forward pass; only one batch's activations exist at a time, except Spearman's float32 buffer
        (see the module docstring).
    data : str, default=""
        A description of the data set, stored with the graph (e.g. ``"digits:test"``).
    memory_limit, spill_dir
        See :func:`correlate`.

    Returns
    -------
    ActivationCorrelations
    """
    recorder = ActivationRecorder(module, layers=layers, reduction=reduction, point=point, input_shape=input_shape,
                                  device=device)
    result = correlate(recorder.batches(inputs, batch_size), method=method, device=recorder.device,
                       n_inputs=_count_inputs(inputs), memory_limit=memory_limit, spill_dir=spill_dir,
                       describe_unit=recorder.describe_unit)
    constant = result.constant.numpy()
    meta = ActivationMeta(data=data, method=method, reduction=reduction, point=point, n_inputs=result.n_inputs)
    return ActivationCorrelations(layers=recorder.layers, recorded=list(recorder.recorded),
                                  ordinals=recorder.units[~constant], excluded=recorder.units[constant],
                                  r=result.r, meta=meta)


# -- 3. sparsification ----------------------------------------------------------------------------------------------

def _check_sparsity(min_r2: float, top_k: int | None) -> None:
    if isinstance(min_r2, bool) or not isinstance(min_r2, (int, float)) or not 0.0 <= float(min_r2) <= 1.0:
        raise ActivationError(f"min_r2={min_r2!r} must be a number in [0, 1]; 0 keeps every pair.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ActivationError(f"top_k={top_k!r} must be a positive int, or None to keep every neuron's partners.")


def _keep_mask(r2: torch.Tensor, min_r2: float, top_k: int | None, row_chunk: int = 1024) -> torch.Tensor:
    """(n, n) bool, symmetric, False on the diagonal: the pairs :func:`sparsify` keeps."""
    n = r2.shape[0]
    keep = r2 >= float(min_r2)
    keep.fill_diagonal_(False)
    if top_k is not None and top_k < n - 1:
        chosen = torch.zeros(n, n, dtype=torch.bool)
        for lo in range(0, n, row_chunk):
            rows = r2[lo:lo + row_chunk].clone()
            rows[torch.arange(rows.shape[0]), torch.arange(lo, lo + rows.shape[0])] = -1.0  # never one's own partner
            # A stable sort makes ties go to the lower ordinal, so the choice is reproducible.
            order = torch.sort(rows, dim=1, descending=True, stable=True).indices[:, :top_k]
            chosen[lo:lo + rows.shape[0]].scatter_(1, order, True)
        keep &= chosen | chosen.T
    return keep


def sparsify(corr: ActivationCorrelations, *, min_r2: float = 0.0, top_k: int | None = None) -> ActivationEdges:
    """The edges of the correlation graph, lower ordinal → higher ordinal, once per pair.

    Parameters
    ----------
    corr : ActivationCorrelations
    min_r2 : float, default=0.0
        Keep pairs with r² ≥ min_r2 (0 keeps all n(n−1)/2 pairs, the reference's complete graph).
    top_k : int, optional
        Keep, for every neuron, its ``top_k`` partners of largest r² (ties to the lower ordinal); a pair stays if
        either end keeps it, so the graph has between n·k/2 and n·k edges before ``min_r2`` applies. None keeps
        all.

    Returns
    -------
    ActivationEdges
        Sorted by (src, dst).
    """
    _check_sparsity(min_r2, top_k)
    r = corr.r.to(torch.float64)
    r2 = r * r
    keep = torch.triu(_keep_mask(r2, min_r2, top_k), diagonal=1)
    i, j = torch.nonzero(keep, as_tuple=True)  # row-major: sorted by (i, j), and ordinals ascend with the index
    ordinals = torch.from_numpy(np.asarray(corr.ordinals, dtype=np.int64))
    return ActivationEdges(layers=corr.layers, recorded=list(corr.recorded), ordinals=corr.ordinals,
                           excluded=corr.excluded, src=ordinals[i].numpy(), dst=ordinals[j].numpy(),
                           r=r[i, j].numpy(), r2=r2[i, j].numpy(), min_r2=float(min_r2), top_k=top_k,
                           meta=corr.meta)


def count_edges(corr: ActivationCorrelations, *, min_r2: float = 0.0, top_k: int | None = None) -> int:
    """How many edges :func:`sparsify` would keep, without building them (for previews and progress bars)."""
    _check_sparsity(min_r2, top_k)
    r2 = corr.r.to(torch.float64) ** 2
    return int(torch.triu(_keep_mask(r2, min_r2, top_k), diagonal=1).sum())
