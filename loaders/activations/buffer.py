"""Spearman's values, kept whole for ranking: on the device, in RAM, or spilled to a temporary file.

Ranks need every input's value, so :func:`.correlate` keeps ``4 · n_units · n_inputs`` bytes of float32: on the
GPU if they fit a quarter of its free memory, else in RAM up to ``memory_limit``, else in a memory-mapped file.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

from neuronmap.loaders.errors import ActivationError


class _ValueBuffer:
    """Spearman's float32 activations, kept whole for ranking.

    On the device or in RAM they are kept input-major, (n_inputs, n_units), as the batches come (a plain copy);
    ranking reads a few units' columns at a time, whole cache lines each. In a temporary file they are kept
    unit-major, (n_units, n_inputs), so that ranking reads a unit's values contiguously from disk.
    """

    def __init__(
        self,
        n_units: int,
        n_inputs: int | None,
        device: torch.device,
        memory_limit: int,
        spill_dir: str | os.PathLike[str] | None,
    ) -> None:
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
                raise ActivationError(
                    f"Received more than the {capacity:,} inputs announced; pass n_inputs=None "
                    "when the count is unknown."
                )
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
        return self.data[:, : self.n] if self.location == "disk" else self.data[: self.n].T

    def close(self) -> None:
        self.data = None
        self.chunks = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
