"""Tests for stepwise.data.datasets: embedded data sets and the local CIFAR-10 / STL-10 readers.

The local readers are checked against tiny fixture files written here in exactly the on-disk format of the
official releases (CIFAR-10 "python version" pickle batches, STL-10 binary files), so no download is needed.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from stepwise.data import (
    DATASETS,
    PHOTOGRAPHS,
    DataNotFoundError,
    Dataset,
    load_cifar10,
    load_dataset,
    load_digits,
    load_patches,
    load_stl10,
)

ENV_VARS = ("STEPWISE_CIFAR10", "STEPWISE_STL10", "STEPWISE_DATA")


@pytest.fixture
def no_data_env(monkeypatch):
    """No data-location environment variable is set (whatever the machine running the tests has)."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


# ------------------------------------------------------------------------------------------------------------
# digits


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits()


def test_digits_shape_dtype_range(digits):
    assert isinstance(digits, Dataset)
    assert digits.name == "digits"
    assert digits.images.shape == (1797, 8, 8, 1)
    assert digits.images.dtype == np.float32
    assert len(digits) == 1797
    assert digits.image_shape == (8, 8, 1)
    assert digits.images.min() == 0.0
    assert digits.images.max() == 1.0  # sklearn's digits are 0..16, scaled by 1/16
    assert digits.labels.dtype == np.int32
    assert digits.labels.shape == (1797,)
    np.testing.assert_array_equal(np.unique(digits.labels), np.arange(10))
    assert digits.label_names == tuple(str(i) for i in range(10))


def test_digits_match_sklearn(digits):
    from sklearn.datasets import load_digits as sk_load

    raw = sk_load()
    np.testing.assert_array_equal(digits.images[..., 0], raw.images / 16.0)
    np.testing.assert_array_equal(digits.labels, raw.target)


def test_subset_deterministic_and_seeded(digits):
    a = digits.subset(100, seed=3)
    b = digits.subset(100, seed=3)
    c = digits.subset(100, seed=4)
    assert len(a) == 100 and a.images.shape == (100, 8, 8, 1) and a.labels.shape == (100,)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    # Every subset image is an image of the full set, with its own label, and no image is taken twice.
    flat = digits.images.reshape(len(digits), -1)
    for img, lab in zip(a.images[:20], a.labels[:20]):
        rows = np.where((flat == img.reshape(-1)).all(axis=1))[0]
        assert rows.size >= 1
        assert lab in digits.labels[rows]
    full = digits.subset(len(digits), seed=0)
    assert sorted(full.labels.tolist()) == sorted(digits.labels.tolist())
    # The full data set is untouched.
    assert digits.images.shape == (1797, 8, 8, 1)


@pytest.mark.parametrize("n", [0, -1, 1798])
def test_subset_bad_n(digits, n):
    with pytest.raises(ValueError, match="subset"):
        digits.subset(n, seed=0)


def test_dataset_validates_shapes():
    with pytest.raises(ValueError):
        Dataset("x", np.zeros((2, 3, 3), np.float32), np.zeros(2, np.int32), ())
    with pytest.raises(ValueError):
        Dataset("x", np.zeros((2, 3, 3, 1), np.float32), np.zeros(3, np.int32), ())


# ------------------------------------------------------------------------------------------------------------
# patches


def test_patches_shape_range_labels():
    d = load_patches(200, 16, seed=0)
    assert d.name == "patches"
    assert d.images.shape == (200, 16, 16, 3)
    assert d.images.dtype == np.float32
    assert d.images.min() >= 0.0 and d.images.max() <= 1.0
    assert d.labels.dtype == np.int32
    np.testing.assert_array_equal(d.labels, np.arange(200) % 11)
    assert len(d.label_names) == len(PHOTOGRAPHS) == 11
    # Real photographs, not blank: a decent spread of values.
    assert d.images.std() > 0.1


def test_patches_seeded():
    a = load_patches(200, 16, seed=0)
    b = load_patches(200, 16, seed=0)
    c = load_patches(200, 16, seed=1)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.labels, c.labels)
    assert not np.array_equal(a.images, c.images)
    # Different seeds give different positions for (nearly) every patch.
    same = (a.images == c.images).all(axis=(1, 2, 3))
    assert same.mean() < 0.1


def test_patches_all_distinct_and_not_flat():
    d = load_patches(300, 16, seed=0)
    flat = d.images.reshape(len(d), -1)
    assert len(np.unique(flat, axis=0)) == len(d)
    assert flat.std(axis=1).min() >= 0.01


def test_patches_come_from_their_photograph():
    from stepwise.data.datasets import _photographs

    photos = _photographs()
    d = load_patches(22, 8, seed=5)
    for img, lab in zip(d.images, d.labels):
        photo = photos[lab]
        windows = np.lib.stride_tricks.sliding_window_view(photo, (8, 8, 3))[..., 0, :, :, :]
        # The patch's top-left pixel narrows down the candidate positions, then check the full window.
        rr, cc = np.where((photo == img[0, 0]).all(axis=-1))
        ok = [(r, c) for r, c in zip(rr, cc) if r < windows.shape[0] and c < windows.shape[1]]
        assert any(np.array_equal(windows[r, c], img) for r, c in ok)


def test_patches_bad_arguments():
    from stepwise.data.datasets import _photographs

    smallest = min(min(p.shape[:2]) for p in _photographs())
    load_patches(1, smallest, seed=0)  # the largest size that fits
    with pytest.raises(ValueError, match="exceeds"):
        load_patches(2, smallest + 1, seed=0)
    with pytest.raises(ValueError):
        load_patches(0, 8)
    with pytest.raises(ValueError):
        load_patches(5, 0)


# ------------------------------------------------------------------------------------------------------------
# CIFAR-10 fixture in the official "python version" format.

CIFAR_TRAIN_SIZES = (3, 2, 3, 1, 2)
CIFAR_TEST_SIZE = 4


def _write_cifar_batch(path: Path, data: np.ndarray, labels: np.ndarray, batch_label: bytes):
    batch = {
        b"batch_label": batch_label,
        b"labels": [int(v) for v in labels],
        b"data": data,
        b"filenames": [f"image_{i:05d}.png".encode() for i in range(len(labels))],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


@pytest.fixture
def cifar_root(tmp_path):
    """tmp_path/cifar-10-batches-py/{data_batch_1..5, test_batch}; returns (root, train data, train labels,
    test data, test labels) with data as the raw (N, 3072) uint8 rows."""
    rng = np.random.default_rng(1234)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_data, train_labels = [], []
    for i, n in enumerate(CIFAR_TRAIN_SIZES, start=1):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n)
        _write_cifar_batch(folder / f"data_batch_{i}", data, labels, f"training batch {i} of 5".encode())
        train_data.append(data)
        train_labels.append(labels)
    test_data = rng.integers(0, 256, size=(CIFAR_TEST_SIZE, 3072), dtype=np.uint8)
    test_labels = rng.integers(0, 10, size=CIFAR_TEST_SIZE)
    _write_cifar_batch(folder / "test_batch", test_data, test_labels, b"testing batch 1 of 1")
    # A stray file like the real archive's batches.meta must not matter.
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane"]}, f, protocol=2)
    return tmp_path, np.concatenate(train_data), np.concatenate(train_labels), test_data, test_labels


def _cifar_reference(data: np.ndarray) -> np.ndarray:
    """Obvious per-pixel decoding: image[i, r, c, ch] = data[i, ch*1024 + r*32 + c] / 255."""
    n = data.shape[0]
    out = np.empty((n, 32, 32, 3), np.float32)
    for ch in range(3):
        for r in range(32):
            out[:, r, :, ch] = data[:, ch * 1024 + r * 32 : ch * 1024 + r * 32 + 32]
    return out / np.float32(255.0)


def test_cifar10_train(cifar_root):
    root, data, labels, _, _ = cifar_root
    d = load_cifar10(root, "train")
    n = sum(CIFAR_TRAIN_SIZES)
    assert d.name == "cifar10"
    assert d.images.shape == (n, 32, 32, 3)
    assert d.images.dtype == np.float32
    assert d.labels.dtype == np.int32
    np.testing.assert_array_equal(d.labels, labels)  # the 5 batches concatenated in order
    np.testing.assert_array_equal(d.images, _cifar_reference(data))
    np.testing.assert_array_equal(d.images, data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1) / np.float32(255))
    # Specific pixels, channel by channel (red first, then green, then blue; each row-major).
    for i, r, c, ch in [(0, 0, 0, 0), (0, 0, 1, 0), (1, 5, 7, 1), (4, 31, 0, 2), (n - 1, 17, 29, 2), (6, 3, 30, 1)]:
        assert d.images[i, r, c, ch] == np.float32(data[i, ch * 1024 + r * 32 + c]) / np.float32(255)
    assert d.images.min() >= 0.0 and d.images.max() <= 1.0
    assert len(d.label_names) == 10 and d.label_names[0] == "airplane" and d.label_names[9] == "truck"


def test_cifar10_test_split(cifar_root):
    root, _, _, test_data, test_labels = cifar_root
    d = load_cifar10(root, split="test")
    assert d.images.shape == (CIFAR_TEST_SIZE, 32, 32, 3)
    np.testing.assert_array_equal(d.images, _cifar_reference(test_data))
    np.testing.assert_array_equal(d.labels, test_labels)


def test_cifar10_root_may_be_the_batches_folder(cifar_root):
    root, data, labels, _, _ = cifar_root
    a = load_cifar10(root / "cifar-10-batches-py", "train")
    b = load_cifar10(str(root), "train")  # str works as well as Path
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, labels)
    np.testing.assert_array_equal(a.images, _cifar_reference(data))


@pytest.mark.parametrize("var", ["STEPWISE_CIFAR10", "STEPWISE_DATA"])
@pytest.mark.parametrize("inner", [False, True])
def test_cifar10_env_vars(cifar_root, no_data_env, var, inner):
    root, _, _, test_data, test_labels = cifar_root
    no_data_env.setenv(var, str(root / "cifar-10-batches-py" if inner else root))
    d = load_cifar10(None, "test")
    np.testing.assert_array_equal(d.images, _cifar_reference(test_data))
    np.testing.assert_array_equal(d.labels, test_labels)
    d = load_dataset("cifar10", split="test")  # defaults reach the loader through load_dataset too
    np.testing.assert_array_equal(d.labels, test_labels)


def test_cifar10_env_var_falls_back_to_data_root(cifar_root, no_data_env, tmp_path_factory):
    root, _, _, _, test_labels = cifar_root
    empty = tmp_path_factory.mktemp("empty")
    no_data_env.setenv("STEPWISE_CIFAR10", str(empty))
    no_data_env.setenv("STEPWISE_DATA", str(root))
    np.testing.assert_array_equal(load_cifar10(split="test").labels, test_labels)


def test_cifar10_explicit_root_wins_over_env(cifar_root, no_data_env, tmp_path_factory):
    root, _, _, _, test_labels = cifar_root
    empty = tmp_path_factory.mktemp("empty")
    no_data_env.setenv("STEPWISE_CIFAR10", str(root))
    with pytest.raises(DataNotFoundError):
        load_cifar10(empty, "test")


def test_cifar10_invalid_split(cifar_root):
    root = cifar_root[0]
    with pytest.raises(ValueError, match="split"):
        load_cifar10(root, "validation")


def test_cifar10_not_a_batch(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"images": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(ValueError, match="data"):
        load_cifar10(tmp_path, "test")
    _write_cifar_batch(folder / "test_batch", np.zeros((2, 3000), np.uint8), np.array([0, 1]), b"bad")
    with pytest.raises(ValueError, match="3072"):
        load_cifar10(tmp_path, "test")


# ------------------------------------------------------------------------------------------------------------
# STL-10 fixture in the official binary format.

STL_SIZES = {"train": 3, "test": 2, "unlabeled": 4}
STL_PER_IMAGE = 3 * 96 * 96


def _stl_bytes(images: np.ndarray) -> bytes:
    """Official layout: each image 3 x 96 x 96 column-major, i.e. (channel, col, row) in C order."""
    return b"".join(np.transpose(img, (2, 1, 0)).tobytes() for img in images)


@pytest.fixture
def stl_root(tmp_path):
    """tmp_path/stl10_binary/ with train/test/unlabeled files; returns (root, {split: (images, file labels)})."""
    rng = np.random.default_rng(99)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    out = {}
    for split, n in STL_SIZES.items():
        images = rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)  # [row, col, channel]
        (folder / f"{split}_X.bin").write_bytes(_stl_bytes(images))
        labels = None
        if split != "unlabeled":
            labels = rng.permutation(np.arange(1, 11, dtype=np.uint8))[:n]
            labels[0] = 10  # the largest label maps to 9
            (folder / f"{split}_y.bin").write_bytes(labels.tobytes())
        out[split] = (images, labels)
    return tmp_path, out


@pytest.mark.parametrize("split", ["train", "test"])
def test_stl10_labeled(stl_root, split):
    root, files = stl_root
    images, labels = files[split]
    d = load_stl10(root, split)
    assert d.name == "stl10"
    assert d.images.shape == (STL_SIZES[split], 96, 96, 3)
    assert d.images.dtype == np.float32
    np.testing.assert_array_equal(d.images, images.astype(np.float32) / np.float32(255))
    assert d.labels.dtype == np.int32
    np.testing.assert_array_equal(d.labels, labels.astype(np.int32) - 1)
    assert d.labels[0] == 9 and d.labels.min() >= 0 and d.labels.max() <= 9
    assert len(d.label_names) == 10


def test_stl10_column_major_pixels(stl_root):
    root, files = stl_root
    raw = (root / "stl10_binary" / "train_X.bin").read_bytes()
    raw = np.frombuffer(raw, np.uint8)
    d = load_stl10(root, "train")
    for i, r, c, ch in [(0, 0, 1, 0), (0, 1, 0, 0), (1, 10, 70, 1), (2, 95, 3, 2), (2, 40, 95, 1)]:
        byte = raw[i * STL_PER_IMAGE + ch * 96 * 96 + c * 96 + r]
        assert d.images[i, r, c, ch] == np.float32(byte) / np.float32(255)
    # Not transposed: row r, column c of the loader is row r, column c of the original image.
    assert not np.array_equal(d.images, np.swapaxes(d.images, 1, 2))


def test_stl10_unlabeled(stl_root):
    root, files = stl_root
    images, _ = files["unlabeled"]
    d = load_stl10(root, "unlabeled")
    np.testing.assert_array_equal(d.images, images / np.float32(255))
    assert d.labels.dtype == np.int32
    np.testing.assert_array_equal(d.labels, np.full(4, -1))


@pytest.mark.parametrize("split", ["train", "unlabeled"])
def test_stl10_max_images(stl_root, split):
    root, files = stl_root
    images, labels = files[split]
    d = load_stl10(root, split, max_images=2)
    assert len(d) == 2 and d.labels.shape == (2,)
    np.testing.assert_array_equal(d.images, images[:2] / np.float32(255))
    if labels is not None:
        np.testing.assert_array_equal(d.labels, labels[:2].astype(np.int32) - 1)
    assert len(load_stl10(root, split, max_images=1000)) == STL_SIZES[split]


def test_stl10_root_forms_and_env(stl_root, no_data_env):
    root, files = stl_root
    images, labels = files["test"]
    expected = images / np.float32(255)
    np.testing.assert_array_equal(load_stl10(root / "stl10_binary", "test").images, expected)
    np.testing.assert_array_equal(load_stl10(str(root), "test").images, expected)
    no_data_env.setenv("STEPWISE_STL10", str(root))
    np.testing.assert_array_equal(load_stl10(split="test").images, expected)
    no_data_env.delenv("STEPWISE_STL10")
    no_data_env.setenv("STEPWISE_DATA", str(root / "stl10_binary"))
    np.testing.assert_array_equal(load_stl10(split="test").labels, labels.astype(np.int32) - 1)
    np.testing.assert_array_equal(load_dataset("stl10", split="test", max_images=1).images, expected[:1])


@pytest.mark.parametrize("delta", [-1, 1, STL_PER_IMAGE // 2])
def test_stl10_truncated_file(stl_root, delta):
    root, files = stl_root
    x_path = root / "stl10_binary" / "train_X.bin"
    raw = x_path.read_bytes()
    x_path.write_bytes(raw[:delta] if delta < 0 else raw + b"\0" * delta)
    with pytest.raises(ValueError, match=str(STL_PER_IMAGE)):
        load_stl10(root, "train")


def test_stl10_too_few_labels(stl_root):
    root, _ = stl_root
    y_path = root / "stl10_binary" / "train_y.bin"
    y_path.write_bytes(y_path.read_bytes()[:1])
    with pytest.raises(ValueError, match="labels"):
        load_stl10(root, "train")


def test_stl10_invalid_split(stl_root):
    with pytest.raises(ValueError, match="split"):
        load_stl10(stl_root[0], "val")


# ------------------------------------------------------------------------------------------------------------
# Missing data: clear errors.


def test_data_not_found_is_file_not_found():
    assert issubclass(DataNotFoundError, FileNotFoundError)


def test_cifar10_missing_folder(tmp_path, no_data_env):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as info:
        load_cifar10(missing, "train")
    msg = str(info.value)
    assert str(missing) in msg
    assert str(missing / "cifar-10-batches-py") in msg
    for name in ("data_batch_1", "data_batch_5"):
        assert name in msg
    with pytest.raises(FileNotFoundError) as info:  # catchable as a plain FileNotFoundError
        load_cifar10(missing, "test")
    assert "test_batch" in str(info.value)


def test_cifar10_missing_one_file(cifar_root):
    root = cifar_root[0]
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError) as info:
        load_cifar10(root, "train")
    msg = str(info.value)
    assert str(root / "cifar-10-batches-py") in msg
    assert "data_batch_3" in msg
    load_cifar10(root, "test")  # the test split is still complete


def test_stl10_missing(tmp_path, no_data_env):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as info:
        load_stl10(missing, "train")
    msg = str(info.value)
    assert str(missing) in msg and str(missing / "stl10_binary") in msg
    assert "train_X.bin" in msg and "train_y.bin" in msg
    with pytest.raises(DataNotFoundError, match="unlabeled_X.bin"):
        load_stl10(missing, "unlabeled")


def test_stl10_missing_labels_file(stl_root):
    root, _ = stl_root
    (root / "stl10_binary" / "test_y.bin").unlink()
    with pytest.raises(DataNotFoundError, match="test_y.bin"):
        load_stl10(root, "test")
    assert len(load_stl10(root, "train")) == STL_SIZES["train"]


def test_no_root_no_env(no_data_env):
    with pytest.raises(DataNotFoundError) as info:
        load_cifar10(None, "train")
    msg = str(info.value)
    assert "STEPWISE_CIFAR10" in msg and "STEPWISE_DATA" in msg
    assert "cifar-10-batches-py" in msg and "data_batch_1" in msg
    with pytest.raises(DataNotFoundError) as info:
        load_stl10(None, "train")
    msg = str(info.value)
    assert "STEPWISE_STL10" in msg and "STEPWISE_DATA" in msg
    assert "stl10_binary" in msg and "train_X.bin" in msg


def test_env_var_pointing_nowhere(tmp_path, no_data_env):
    bad = tmp_path / "not-here"
    no_data_env.setenv("STEPWISE_CIFAR10", str(bad))
    with pytest.raises(DataNotFoundError) as info:
        load_cifar10(split="test")
    msg = str(info.value)
    assert str(bad) in msg and "STEPWISE_CIFAR10" in msg and "test_batch" in msg


def test_load_dataset_registry():
    assert set(DATASETS) == {"digits", "patches", "cifar10", "stl10"}
    with pytest.raises(ValueError) as info:
        load_dataset("nope")
    msg = str(info.value)
    assert "nope" in msg
    for name in DATASETS:
        assert name in msg
    d = load_dataset("patches", n=11, size=8, seed=2)
    np.testing.assert_array_equal(d.images, load_patches(11, 8, seed=2).images)
    assert load_dataset("digits").images.shape == (1797, 8, 8, 1)
