"""Positive pairs as flat float64 vectors for the linear and two-layer SSL models (theory note esser2023, section 1).

:func:`positive_pairs` gives n pairs (x, x+), shuffled negatives, the clean inputs and supervised targets, centred
and scaled together: ``digits`` (two augmented views of the embedded 8x8 digits) or ``gaussian`` (the note's
synthetic setup). The Grassmann experiment builds its C = E[x x+^T]-type matrices and its networks on them.

:class:`PairData` is the frozen sub-config of the fixed image pairs of the linear family (``linear_bt``,
``kernel_bt``, ``width_sweep``, ``speedup``): which images, how many, the crop, the preprocessing, with its
validation, its loading and its views in one place.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

import jax
import numpy as np

from stepwise._validate import bound_errors, config_value_errors
from stepwise.data.augment import Augmentation, augment_batch, make_pairs
from stepwise.data.datasets import image_crop_errors, image_shape, load_images

__all__ = ["DEFAULT_CROP", "KernelPairData", "PairData", "normalise_views", "positive_pairs"]

#: Default crop side per dataset (``crop=None``), by model family. ``linear``: the linear model's input is the
#: crop itself (m = crop^2 x channels), so crops are as large as the paper's (20 on 32x32 CIFAR-10).
#: ``kernel``: the kernel and network models (``kernel_bt``, ``width_sweep``) work with 2n x 2n kernels whose
#: spectra are dominated by a few modes; smaller crops keep their NTKs cheap.
DEFAULT_CROP: dict[str, dict[str, int]] = {
    "linear": {"patches": 20, "digits": 6, "cifar10": 20, "stl10": 64},
    "kernel": {"patches": 8, "digits": 6, "cifar10": 8, "stl10": 16},
}


@dataclasses.dataclass(frozen=True)
class PairData:
    """Fixed positive pairs: n images, each giving one pair of random crops for the whole run, plus held-out crops.

    Attributes:
      dataset: image source (``digits`` and ``patches`` are embedded; ``cifar10`` / ``stl10`` need ``data_dir`` or
        $STEPWISE_CIFAR10 / $STEPWISE_STL10 / $STEPWISE_DATA).
      n_pairs: number of images, hence positive pairs.
      crop: side of the square random crops; None = the dataset's default (``DEFAULT_CROP[family]``: linear
        patches 20, digits 6, cifar10 20, stl10 64; kernel patches 8, digits 6, cifar10 8, stl10 16).
        m = crop^2 x channels.
      preprocess: ``center`` subtracts the mean over all 2n views from every view; ``none`` keeps [0, 1] pixels.
      n_test: held-out images (different from the training ones), one crop each; 0 = none (not for
        :class:`KernelPairData`, whose held-out Gram check needs >= 2).
      data_dir: folder for cifar10 / stl10.

    The seed of the images and crops is the experiment's own ``seed`` (passed to :meth:`images`).
    """

    #: which row of :data:`DEFAULT_CROP` gives ``crop=None`` its size.
    family: ClassVar[str] = "linear"
    #: whether the family's held-out check is required (n_test >= 2) or optional (n_test = 0 allowed).
    test_required: ClassVar[bool] = False

    dataset: Literal["patches", "digits", "cifar10", "stl10"] = "digits"
    n_pairs: int = 500
    crop: int | None = None
    preprocess: Literal["center", "none"] = "center"
    n_test: int = 500
    data_dir: str | None = None

    def __post_init__(self):
        errors = config_value_errors(self) + bound_errors(self, ("n_pairs", ">= 2"))
        errors += image_crop_errors(self.dataset, self.crop, DEFAULT_CROP[self.family])
        if self.test_required:
            errors += bound_errors(self, ("n_test", ">= 2", ", for the held-out Gram check"))
        elif self.n_test < 0 or self.n_test == 1:
            # One held-out image makes a 1x1 Gram matrix, equal to the prediction's after normalisation whatever
            # was learned (measured: test_gram_rel_error 0.0, a pass that checks nothing).
            errors.append(f"n_test must be 0 (no held-out check) or >= 2 (got {self.n_test})")
        if errors:
            raise ValueError("invalid pair data: " + "; ".join(errors))

    @property
    def crop_size(self) -> int:
        return DEFAULT_CROP[self.family][self.dataset] if self.crop is None else self.crop

    @property
    def input_dim(self) -> int:
        """m = crop^2 x channels, the length of a flattened view."""
        return self.crop_size**2 * image_shape(self.dataset)[2]

    def images(self, seed: int) -> np.ndarray:
        """``n_pairs + n_test`` images (training first), seeded; raises the loader's errors (missing folder, too
        few images) before any compute."""
        return load_images(self.dataset, self.n_pairs + self.n_test, seed=seed, data_dir=self.data_dir).images

    def views(self, images: np.ndarray, key: jax.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x1, x2, xt)``: one fixed pair of random crops per training image and one crop per test image,
        flattened, float64, centred by the mean of the 2n training views when ``preprocess="center"``."""
        k_pairs, k_test = jax.random.split(key)
        aug = Augmentation(crop=(self.crop_size, self.crop_size))
        train, test = images[: self.n_pairs], images[self.n_pairs :]
        x1, x2 = make_pairs(aug, k_pairs, train)
        flat = lambda x: np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)  # noqa: E731
        x1, x2 = flat(x1), flat(x2)
        xt = flat(augment_batch(aug, k_test, test)) if self.n_test else np.zeros((0, x1.shape[1]))
        if self.preprocess == "center":
            mu = np.concatenate([x1, x2]).mean(axis=0)
            x1, x2, xt = x1 - mu, x2 - mu, xt - mu
        return x1, x2, xt

    def load(self, seed: int, n_keys: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], list[jax.Array]]:
        """``((x1, x2, xt), keys)``: the views of :meth:`views` and ``n_keys`` more keys for the run, all split
        from ``jax.random.key(seed)`` (the first of ``n_keys + 1`` draws the crops). Input errors (missing folder,
        too few images) are raised before any compute."""
        images = self.images(seed)
        k_data, *keys = jax.random.split(jax.random.key(seed), n_keys + 1)
        return self.views(images, k_data), keys


@dataclasses.dataclass(frozen=True)
class KernelPairData(PairData):
    """:class:`PairData` of the kernel and network models: the ``kernel`` row of :data:`DEFAULT_CROP`, and a held-out
    Gram check they always make (n_test >= 2)."""

    family: ClassVar[str] = "kernel"
    test_required: ClassVar[bool] = True


def normalise_views(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Centre by the mean of the first two arrays (the views) and scale so that E||x||^2 = d for them."""
    both = np.concatenate(arrays[:2])
    mu = both.mean(axis=0)
    scale = math.sqrt(np.mean(np.sum((both - mu) ** 2, axis=1)) / both.shape[1])
    return tuple((a - mu) / scale for a in arrays)


def positive_pairs(dataset: Literal["digits", "gaussian"], n: int, *, seed: int, targets: int, shift: int = 1,
                   noise_std: float = 0.05, gaussian_dim: int = 20, gaussian_decay: float = 0.8
                   ) -> dict[str, np.ndarray]:
    """n positive pairs (x, x+), shuffled negatives, the clean inputs and supervised targets (``targets`` outputs).

    ``digits``: two augmented views (random shift, pixel noise; :mod:`stepwise.data.augment`) of n digits; targets
    are a fixed random orthonormal code of the class in R^targets (unit variance per output). ``gaussian``:
    x ~ N(0, diag(decay^k)), x+ = x + noise_std N(0, I); targets from a fixed random linear teacher. The random
    draws come from ``np.random.default_rng([seed, 0])`` (and the digits' own seed), so a seed fixes everything.

    Returns:
      ``{"x1", "x2", "xneg", "x0": (n, d), "y": (n, targets)}``, float64, normalised by :func:`normalise_views`.
    """
    if dataset not in ("digits", "gaussian"):
        raise ValueError(f"dataset must be 'digits' or 'gaussian' (got {dataset!r})")
    rng = np.random.default_rng([seed, 0])
    if dataset == "digits":
        ds = load_images("digits", n, seed=seed)
        views = Augmentation(shift=shift, noise_std=noise_std)
        x1, x2 = make_pairs(views, jax.random.key(seed), ds.images)
        flat = lambda a: np.asarray(a, np.float64).reshape(n, -1)  # noqa: E731
        x1, x2, x0 = flat(x1), flat(x2), flat(ds.images)
        code = np.linalg.qr(rng.normal(size=(10, 10)))[0][:, :targets]
        y = code[ds.labels] * math.sqrt(10 / targets)
    else:
        std = gaussian_decay ** (0.5 * np.arange(gaussian_dim))
        x0 = rng.normal(size=(n, gaussian_dim)) * std
        x1 = x0
        x2 = x0 + noise_std * rng.normal(size=x0.shape)
        teacher = rng.normal(size=(gaussian_dim, targets))
        y = x0 @ teacher / np.sqrt(np.sum((std[:, None] * teacher) ** 2, axis=0))
    perm = rng.permutation(n)
    x1, x2, x0 = normalise_views(x1, x2, x0)
    return {"x1": x1, "x2": x2, "xneg": x2[perm], "x0": x0, "y": np.asarray(y, np.float64)}
