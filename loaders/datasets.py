"""Named data sets that work offline: scikit-learn's bundled 8×8 digits, and real loaders for .npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from .errors import LoadError


class DatasetError(LoadError, ValueError):
    """A data set name or file neuronmap cannot use."""


class Dataset(BaseModel):
    """Inputs and integer labels, split into train and test."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def digits(image: bool = False, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's 8×8 digits (1,797 images, ships with the package), scaled to [0, 1].

    ``image=True`` gives (N, 1, 8, 8) for conv nets, otherwise (N, 64).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.data / 16.0, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    if image:
        x = x.reshape(-1, 1, 8, 8)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return Dataset(name="digits-image" if image else "digits", x_train=x[train], y_train=y[train],
                   x_test=x[test], y_test=y[test])


def from_npz(path: Path) -> Dataset:
    """A data set saved as .npz with arrays x_train, y_train, x_test, y_test (e.g. MNIST or CIFAR exported once)."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            parts = {key: torch.from_numpy(arrays[key]) for key in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as error:
        raise DatasetError(f"{str(path)!r} lacks array {error}; a data set .npz holds x_train, y_train, x_test "
                           "and y_test.") from None
    except (OSError, ValueError) as error:
        raise DatasetError(f"{str(path)!r} is not a readable .npz file ({error}).") from None
    x_train, x_test = parts["x_train"].float(), parts["x_test"].float()
    if x_train.max() > 1.5:  # stored as 0..255 pixels
        x_train, x_test = x_train / 255.0, x_test / 255.0
    return Dataset(name=Path(path).stem, x_train=x_train, y_train=parts["y_train"].long(), x_test=x_test,
                   y_test=parts["y_test"].long())


def load_dataset(name: str) -> Dataset:
    """A data set by name (digits, digits-image) or a path to an .npz file."""
    if name == "digits":
        return digits()
    if name == "digits-image":
        return digits(image=True)
    if name.endswith(".npz"):
        return from_npz(Path(name))
    raise DatasetError(f"Unknown data set {name!r}. Choose digits or digits-image, or pass a path to an .npz file "
                       "with x_train, y_train, x_test, y_test.")
