"""The data set registry: shipped, generated (methods.md §7) and user-supplied data sets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from neuronmap.loaders.datasets import (
    DATASETS,
    POLY_EXPONENTS,
    DatasetError,
    available_datasets,
    digits,
    from_npz,
    image_folder,
    load_dataset,
    register_dataset,
)


def test_every_registered_name_loads_with_small_sizes():
    assert {"digits", "digits-image", "line", "poly", "halves", "halves-same"} <= set(available_datasets())
    shapes = {"line": (1, 28, 28), "poly": (2,), "halves": (1, 8, 8), "halves-same": (1, 8, 8)}
    for name, shape in shapes.items():
        data = load_dataset(name, n_train=30, n_test=10)
        assert (len(data.x_train), len(data.x_test)) == (30, 10)
        assert data.input_shape == shape
        assert data.x_train.dtype == torch.float32
    assert load_dataset("digits").input_shape == (64,)
    assert load_dataset("digits-image").input_shape == (1, 8, 8)


def test_digits_keeps_its_shapes_and_split():
    flat, image = digits(), digits(image=True)
    assert flat.x_train.shape == (1348, 64) and flat.x_test.shape == (449, 64)
    assert torch.equal(image.x_train.reshape(-1, 64), flat.x_train)
    assert flat.n_classes == 10 and float(flat.x_train.max()) == 1.0


@pytest.mark.parametrize("name", ["line", "poly", "halves", "halves-same"])
def test_generated_sets_are_deterministic_from_their_seed(name):
    a, b = load_dataset(name, n_train=20, n_test=5, seed=3), load_dataset(name, n_train=20, n_test=5, seed=3)
    c = load_dataset(name, n_train=20, n_test=5, seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


def test_line_labels_count_distinct_full_height_lines():
    data = load_dataset("line", n_train=200, n_test=50, size=12, max_lines=5)
    x = torch.cat([data.x_train, data.x_test])[:, 0]  # (N, 12, 12)
    y = torch.cat([data.y_train, data.y_test])
    assert torch.equal(x, x[:, :1, :].expand_as(x))  # every lit column is lit from top to bottom
    assert torch.equal(x[:, 0].sum(1).long(), y + 1)
    assert set(y.tolist()) == set(range(5))
    with pytest.raises(DatasetError, match="max_lines"):
        load_dataset("line", size=4, max_lines=5)


def test_poly_targets_are_the_sums_of_the_selected_monomials():
    data = load_dataset("poly", n_train=7, n_test=3)
    assert data.task == "regression" and data.n_outputs == 512
    x = data.x_train.double()
    coefs = list(itertools.product((0, 1), repeat=9))
    for j in (0, 1, 100, 511):
        expected = sum(c * x[:, 0] ** a * x[:, 1] ** b for c, (a, b) in zip(coefs[j], POLY_EXPONENTS))
        torch.testing.assert_close(data.y_train[:, j].double(), expected + 0 * x[:, 0], rtol=1e-6, atol=1e-6)
    with pytest.raises(DatasetError, match="regression"):
        _ = data.n_classes


def _halves_of_source():
    src = digits(image=True)
    return {
        split: (getattr(src, f"x_{split}")[:, 0].reshape(-1, 8, 4, 2).mean(-1), getattr(src, f"y_{split}"))
        for split in ("train", "test")
    }


@pytest.mark.parametrize("same", [False, True])
def test_halves_put_two_source_halves_side_by_side_with_the_rule_s_label(same):
    data = load_dataset("halves-same" if same else "halves", n_train=15, n_test=15, seed=1)
    sources = _halves_of_source()
    for split in ("train", "test"):
        halves, labels = sources[split]
        flat = halves.reshape(len(halves), -1)
        x, y = getattr(data, f"x_{split}")[:, 0], getattr(data, f"y_{split}")
        for image, label in zip(x, y):
            left = torch.nonzero((flat == image[:, :4].reshape(-1)).all(1)).flatten()
            right = torch.nonzero((flat == image[:, 4:].reshape(-1)).all(1)).flatten()
            assert left.numel() and right.numel()  # both halves come from this split of the source
            ok = {int(labels[i]) for i in left}, {int(labels[j]) for j in right}
            if same:
                assert int(label) in ok[0] and int(label) in ok[1]
            else:
                assert int(label) in {(a + b) % 10 for a in ok[0] for b in ok[1]}


def test_npz_round_trip_and_regression_targets(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnistish.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (6, 1, 4, 4)).astype(np.uint8),
        y_train=np.arange(6),
        x_test=rng.integers(0, 256, (2, 1, 4, 4)).astype(np.uint8),
        y_test=np.array([1, 2]),
    )
    data = load_dataset(str(path))
    assert data.name == "mnistish" and data.x_train.shape == (6, 1, 4, 4) and float(data.x_train.max()) <= 1.0
    assert data.y_train.dtype == torch.int64
    reg = tmp_path / "reg.npz"
    np.savez(
        reg,
        x_train=rng.normal(size=(5, 2)),
        y_train=rng.normal(size=(5, 3)),
        x_test=rng.normal(size=(2, 2)),
        y_test=rng.normal(size=(2, 3)),
    )
    assert from_npz(reg).task == "regression" and from_npz(reg).n_outputs == 3
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros(3))
    with pytest.raises(DatasetError, match="lacks array 'y_train'"):
        load_dataset(str(bad))


def _write_pngs(folder, images):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, array in enumerate(images):
        Image.fromarray(array).save(folder / f"{i:03d}.png")


def test_image_folder_reads_one_folder_per_class(tmp_path):
    rng = np.random.default_rng(1)
    cats = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    dogs = rng.integers(0, 256, (3, 6, 7), dtype=np.uint8)
    _write_pngs(tmp_path / "pets" / "dog", dogs)
    _write_pngs(tmp_path / "pets" / "cat", cats)
    data = load_dataset(str(tmp_path / "pets"), test_fraction=0.25, seed=0)
    assert data.input_shape == (1, 6, 7) and len(data.x_train) + len(data.x_test) == 8
    x = torch.cat([data.x_train, data.x_test])[:, 0]
    y = torch.cat([data.y_train, data.y_test])
    for image, label in zip(x, y):  # classes are numbered by sorted folder name: cat 0, dog 1
        pool = cats if label == 0 else dogs
        assert any(np.array_equal((image * 255).round().numpy().astype(np.uint8), p) for p in pool)


def test_image_folder_keeps_a_given_split_and_reads_colour(tmp_path):
    rng = np.random.default_rng(2)
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("a", "b"):
            _write_pngs(tmp_path / split / cls, rng.integers(0, 256, (n, 5, 5, 3), dtype=np.uint8))
    data = image_folder(tmp_path)
    assert data.x_train.shape == (8, 3, 5, 5) and data.x_test.shape == (4, 3, 5, 5)
    assert data.y_test.tolist() == [0, 0, 1, 1]


def test_image_folder_refuses_mixed_sizes_and_empty_folders(tmp_path):
    _write_pngs(tmp_path / "x" / "a", np.zeros((1, 4, 4), np.uint8))
    _write_pngs(tmp_path / "x" / "b", np.zeros((1, 5, 4), np.uint8))
    with pytest.raises(DatasetError, match="one size. Resize"):
        load_dataset(str(tmp_path / "x"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_dataset(str(tmp_path / "empty"))


def test_unknown_names_and_options_are_refused_with_the_choices():
    with pytest.raises(DatasetError, match="Unknown data set 'mnist'.*digits.*line.*npz"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="no option 'width'.*n_train"):
        load_dataset("line", width=3)
    with pytest.raises(ValueError):  # DatasetError is a ValueError too
        load_dataset("poly", n_train=0)


def test_register_dataset_adds_a_named_loader():
    register_dataset("tiny-test", lambda seed=0: load_dataset("poly", n_train=3, n_test=2, seed=seed), "tiny")
    try:
        assert load_dataset("tiny-test", seed=1).x_train.shape == (3, 2)
        assert available_datasets()["tiny-test"] == "tiny"
    finally:
        DATASETS.pop("tiny-test")
