"""Positive pairs as flat float64 vectors for the linear and two-layer SSL models (theory note esser2023, section 1).

:func:`positive_pairs` gives n pairs (x, x+), shuffled negatives, the clean inputs and supervised targets, centred
and scaled together: ``digits`` (two augmented views of the embedded 8x8 digits) or ``gaussian`` (the note's
synthetic setup). The Grassmann experiment builds its C = E[x x+^T]-type matrices and its networks on them.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import numpy as np

from stepwise.data.augment import Augmentation, make_pairs
from stepwise.data.datasets import load_images

__all__ = ["normalise_views", "positive_pairs"]


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
