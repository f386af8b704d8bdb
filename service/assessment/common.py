"""What importance and coherence share: progress callbacks, a classification data split, one random generator per
sub-cluster, and NaN-free summaries of statistics."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from neuronmap.loaders.datasets import Dataset, load_dataset
from neuronmap.options import Split
from neuronmap.service.errors import AssessmentInputError

Progress = Callable[[str, int, int], None]
"""``on_progress(stage, done, total)``: called as work finishes; ``done`` counts up to ``total`` within a stage."""


def no_progress(stage: str, done: int, total: int) -> None:
    """The default ``on_progress``: report nothing."""
    return None


def none_if_nan(value: float) -> float | None:
    """``value`` as a float, or None for NaN (a test without data)."""
    return None if value != value else float(value)


def finite_mean(values: Sequence[float | None]) -> float | None:
    """The mean of the finite values, or None when there are none."""
    arr = np.array([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else None


def load_split(name: str, split: Split) -> tuple[Dataset, torch.Tensor, torch.Tensor]:
    """A classification data set's inputs and labels of one split."""
    data = load_dataset(name)
    if data.task != "classification":
        raise AssessmentInputError(
            f"Data set {name!r} is a {data.task} task; lesion and coherence tests measure "
            "class accuracy and label entropy, so they need a classification data set."
        )
    x = data.inputs(split)
    y = {"train": data.y_train, "test": data.y_test}.get(split)
    if y is None:
        y = torch.cat([data.y_train, data.y_test])
    return data, x, y


def subcluster_generators(seed: int, n: int) -> list[np.random.Generator]:
    """One independent generator per sub-cluster (in layout order), so results never depend on batching or device."""
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(n)]
