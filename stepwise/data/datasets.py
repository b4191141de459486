"""Datasets: two embedded in installed packages (no downloads ever) and two read from a local folder.

- ``digits``: scikit-learn's shipped 8x8 handwritten digits, 1797 images, 10 classes.
- ``patches``: RGB crops cut with a fixed seed from the colour photographs that ship inside scikit-image
  (astronaut, cat, coffee, ...) and scikit-learn (china, flower); label = source photograph.
- ``cifar10``: the CIFAR-10 "python version" pickle batches (``cifar-10-batches-py/``).
- ``stl10``: the STL-10 binary files (``stl10_binary/``).

Every loader returns a :class:`Dataset` of float32 images in [0, 1], shape (N, H, W, C), and int32 labels.
The local folders are given by argument or by environment variable (``STEPWISE_CIFAR10``, ``STEPWISE_STL10``,
or a common root ``STEPWISE_DATA``); a missing folder raises :class:`DataNotFoundError` naming every place
that was searched and the files that were expected there. A file that is there but malformed (not a CIFAR-10 batch,
truncated, wrong shapes or dtype, labels out of range) raises :class:`DataFormatError` naming the file, what was
found and what was expected. CIFAR-10's pickles are read with a restricted unpickler that builds only dicts, lists,
bytes, numbers and NumPy arrays: a pickle asking for any other global (``os.system``, ``builtins.exec``,
...) is refused before that global is looked up, so a crafted batch cannot run code.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = [
    "DATASETS",
    "DataFormatError",
    "DataNotFoundError",
    "Dataset",
    "PHOTOGRAPHS",
    "detect_local_dataset",
    "image_crop_errors",
    "image_shape",
    "load_cifar10",
    "load_dataset",
    "load_images",
    "load_digits",
    "load_patches",
    "load_stl10",
]


class DataNotFoundError(FileNotFoundError):
    """A dataset folder or one of its files is missing. The message says where we looked and what we expected."""


class DataFormatError(ValueError):
    """A dataset file is there but is not what its format says. The message names the file, what was found and
    what was expected (a ``ValueError``, so the command line reports it as a usage error, exit status 2)."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images and labels.

    Attributes:
      name: dataset name.
      images: (N, H, W, C) float32 in [0, 1].
      labels: (N,) int32 class index (-1 where unlabeled).
      label_names: name of each class.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]

    def __post_init__(self):
        if self.images.ndim != 4:
            raise ValueError(f"{self.name}: images must be (N, H, W, C); got shape {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.name}: {self.labels.shape[0]} labels for {self.images.shape[0]} images")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, n: int, *, seed: int = 0) -> "Dataset":
        """The first n images of a fixed random permutation (seeded; does not touch global state)."""
        if not 1 <= n <= len(self):
            raise ValueError(f"{self.name} has {len(self)} images; cannot take a subset of {n}")
        idx = np.random.default_rng(seed).permutation(len(self))[:n]
        return dataclasses.replace(self, images=self.images[idx], labels=self.labels[idx])


# ------------------------------------------------------------------------------------------------------------
# Embedded data.


def load_digits() -> Dataset:
    """scikit-learn's 1797 8x8 digits as (1797, 8, 8, 1) images in [0, 1]."""
    from sklearn.datasets import load_digits as _load

    raw = _load()
    images = (raw.images.astype(np.float32) / 16.0)[..., None]
    return Dataset("digits", images, raw.target.astype(np.int32), tuple(str(i) for i in range(10)))


# (package, file name, label). Only files that ship inside the installed wheels: nothing is downloaded.
PHOTOGRAPHS: tuple[tuple[str, str, str], ...] = (
    ("skimage", "astronaut.png", "astronaut"),
    ("skimage", "chelsea.png", "cat"),
    ("skimage", "coffee.png", "coffee"),
    ("skimage", "rocket.jpg", "rocket"),
    ("skimage", "hubble_deep_field.jpg", "hubble"),
    ("skimage", "ihc.png", "immunohistochemistry"),
    ("skimage", "retina.jpg", "retina"),
    ("skimage", "motorcycle_left.png", "motorcycle_left"),
    ("skimage", "motorcycle_right.png", "motorcycle_right"),
    ("sklearn", "china.jpg", "china"),
    ("sklearn", "flower.jpg", "flower"),
)


def _photo_path(package: str, name: str) -> Path:
    if package == "skimage":
        import skimage

        return Path(skimage.__file__).parent / "data" / name
    import sklearn

    return Path(sklearn.__file__).parent / "datasets" / "images" / name


@functools.lru_cache(maxsize=1)
def _photographs() -> tuple[np.ndarray, ...]:
    from skimage.io import imread

    photos = []
    for package, name, _ in PHOTOGRAPHS:
        path = _photo_path(package, name)
        if not path.is_file():
            raise DataNotFoundError(
                f"the photograph {name} that ships with {package} was not found at {path}; "
                f"reinstall {package} (make install)"
            )
        img = imread(path)
        if img.ndim != 3 or img.shape[2] < 3:
            raise ValueError(f"{path} is not a colour image (shape {img.shape})")
        photos.append(np.ascontiguousarray(img[..., :3]).astype(np.float32) / 255.0)
    return tuple(photos)


def load_patches(n: int = 5000, size: int = 32, *, seed: int = 0, min_std: float = 0.01) -> Dataset:
    """n RGB patches of size x size cut at random positions (fixed seed) from the embedded photographs.

    Patch i comes from photograph ``i % 11`` (balanced classes); its position is uniform over the photograph,
    redrawn while the patch is flat (pixel standard deviation below ``min_std``, e.g. the black border of the
    retina image), so patches carry image content and are distinct. With 11 photographs of 0.2 to 2 megapixels
    there are millions of distinct positions.
    """
    if n < 1 or size < 1:
        raise ValueError(f"need n >= 1 and size >= 1; got n={n}, size={size}")
    photos = _photographs()
    smallest = min(min(p.shape[:2]) for p in photos)
    if size > smallest:
        raise ValueError(f"patch size {size} exceeds the smallest photograph side {smallest}")
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % len(photos)).astype(np.int32)
    images = np.empty((n, size, size, 3), dtype=np.float32)
    for i, lab in enumerate(labels):
        photo = photos[lab]
        for _ in range(1000):
            r = rng.integers(0, photo.shape[0] - size + 1)
            c = rng.integers(0, photo.shape[1] - size + 1)
            images[i] = photo[r : r + size, c : c + size]
            if images[i].std() >= min_std:
                break
        else:
            raise ValueError(f"no {size}x{size} patch with pixel std >= {min_std} found in {PHOTOGRAPHS[lab][1]}")
    return Dataset("patches", images, labels, tuple(label for _, _, label in PHOTOGRAPHS))


# ------------------------------------------------------------------------------------------------------------
# Local data sets.

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_STL_DIR = "stl10_binary"
_STL_FILES = {
    "train": ("train_X.bin", "train_y.bin"),
    "test": ("test_X.bin", "test_y.bin"),
    "unlabeled": ("unlabeled_X.bin",),
}
_CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_STL_NAMES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")


def _locate(root: str | os.PathLike | None, env: str, subdir: str, files: tuple[str, ...], what: str) -> Path:
    """Find the folder holding ``files``: ``root`` (or ``$env``, or ``$STEPWISE_DATA``), itself or its ``subdir``."""
    bases: list[tuple[Path, str]] = []
    if root is not None:
        bases.append((Path(root), "the folder you gave"))
    else:
        if os.environ.get(env):
            bases.append((Path(os.environ[env]), f"${env}"))
        if os.environ.get("STEPWISE_DATA"):
            bases.append((Path(os.environ["STEPWISE_DATA"]), "$STEPWISE_DATA"))
    if not bases:
        raise DataNotFoundError(
            f"{what}: no data folder given. Pass one (e.g. --data-dir /path/to/data) or set ${env} or "
            f"$STEPWISE_DATA to a folder that contains {subdir}/ with {', '.join(files)}."
        )
    tried = []
    for base, why in bases:
        for cand in (base, base / subdir):
            missing = [f for f in files if not (cand / f).is_file()]
            if not missing:
                return cand
            tried.append(f"  {cand} ({why}): missing {', '.join(missing)}")
    raise DataNotFoundError(
        f"{what}: the expected files {', '.join(files)} were not found. Looked in:\n" + "\n".join(tried)
    )


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list (raised before the global is imported or called)."""


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles written by Python 3 use it: a ``bytes`` object is stored as
    ``_codecs.encode(text, "latin1")``. Only that call is admitted."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _RefusedGlobal(f"_codecs.encode({type(text).__name__}, {encoding!r}) (admitted only as (str, "
                             "'latin1'), how protocol 2 stores bytes)")
    return text.encode("latin1")


def _numpy_pickle_globals() -> dict[tuple[str, str], object]:
    """The globals a pickled NumPy array refers to, under the module names of NumPy 1.x and 2.x.

    ``ndarray.__reduce__`` gives the array's reconstructor (protocols 0-4) and ``__reduce_ex__(5)`` the
    out-of-band one (protocol 5), so their private module paths are not imported here."""
    probe = np.zeros(1, np.uint8)
    reconstruct, frombuffer = probe.__reduce__()[0], probe.__reduce_ex__(5)[0]
    return {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,  # NumPy 1.x writers (and the real CIFAR-10 files)
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,  # NumPy 2.x writers
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("_codecs", "encode"): _latin1_encode,
    }


class _CifarUnpickler(pickle.Unpickler):
    """Builds only what a CIFAR-10 python batch holds: dicts, lists, bytes/str, numbers and NumPy arrays.

    Plain containers and scalars need no global; every global outside :func:`_numpy_pickle_globals` (``os.system``,
    ``builtins.exec``, ``subprocess.Popen``, ``numpy.load``, ...) is refused in ``find_class``, i.e. before it is
    imported or looked up, so a crafted file cannot run code (see pickle's "Restricting Globals")."""

    _allowed = _numpy_pickle_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


_CIFAR_EXPECTED = ("a CIFAR-10 python batch: a pickled dict with b'data', a uint8 array of shape (N, 3072) (N images "
                   "of 3 x 32 x 32, channel-major), and b'labels', N integers in 0..9")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The (N, 3072) uint8 rows and (N,) int32 labels of one batch file, checked; DataFormatError otherwise."""
    size = path.stat().st_size
    if size == 0:
        raise DataFormatError(f"{path}: found an empty file (0 bytes); expected {_CIFAR_EXPECTED}")
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as err:
        raise DataFormatError(
            f"{path}: refused to unpickle it: it asks for the global {err}, which a CIFAR-10 batch never uses (a "
            f"pickle can run code through such globals, so nothing was run); expected {_CIFAR_EXPECTED}"
        ) from None
    except Exception as err:  # noqa: BLE001 -- a malformed pickle can raise almost anything; all mean "not a batch"
        why = " ".join(str(err).split())[:200]  # one line: some pickle errors span several
        raise DataFormatError(
            f"{path}: found {size} bytes that are not a readable pickle ({type(err).__name__}: {why}; truncated or "
            f"not a CIFAR-10 file?); expected {_CIFAR_EXPECTED}"
        ) from None
    if not isinstance(batch, dict):
        raise DataFormatError(f"{path}: found a pickled {type(batch).__name__}; expected {_CIFAR_EXPECTED}")
    missing = [k for k in (b"data", b"labels") if k not in batch]
    if missing:
        keys = ", ".join(sorted(repr(k) for k in batch)[:8]) or "none"
        raise DataFormatError(f"{path}: found a dict without {' and '.join(map(repr, missing))} (its keys: {keys}); "
                              f"expected {_CIFAR_EXPECTED}")
    x, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(x, np.ndarray):
        raise DataFormatError(f"{path}: found b'data' of type {type(x).__name__}; expected {_CIFAR_EXPECTED}")
    if x.dtype != np.uint8:
        raise DataFormatError(f"{path}: found {x.dtype} pixel data in b'data'; expected uint8 pixels 0..255")
    if x.ndim != 2 or x.shape[1] != 3072 or x.shape[0] == 0:
        raise DataFormatError(f"{path}: found b'data' of shape {x.shape}; expected (N, 3072) with N >= 1 "
                              "(N images of 3 x 32 x 32, channel-major)")
    if not isinstance(labels, (list, np.ndarray)):
        raise DataFormatError(f"{path}: found b'labels' of type {type(labels).__name__}; expected a list of "
                              f"{x.shape[0]} integers in 0..9")
    y = np.asarray(labels)  # bools, floats, strings or ints beyond int64 give a non-integer dtype
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer) or y.shape != (x.shape[0],):
        kind = f"{y.dtype} labels of shape {y.shape}" if y.size else "no labels"
        raise DataFormatError(f"{path}: found {kind} for {x.shape[0]} images; expected {x.shape[0]} integers in 0..9")
    _check_label_range(path, y, 0, len(_CIFAR_NAMES) - 1)
    return x, y.astype(np.int32)


def _check_label_range(path: Path, y: np.ndarray, low: int, high: int) -> None:
    bad = np.flatnonzero((y < low) | (y > high))
    if bad.size:
        values = ", ".join(str(v) for v in np.unique(y[bad])[:5])
        raise DataFormatError(f"{path}: found {bad.size} label(s) outside {low}..{high} (values {values}; first at "
                              f"index {bad[0]}); expected labels {low}..{high}, one per class")


def load_cifar10(root: str | os.PathLike | None = None, split: str = "train") -> Dataset:
    """CIFAR-10 from the python pickle batches (the files of ``cifar-10-python.tar.gz``).

    The pickles are read with a restricted unpickler (dicts, lists, bytes, numbers and NumPy arrays only), so a
    crafted file cannot run code; each batch is checked (uint8 data of shape (N, 3072), N integer labels 0..9).

    Args:
      root: folder containing ``cifar-10-batches-py/`` (or that folder itself). Default: ``$STEPWISE_CIFAR10``,
        then ``$STEPWISE_DATA``.
      split: ``"train"`` (data_batch_1..5, 50000 images) or ``"test"`` (test_batch, 10000 images).

    Returns:
      (N, 32, 32, 3) images in [0, 1] and labels 0..9.

    Raises:
      DataNotFoundError: no folder holds the split's files (the message lists where it looked).
      DataFormatError: a file is not a CIFAR-10 batch: not a pickle, truncated, refused globals, wrong keys,
        shapes or dtype, labels outside 0..9 (the message names the file, what was found and what was expected).
    """
    if split not in _CIFAR_FILES:
        raise ValueError(f"CIFAR-10 split must be one of {sorted(_CIFAR_FILES)}; got {split!r}")
    folder = _locate(root, "STEPWISE_CIFAR10", _CIFAR_DIR, _CIFAR_FILES[split], "CIFAR-10")
    data, labels = zip(*(_read_cifar_batch(folder / name) for name in _CIFAR_FILES[split]))
    x = np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Dataset("cifar10", x.astype(np.float32) / 255.0, np.concatenate(labels), _CIFAR_NAMES)


def load_stl10(root: str | os.PathLike | None = None, split: str = "train", max_images: int | None = None) -> Dataset:
    """STL-10 from its binary files (the contents of ``stl10_binary.tar.gz``).

    Each ``*_X.bin`` holds uint8 images of 3 x 96 x 96 stored column-major (so each channel is transposed);
    ``*_y.bin`` holds one uint8 label 1..10 per image. ``max_images`` reads only the first images (the unlabeled
    split is 100000 images, 2.8 GB).

    Args:
      root: folder containing ``stl10_binary/`` (or that folder itself). Default: ``$STEPWISE_STL10``, then
        ``$STEPWISE_DATA``.
      split: ``"train"``, ``"test"`` or ``"unlabeled"`` (labels -1).

    Raises:
      DataNotFoundError: no folder holds the split's files.
      DataFormatError: an empty or truncated ``*_X.bin`` (not a whole number of images), a ``*_y.bin`` whose size
        is not one byte per image, or labels outside 1..10 (the message names the file).
    """
    if split not in _STL_FILES:
        raise ValueError(f"STL-10 split must be one of {sorted(_STL_FILES)}; got {split!r}")
    folder = _locate(root, "STEPWISE_STL10", _STL_DIR, _STL_FILES[split], "STL-10")
    per_image = 3 * 96 * 96
    x_path = folder / f"{split}_X.bin"
    size = x_path.stat().st_size
    if size == 0 or size % per_image:
        raise DataFormatError(f"{x_path}: found {size} bytes; expected a positive multiple of one 3x96x96 uint8 "
                              f"image ({per_image} bytes): the file is empty, truncated or not STL-10")
    total = size // per_image
    count = total if max_images is None else min(max_images, total)
    x = np.fromfile(x_path, dtype=np.uint8, count=count * per_image).reshape(count, 3, 96, 96)
    x = x.transpose(0, 3, 2, 1)
    if split == "unlabeled":
        y = np.full(count, -1, dtype=np.int32)
    else:
        y_path = folder / f"{split}_y.bin"
        y_size = y_path.stat().st_size
        if y_size != total:
            raise DataFormatError(f"{y_path}: found {y_size} labels (bytes); expected {total}, one uint8 label per "
                                  f"image of {x_path.name}")
        y_all = np.fromfile(y_path, dtype=np.uint8)  # one byte per image: small even for the full split
        _check_label_range(y_path, y_all, 1, len(_STL_NAMES))
        y = y_all[:count].astype(np.int32) - 1
    return Dataset("stl10", x.astype(np.float32) / 255.0, y, _STL_NAMES)


def detect_local_dataset(root: str | os.PathLike) -> str:
    """Which local dataset the folder ``root`` holds: ``"stl10"`` (its training split) or else ``"cifar10"``.

    ``root`` may be the dataset's own folder or a folder containing ``stl10_binary/`` / ``cifar-10-batches-py/``.

    Raises:
      DataNotFoundError: neither is there (the message lists what was looked for, for both).
    """
    messages = []
    for name, env, subdir, files, what in (
        ("stl10", "STEPWISE_STL10", _STL_DIR, _STL_FILES["train"], "STL-10"),
        ("cifar10", "STEPWISE_CIFAR10", _CIFAR_DIR, _CIFAR_FILES["train"], "CIFAR-10"),
    ):
        try:
            _locate(root, env, subdir, files, what)
            return name
        except DataNotFoundError as err:
            messages.append(str(err))
    raise DataNotFoundError(f"{root} holds neither STL-10 nor CIFAR-10:\n" + "\n".join(messages))


def image_shape(name: str, *, patch_size: int = 32) -> tuple[int, int, int]:
    """(H, W, C) of a dataset's images, without loading it (``patch_size``: the side of ``patches``)."""
    shapes = {"digits": (8, 8, 1), "patches": (patch_size, patch_size, 3), "cifar10": (32, 32, 3),
              "stl10": (96, 96, 3)}
    if name not in shapes:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return shapes[name]


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "patches": load_patches,
    "cifar10": load_cifar10,
    "stl10": load_stl10,
}


def load_images(name: str, n: int, *, seed: int = 0, data_dir: str | os.PathLike | None = None,
                patch_size: int = 32) -> Dataset:
    """Exactly n images of a dataset: ``patches`` cuts n new ``patch_size`` x ``patch_size`` RGB patches, the others
    take a seeded random subset.

    Raises:
      ValueError: the dataset has fewer than n images (says how many it has).
      DataNotFoundError: a local dataset's folder is missing.
    """
    if name == "patches":
        return load_patches(n, patch_size, seed=seed)
    ds = load_dataset(name) if name == "digits" else load_dataset(name, root=data_dir)
    if n > len(ds):
        raise ValueError(f"{name} has {len(ds)} images; {n} were asked for, which is too many")
    return ds.subset(n, seed=seed)


def load_dataset(name: str, **kwargs) -> Dataset:
    """Load a dataset by name (see :data:`DATASETS`); keyword arguments go to its loader."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name](**kwargs)


def image_crop_errors(dataset: str, crop: int | None, default_crop: dict[str, int]) -> list[str]:
    """A crop (None: the dataset's default in ``default_crop``) that is < 1 or does not fit in the dataset's images,
    or a dataset without a default crop: at most one message, the first problem found."""
    if crop is not None and crop < 1:
        return [f"crop must be >= 1 (got {crop})"]
    if dataset not in default_crop:
        return [f"dataset must be one of {', '.join(default_crop)} (got {dataset!r})"]
    size = default_crop[dataset] if crop is None else crop
    hw = image_shape(dataset)[:2]
    if size > min(hw):
        return [f"crop {size} does not fit in {dataset} images of {'x'.join(map(str, hw))}"]
    return []
