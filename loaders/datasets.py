"""Named data sets that work offline, and real loaders for the data sets users bring.

``load_dataset(name)`` is the entry point. A name is a registered data set (``available_datasets()`` lists them:
scikit-learn's bundled ``digits`` / ``digits-image``, and the generated tasks ``line``, ``poly``, ``halves``,
``halves-same`` of methods.md §7, drawn deterministically from a seed), a path to an ``.npz`` file with arrays
``x_train``, ``y_train``, ``x_test``, ``y_test``, or an image folder (``root/<class>/*.png``, or
``root/train/<class>/…`` and ``root/test/<class>/…``, read with PIL). Inputs are float32 scaled to [0, 1] (``poly``:
N(0, 1)); class labels are int64, regression targets float32.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from neuronmap.loaders.errors import LoadError

Task = Literal["classification", "regression"]
Split = Literal["train", "test", "all"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class DatasetError(LoadError, ValueError):
    """A data set name, option or file neuronmap cannot use."""


class Dataset(BaseModel):
    """Inputs and targets, split into train and test.

    ``y_*`` hold int64 class labels for classification, float32 targets of shape (N, n_outputs) for regression.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: Task = "classification"

    @property
    def n_classes(self) -> int:
        if self.task != "classification":
            raise DatasetError(f"Data set {self.name!r} is a regression task and has no classes; use n_outputs.")
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def n_outputs(self) -> int:
        """Classes for classification, target width for regression."""
        return self.n_classes if self.task == "classification" else int(self.y_train.shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input's shape, without the batch dim."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    def inputs(self, split: Split = "test") -> torch.Tensor:
        """The inputs of one split, or of both (``"all"``: train then test)."""
        if split == "train":
            return self.x_train
        if split == "test":
            return self.x_test
        if split == "all":
            return torch.cat([self.x_train, self.x_test])
        raise DatasetError(f"split={split!r} is not one of 'train', 'test', 'all'.")


# -- shipped ------------------------------------------------------------------------------------------------------


def _split(x: torch.Tensor, y: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, ...]:
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction={test_fraction!r} must lie strictly between 0 and 1.")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


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
    x_train, y_train, x_test, y_test = _split(x, y, test_fraction, seed)
    return Dataset(
        name="digits-image" if image else "digits", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
    )


# -- generated (methods.md §7) ------------------------------------------------------------------------------------


def _check_sizes(n_train: int, n_test: int) -> None:
    for label, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DatasetError(f"{label}={value!r} must be a positive int.")


def line(n_train: int = 2_000, n_test: int = 500, size: int = 28, max_lines: int = 10, seed: int = 0) -> Dataset:
    """Count the vertical lines: 1 to ``max_lines`` distinct full-height lines in a ``size``×``size`` image.

    The reference's ``line`` task (generate_datasets.py: line_counting_data_gen): each image gets k lines, k
    uniform in 1..max_lines, at k distinct columns; the label is k − 1. Shape (N, 1, size, size), pixels 0 or 1.
    """
    _check_sizes(n_train, n_test)
    if not 1 <= max_lines <= size:
        raise DatasetError(f"max_lines={max_lines!r} must lie in 1..size ({size}): every line takes its own column.")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    counts = rng.integers(1, max_lines + 1, size=n)
    # k distinct columns per image: the k smallest of `size` uniform keys.
    order = np.argsort(rng.random((n, size)), axis=1)
    columns = np.zeros((n, size), dtype=np.float32)
    np.put_along_axis(columns, order, (np.arange(size)[None, :] < counts[:, None]).astype(np.float32), axis=1)
    x = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(columns[:, None, None, :], (n, 1, size, size))))
    y = torch.from_numpy(counts - 1).to(torch.int64)
    return Dataset(name="line", x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])


POLY_EXPONENTS = tuple(itertools.product((0, 1, 2), repeat=2))  # the 9 monomials x^a y^b, in the reference's order


def poly(n_train: int = 2_000, n_test: int = 500, seed: int = 0) -> Dataset:
    """Polynomial regression: x ∈ ℝ² ~ N(0, 1); 512 targets, one per 0/1 combination of the 9 monomials xᵃyᵇ.

    Target ``j`` is the sum of the monomials selected by the binary digits of ``itertools.product((0, 1),
    repeat=9)``'s ``j``-th tuple, as the reference's polynomial_regression_dataset builds them (methods.md §7).
    """
    _check_sizes(n_train, n_test)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_train + n_test, 2))
    monomials = np.stack([x[:, 0] ** a * x[:, 1] ** b for a, b in POLY_EXPONENTS], axis=1)  # (N, 9)
    coefs = np.array(list(itertools.product((0, 1), repeat=len(POLY_EXPONENTS))), dtype=np.float64)  # (512, 9)
    y = torch.from_numpy(monomials @ coefs.T).float()
    inputs = torch.from_numpy(x).float()
    return Dataset(
        name="poly",
        x_train=inputs[:n_train],
        y_train=y[:n_train],
        x_test=inputs[n_train:],
        y_test=y[n_train:],
        task="regression",
    )


def _gray_images(data: Dataset, split: Literal["train", "test"]) -> torch.Tensor:
    """(N, H, W) grey images of a classification data set, for the halves tasks."""
    x = data.x_train if split == "train" else data.x_test
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() == 4:
        return x.mean(1)  # colour → grey, as the reference's grey CIFAR
    if x.dim() == 3:
        return x
    side = int(round(x.shape[1] ** 0.5)) if x.dim() == 2 else 0
    if x.dim() == 2 and side * side == x.shape[1]:
        return x.reshape(-1, side, side)
    raise DatasetError(
        f"Data set {data.name!r} holds inputs of shape {tuple(x.shape[1:])}, not images; the halves "
        "tasks need (H, W), (C, H, W) or square flat images."
    )


def halves(
    n_train: int = 2_000, n_test: int = 500, same: bool = False, source: str = "digits", seed: int = 0
) -> Dataset:
    """Two half-width images side by side (methods.md §7, the reference's ``halves_*`` tasks).

    Each source image is squeezed to half its width (the mean of each pair of columns). With ``same=False`` both
    halves are random images and the label is (y₁ + y₂) mod n_classes; with ``same=True`` the right half is a
    random image of the left one's class and the label is that class. Train examples are drawn from the source's
    train split, test examples from its test split. Shape (N, 1, H, W).

    Parameters
    ----------
    source : str, default="digits"
        Any ``load_dataset`` name of a classification data set of images with an even width (e.g. an MNIST .npz).
    """
    _check_sizes(n_train, n_test)
    if source in ("halves", "halves-same"):
        raise DatasetError("halves cannot be built from itself; pass source='digits' or an image data set.")
    data = load_dataset(source)
    if data.task != "classification":
        raise DatasetError(f"halves needs a classification source; {source!r} is a {data.task} task.")
    n_classes = data.n_classes
    rng = np.random.default_rng(seed)
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    splits: tuple[tuple[Literal["train", "test"], int], ...] = (("train", n_train), ("test", n_test))
    for split, count in splits:
        images = _gray_images(data, split)
        labels = (data.y_train if split == "train" else data.y_test).numpy()
        if images.shape[-1] % 2:
            raise DatasetError(
                f"The images of {source!r} are {images.shape[-1]} pixels wide; halves needs an even width."
            )
        half = images.reshape(*images.shape[:-1], -1, 2).mean(-1)  # (N, H, W/2)
        left = rng.integers(0, len(half), size=count)
        if same:
            by_class = [np.flatnonzero(labels == c) for c in range(n_classes)]
            if any(len(members) == 0 for members in by_class):
                raise DatasetError(f"The {split} split of {source!r} lacks some class; halves-same needs every one.")
            right = np.array([by_class[labels[i]][rng.integers(len(by_class[labels[i]]))] for i in left])
            y = labels[left]
        else:
            right = rng.integers(0, len(half), size=count)
            y = (labels[left] + labels[right]) % n_classes
        x = torch.cat([half[torch.from_numpy(left)], half[torch.from_numpy(right)]], dim=-1)[:, None]
        parts[split] = (x.contiguous(), torch.from_numpy(np.asarray(y)).to(torch.int64))
    name = "halves-same" if same else "halves"
    return Dataset(
        name=name if source == "digits" else f"{name}:{source}",
        x_train=parts["train"][0],
        y_train=parts["train"][1],
        x_test=parts["test"][0],
        y_test=parts["test"][1],
    )


def halves_same(n_train: int = 2_000, n_test: int = 500, source: str = "digits", seed: int = 0) -> Dataset:
    """``halves(same=True)``: both halves from one class, labelled with it."""
    return halves(n_train, n_test, same=True, source=source, seed=seed)


# -- files the user brings -----------------------------------------------------------------------------------------


def from_npz(path: str | PathLike[str]) -> Dataset:
    """A data set saved as .npz with arrays x_train, y_train, x_test, y_test (e.g. MNIST or CIFAR exported once).

    Pixels stored as 0..255 are scaled to [0, 1]. Float targets of shape (N, k) make a regression data set.
    """
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [key for key in keys if key not in arrays.files]
            if missing:
                raise DatasetError(
                    f"{str(path)!r} lacks array {', '.join(map(repr, missing))}; a data set .npz "
                    "holds x_train, y_train, x_test and y_test."
                )
            parts = {key: torch.from_numpy(arrays[key]) for key in keys}
    except (OSError, ValueError) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"{str(path)!r} is not a readable .npz file ({error}).") from None
    x_train, x_test = parts["x_train"].float(), parts["x_test"].float()
    if x_train.max() > 1.5:  # stored as 0..255 pixels
        x_train, x_test = x_train / 255.0, x_test / 255.0
    regression = parts["y_train"].is_floating_point() and parts["y_train"].dim() == 2
    convert = (lambda y: y.float()) if regression else (lambda y: y.long())
    return Dataset(
        name=Path(path).stem,
        x_train=x_train,
        y_train=convert(parts["y_train"]),
        x_test=x_test,
        y_test=convert(parts["y_test"]),
        task="regression" if regression else "classification",
    )


def _class_folders(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_images(files: list[Path], mode: str) -> np.ndarray:
    from PIL import Image

    arrays, shape = [], None
    for file in files:
        try:
            with Image.open(file) as image:
                array = np.asarray(image.convert(mode), dtype=np.uint8)
        except OSError as error:
            raise DatasetError(f"Cannot read image {str(file)!r} ({error}).") from None
        if shape is None:
            shape = array.shape
        elif array.shape != shape:
            raise DatasetError(
                f"Image {str(file)!r} is {array.shape[1]}×{array.shape[0]} but {str(files[0])!r} is "
                f"{shape[1]}×{shape[0]}; all images of a data set need one size. Resize them first."
            )
        arrays.append(array)
    stacked = np.stack(arrays)
    return stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)  # (N, C, H, W)


def image_folder(
    path: str | PathLike[str], *, test_fraction: float = 0.25, seed: int = 0, grayscale: bool | None = None
) -> Dataset:
    """Images in one sub-folder per class, as torchvision's ImageFolder lays them out.

    Parameters
    ----------
    path : str or PathLike
        ``root/<class>/*.png`` (split at random into train and test), or ``root/train/<class>/…`` and
        ``root/test/<class>/…`` (split as given). Classes are numbered in the sorted order of their folder names.
    test_fraction : float, default=0.25
        The test share when the folder is not split already.
    seed : int, default=0
        The random split's seed.
    grayscale : bool, optional
        Read as one grey channel (True) or RGB (False); by default grey when the first image is grey.

    Returns
    -------
    Dataset
        Inputs (N, C, H, W) float32 in [0, 1], labels int64.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(
            f"{str(root)!r} is not a folder; an image data set is a folder with a sub-folder of images per class."
        )
    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    groups = {"train": root / "train", "test": root / "test"} if presplit else {"all": root}
    classes = sorted({folder.name for group in groups.values() for folder in _class_folders(group)})
    if not classes:
        raise DatasetError(
            f"{str(root)!r} has no class sub-folders; lay the images out as {root.name}/<class>/<image>.png."
        )
    files: dict[str, list[tuple[Path, int]]] = {}
    for key, group in groups.items():
        files[key] = [
            (file, classes.index(folder.name)) for folder in _class_folders(group) for file in _image_files(folder)
        ]
    first = next((entries[0][0] for entries in files.values() if entries), None)
    if first is None:
        raise DatasetError(f"The class folders under {str(root)!r} hold no images ({', '.join(IMAGE_SUFFIXES)}).")
    if grayscale is None:
        from PIL import Image

        with Image.open(first) as image:
            grayscale = image.mode in ("1", "L", "LA", "I", "I;16", "F")
    mode = "L" if grayscale else "RGB"

    def load(entries: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(_read_images([file for file, _ in entries], mode)).float() / 255.0
        return x, torch.tensor([label for _, label in entries], dtype=torch.int64)

    if presplit:
        if not files["train"] or not files["test"]:
            empty = "train" if not files["train"] else "test"
            raise DatasetError(f"{str(root / empty)!r} holds no images.")
        (x_train, y_train), (x_test, y_test) = load(files["train"]), load(files["test"])
    else:
        x, y = load(files["all"])
        x_train, y_train, x_test, y_test = _split(x, y, test_fraction, seed)
    return Dataset(name=root.name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


# -- the registry --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetEntry:
    """A registered data set: its factory (keyword options only) and a line of description."""

    factory: Callable[..., Dataset]
    description: str


DATASETS: dict[str, DatasetEntry] = {
    "digits": DatasetEntry(digits, "scikit-learn's 8×8 digits, flat (N, 64); ships with the package"),
    "digits-image": DatasetEntry(
        lambda test_fraction=0.25, seed=0: digits(True, test_fraction, seed), "the same digits as (N, 1, 8, 8) images"
    ),
    "line": DatasetEntry(line, "count 1–10 vertical lines in 28×28 images (generated)"),
    "poly": DatasetEntry(poly, "x ∈ ℝ² → the 512 sums of monomials xᵃyᵇ, a,b ≤ 2 (generated regression)"),
    "halves": DatasetEntry(halves, "two half-width digits, label (y₁ + y₂) mod 10 (generated)"),
    "halves-same": DatasetEntry(halves_same, "two half-width digits of one class, labelled with it (generated)"),
}


def register_dataset(name: str, factory: Callable[..., Dataset], description: str) -> None:
    """Add a named data set (e.g. a site-local MNIST loader); ``replace`` an existing name by registering again."""
    if not name or name.endswith(".npz") or "/" in name:
        raise DatasetError(f"Data set name {name!r} must be non-empty and must not look like a path.")
    DATASETS[name] = DatasetEntry(factory, description)


def available_datasets() -> dict[str, str]:
    """Every registered name with its description."""
    return {name: entry.description for name, entry in DATASETS.items()}


def _check_options(name: str, factory: Callable[..., Dataset], options: dict[str, Any]) -> None:
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise DatasetError(
            f"Data set {name!r} takes no option {', '.join(map(repr, unknown))}; its options are "
            f"{', '.join(params) or 'none'}."
        )


def load_dataset(name: str | PathLike[str], **options: Any) -> Dataset:
    """A data set by registered name, ``.npz`` path or image-folder path.

    Parameters
    ----------
    name : str or PathLike
        A name of ``available_datasets()`` (``digits``, ``digits-image``, ``line``, ``poly``, ``halves``,
        ``halves-same``), a path to an ``.npz`` file, or a path to an image folder.
    **options
        Passed to the data set's factory, e.g. ``load_dataset("line", n_test=1000, seed=3)``.

    Raises
    ------
    DatasetError
        An unknown name, an option the data set does not take, or a file that cannot be read.
    """
    text = str(name)
    if text in DATASETS:
        entry = DATASETS[text]
        _check_options(text, entry.factory, options)
        return entry.factory(**options)
    if text.endswith(".npz"):
        if options:
            raise DatasetError(f"An .npz data set takes no options; got {', '.join(sorted(options))}.")
        return from_npz(Path(text))
    if Path(text).is_dir():
        _check_options(text, image_folder, options)
        return image_folder(Path(text), **options)
    raise DatasetError(
        f"Unknown data set {text!r}. Choose one of {', '.join(DATASETS)}, or pass a path to an .npz "
        "file (x_train, y_train, x_test, y_test) or to a folder with a sub-folder of images per class."
    )
