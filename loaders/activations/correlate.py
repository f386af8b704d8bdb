"""Correlation matrices of recorded units over a data set, and the types that carry them (methods.md §2).

:func:`correlate` streams ``(batch, n_units)`` matrices into one of two accumulators on the device: Pearson's
running mean and co-moments (Chan's parallel update in float64, nothing kept), or Spearman's buffer of every value,
ranked once at the end (:mod:`.ranks`, :mod:`.gram`). Units whose value never changes (dead ReLUs, constant maps)
have no correlation: they are reported and left out, as the reference masks them.
:func:`compute_correlations` records a module (:mod:`.record`) and correlates in one call.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.export import ExportedProgram

from neuronmap.device import resolve_device
from neuronmap.loaders.activations.buffer import _ValueBuffer
from neuronmap.loaders.activations.gram import _add_gram_upper_, _ranks_fit, _spearman_gram, _symmetric_from_upper
from neuronmap.loaders.activations.ranks import _NonFinite
from neuronmap.loaders.activations.record import ActivationRecorder, _check_option, _count_inputs, iter_inputs
from neuronmap.loaders.errors import ActivationError
from neuronmap.loaders.records import LayerRecord
from neuronmap.options import ChannelReduction, CorrelationMethod, RecordPoint, choices

METHODS = choices(CorrelationMethod)
MEMORY_LIMIT = 4 << 30  # bytes of RAM the Spearman buffer may take before it spills to disk


# -- what the correlations describe -------------------------------------------------------------------------------


class ActivationMeta(BaseModel):
    """How an activation graph was computed; stored on its (:ActivationGraph) node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: str = ""  # the data set's name or description, e.g. "digits:test"
    method: CorrelationMethod = "spearman"
    reduction: ChannelReduction = "l2"
    point: RecordPoint = "post"
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
        props: dict[str, Any] = {
            **self.meta.model_dump(),
            "min_r2": float(self.min_r2),
            "n_units": self.n_units,
            "n_excluded": int(self.excluded.size),
            "layers": [int(i) for i in self.recorded],
            "excluded": [int(o) for o in self.excluded],
        }
        if self.top_k is not None:
            props["top_k"] = int(self.top_k)
        return props


# -- streaming correlation ----------------------------------------------------------------------------------------


@dataclass
class Correlation:
    """What :func:`correlate` returns."""

    r: torch.Tensor  # (n_kept, n_kept) float64 on the CPU, unit diagonal
    constant: torch.Tensor  # (n_units,) bool on the CPU: True for the zero-variance units, left out of r
    n_inputs: int
    buffer: str = ""  # where Spearman's values were held: "device", "memory", "disk", or "none" (the matrix given)


class _Accumulator(ABC):
    """What :func:`correlate` streams the batches into, one per method."""

    location = ""  # where the values were held, for Correlation.buffer

    @abstractmethod
    def add(self, batch: torch.Tensor, first: int) -> None:
        """Take a (batch, n_units) matrix on the device; ``first`` numbers its first input."""

    @abstractmethod
    def finish(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (n_units, n_units) float64 Gram matrix of the centred values (or ranks) and the constant units."""

    @abstractmethod
    def close(self) -> None:
        """Free what the accumulator holds (also after an error)."""


class _Pearson(_Accumulator):
    """Running mean and co-moment matrix (Chan et al.'s pairwise update, float64), and each unit's range."""

    def __init__(self, n_units: int, *, device: torch.device) -> None:
        self.n = 0
        self.mean = torch.zeros(n_units, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(n_units, n_units, dtype=torch.float64, device=device)
        self.low = torch.full((n_units,), math.inf, dtype=torch.float64, device=device)
        self.high = torch.full((n_units,), -math.inf, dtype=torch.float64, device=device)

    def add(self, batch: torch.Tensor, first: int) -> None:
        batch_low, batch_high = torch.aminmax(batch, dim=0)  # NaN propagates: this checks finiteness too
        finite = torch.isfinite(batch_low) & torch.isfinite(batch_high)
        if not bool(finite.all()):
            column = int(torch.nonzero(~finite)[0])
            row = int(torch.nonzero(~torch.isfinite(batch[:, column]))[0])
            raise _NonFinite(column, first + row, int((~torch.isfinite(batch)).sum()))
        self.low = torch.minimum(self.low, batch_low.to(torch.float64))
        self.high = torch.maximum(self.high, batch_high.to(torch.float64))
        self._update(batch)

    def _update(self, x: torch.Tensor) -> None:
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

    def finish(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Constant means low == high, exactly: no variance at all, whatever a rounded variance would say.
        return _symmetric_from_upper(self.m2), (self.low == self.high).cpu()

    def close(self) -> None:
        pass  # nothing beyond tensors the collector frees


class _Spearman(_Accumulator):
    """Every value, kept whole (:class:`_ValueBuffer`); the Gram matrix of their centred ranks at the end."""

    def __init__(
        self,
        n_units: int,
        *,
        device: torch.device,
        n_inputs: int | None,
        memory_limit: int,
        spill_dir: str | os.PathLike[str] | None,
    ) -> None:
        self.device, self.memory_limit = device, memory_limit
        self.buffer = _ValueBuffer(n_units, n_inputs, device, memory_limit, spill_dir)

    def add(self, batch: torch.Tensor, first: int) -> None:
        self.buffer.append(batch)

    def finish(self) -> tuple[torch.Tensor, torch.Tensor]:
        gram = _spearman_gram(self.buffer.units(), self.device, self.memory_limit)
        self.location = self.buffer.location
        # Centred ranks of a constant unit are all 0, so its sum of squares is exactly 0; any other's is ≥ 1/2.
        return gram, (gram.diagonal() == 0).cpu()

    def close(self) -> None:
        self.buffer.close()


def correlate(
    activations: torch.Tensor | np.ndarray | Iterable[torch.Tensor],
    *,
    method: CorrelationMethod = "spearman",
    device: str | torch.device = "auto",
    n_inputs: int | None = None,
    batch_size: int = 8192,
    memory_limit: int = MEMORY_LIMIT,
    spill_dir: str | os.PathLike[str] | None = None,
    describe_unit: Callable[[int], str] | None = None,
) -> Correlation:
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
    DeviceError
        A device that is not available.
    """
    _check_option("method", method, METHODS)
    dev = resolve_device(device)
    if n_inputs is None and isinstance(activations, (torch.Tensor, np.ndarray)):
        n_inputs = int(activations.shape[0])
    if isinstance(activations, np.ndarray):
        activations = torch.from_numpy(activations)
    try:
        if (
            method == "spearman"
            and isinstance(activations, torch.Tensor)
            and activations.dim() == 2
            and activations.shape[0] >= 2
            and _ranks_fit(activations.T, dev, memory_limit)
        ):
            # The whole matrix is here and its ranks fit in RAM: rank straight from it, no buffer and no copy.
            gram = _spearman_gram(activations.to(torch.float32).T, dev, memory_limit)
            return _normalise(gram, (gram.diagonal() == 0).cpu(), activations.shape[0], "none")
        start: Callable[[int], _Accumulator] = (
            partial(_Pearson, device=dev)
            if method == "pearson"
            else partial(_Spearman, device=dev, n_inputs=n_inputs, memory_limit=memory_limit, spill_dir=spill_dir)
        )
        return _accumulate(_batches(activations, batch_size), dev, start)
    except _NonFinite as error:
        raise _non_finite_error(error, describe_unit) from None


def _batches(activations: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ActivationError(f"batch_size={batch_size!r} must be a positive int.")
    if isinstance(activations, torch.Tensor):
        # Equal batches: a short last one would run the products below BLAS's full speed.
        rows = max(1, activations.shape[0])
        return iter_inputs(activations, math.ceil(rows / math.ceil(rows / batch_size)))
    return iter(activations)


def _accumulate(
    batches: Iterator[torch.Tensor], device: torch.device, start: Callable[[int], _Accumulator]
) -> Correlation:
    """Stream the batches into the accumulator ``start(n_units)`` makes, then normalise its Gram matrix."""
    accumulator: _Accumulator | None = None
    width = n = 0
    try:
        for batch in batches:
            if isinstance(batch, np.ndarray):
                batch = torch.from_numpy(batch)
            if batch.dim() != 2:
                raise ActivationError(
                    f"An activation batch has shape {tuple(batch.shape)}; correlate takes (batch, n_units) matrices."
                )
            if batch.shape[0] == 0:
                continue
            batch = batch.to(device)
            if accumulator is None:
                width = batch.shape[1]
                accumulator = start(width)
            elif batch.shape[1] != width:
                raise ActivationError(f"Activation batches differ in width: {width} units, then {batch.shape[1]}.")
            accumulator.add(batch, n)
            n += batch.shape[0]
        if n < 2 or accumulator is None:
            raise ActivationError(f"Correlations need at least 2 inputs; got {n}.")
        gram, constant = accumulator.finish()
    finally:
        if accumulator is not None:
            accumulator.close()
    return _normalise(gram, constant, n, accumulator.location)


def _non_finite_error(error: _NonFinite, describe_unit: Callable[[int], str] | None) -> ActivationError:
    unit = describe_unit(error.row) if describe_unit else f"column {error.row}"
    return ActivationError(
        f"Non-finite activations (NaN or inf): {error.count:,}, the first in {unit} at input "
        f"{error.column:,}. neuronmap does not correlate them; check the model and the inputs' "
        "scale."
    )


def _normalise(gram: torch.Tensor, constant: torch.Tensor, n_inputs: int, where: str) -> Correlation:
    """r = G_ij / √(G_ii G_jj) over the units that vary."""
    keep = torch.nonzero(~constant).flatten().to(gram.device)
    if keep.numel() < constant.numel():
        gram = gram.index_select(0, keep).index_select(1, keep)
    scale = gram.diagonal().sqrt()
    r = gram.div_(scale[:, None]).div_(scale[None, :]).clamp_(-1.0, 1.0)
    r.fill_diagonal_(1.0)
    return Correlation(r=r.cpu(), constant=constant, n_inputs=n_inputs, buffer=where)


def compute_correlations(
    module: nn.Module | ExportedProgram,
    inputs: torch.Tensor | np.ndarray | Iterable[Any],
    *,
    method: CorrelationMethod = "spearman",
    layers: str | Sequence[str | int] = "hidden",
    reduction: ChannelReduction = "l2",
    point: RecordPoint = "post",
    batch_size: int = 512,
    device: str | torch.device = "auto",
    input_shape: Sequence[int] | None = None,
    data: str = "",
    memory_limit: int = MEMORY_LIMIT,
    spill_dir: str | os.PathLike[str] | None = None,
) -> ActivationCorrelations:
    """Record a module's units over a data set in batches and correlate them (methods.md §2).

    Parameters
    ----------
    module : nn.Module or torch.export.ExportedProgram
        The network, e.g. ``build_module("neuronmap.examples.nets:mlp_4x256")`` with its weights loaded, or an
        exported program (``load_exported("net.pt2")``). Its layers must be those of the stored model the graph is
        meant for (``ingest_activation_graph`` checks).
    inputs : torch.Tensor, np.ndarray or iterable
        The data set's inputs (N, *input_shape), or an iterable of batches (a DataLoader's ``(x, y)`` pairs).
        The reference used the test set.
    method : {"spearman", "pearson"}, default="spearman"
    layers, reduction, point, input_shape, device
        See :class:`ActivationRecorder`.
    batch_size : int, default=512
        Inputs per forward pass; only one batch's activations exist at a time, except Spearman's float32 buffer
        (see :mod:`.buffer`).
    data : str, default=""
        A description of the data set, stored with the graph (e.g. ``"digits:test"``).
    memory_limit, spill_dir
        See :func:`correlate`.

    Returns
    -------
    ActivationCorrelations
    """
    recorder = ActivationRecorder(
        module, layers=layers, reduction=reduction, point=point, input_shape=input_shape, device=device
    )
    result = correlate(
        recorder.batches(inputs, batch_size),
        method=method,
        device=recorder.device,
        n_inputs=_count_inputs(inputs),
        memory_limit=memory_limit,
        spill_dir=spill_dir,
        describe_unit=recorder.describe_unit,
    )
    constant = result.constant.numpy()
    meta = ActivationMeta(data=data, method=method, reduction=reduction, point=point, n_inputs=result.n_inputs)
    return ActivationCorrelations(
        layers=recorder.layers,
        recorded=list(recorder.recorded),
        ordinals=recorder.units[~constant],
        excluded=recorder.units[constant],
        r=result.r,
        meta=meta,
    )
