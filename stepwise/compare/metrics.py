"""Statistics that compare predicted and measured learning dynamics and representations.

Step detection (level crossings, onsets, loss plateaus, rank growth), relative errors, and rotation-invariant
comparisons of subspaces and embeddings (principal angles, projector distances, Procrustes, Gram matrices).
All are NumPy float64 functions of recorded arrays; they never run a model.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.linalg

from stepwise._precision import float64

__all__ = [
    "crossing_times",
    "gram_relative_error",
    "max_rank_increment",
    "onset_times",
    "principal_angles",
    "procrustes_error",
    "projector_distance",
    "random_subspace_similarity",
    "rank_trajectory",
    "relative_errors",
    "subspace_similarity",
    "unit_rank_increments",
    "values_at",
]

Interp = Literal["logit", "log", "linear"]


def _transform(x: np.ndarray, interp: Interp) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if interp == "logit":
            x = np.clip(x, 1e-300, 1 - 1e-16)
            return np.log(x) - np.log1p(-x)
        if interp == "log":
            return np.log(np.maximum(x, 1e-300))
    return x


@float64
def crossing_times(t: np.ndarray, series: np.ndarray, level: float | np.ndarray,
                   interp: Interp = "linear") -> np.ndarray:
    """First time each column of ``series`` reaches ``level``, interpolated between samples.

    Args:
      t: (T,) increasing sample times (steps or effective time).
      series: (T, k) recorded values (e.g. sorted eigenvalues, column j = j-th largest).
      level: scalar or (k,) levels.
      interp: the scale in which to interpolate between the last sample below and the first at or above the
        level: ``"logit"`` (exact for logistic curves, values in (0, 1)), ``"log"`` (exact for exponential
        growth) or ``"linear"``.

    Returns:
      (k,) crossing times; ``nan`` where the level is never reached; ``t[0]`` where it is reached at the start.
    """
    t = np.asarray(t, dtype=np.float64)
    series = np.asarray(series, dtype=np.float64)
    if series.ndim == 1:
        series = series[:, None]
    if series.shape[0] != t.shape[0]:
        raise ValueError(f"series has {series.shape[0]} samples but t has {t.shape[0]}")
    level = np.broadcast_to(np.asarray(level, dtype=np.float64), (series.shape[1],))
    out = np.full(series.shape[1], np.nan)
    for j in range(series.shape[1]):
        above = np.flatnonzero(series[:, j] >= level[j])
        if above.size == 0:
            continue
        i = above[0]
        if i == 0:
            out[j] = t[0]
            continue
        lo, hi, lev = _transform(np.array([series[i - 1, j], series[i, j], level[j]]), interp)
        frac = 1.0 if hi == lo else (lev - lo) / (hi - lo)
        out[j] = t[i - 1] + frac * (t[i] - t[i - 1])
    return out


@float64
def onset_times(t: np.ndarray, eigenvalues: np.ndarray, fraction: float = 0.1, interp: Interp = "log") -> np.ndarray:
    """Onset of each eigenvalue: first crossing of ``fraction`` x the final top eigenvalue (theory note 6.10)."""
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    return crossing_times(t, eigenvalues, fraction * eigenvalues[-1, 0], interp)


@float64
def relative_errors(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """(predicted - measured) / |measured|, elementwise (nan where either is not finite)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    measured = np.asarray(measured, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = (predicted - measured) / np.abs(measured)
    return np.where(np.isfinite(predicted) & np.isfinite(measured), err, np.nan)


@float64
def values_at(t: np.ndarray, series: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Linear interpolation of a 1-D ``series`` sampled at ``t`` to the times ``at`` (e.g. loss at plateau
    midpoints)."""
    return np.interp(np.asarray(at, dtype=np.float64), np.asarray(t, dtype=np.float64),
                     np.asarray(series, dtype=np.float64))


@float64
def rank_trajectory(eigenvalues: np.ndarray, level: float) -> np.ndarray:
    """(T,) number of eigenvalues at or above ``level`` at each sample."""
    return np.sum(np.asarray(eigenvalues) >= level, axis=-1)


@float64
def max_rank_increment(rank: np.ndarray) -> int:
    """Largest increase of the rank between consecutive samples (0 for fewer than two samples)."""
    rank = np.asarray(rank)
    return int(np.max(np.diff(rank))) if rank.size > 1 else 0


@float64
def unit_rank_increments(rank: np.ndarray) -> bool:
    """True when the rank never decreases and never grows by more than one between consecutive samples."""
    steps = np.diff(np.asarray(rank))
    return bool(np.all((steps == 0) | (steps == 1)))


@float64
def principal_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles (radians, decreasing) between the column spans of a (n, p) and b (n, q).

    Uses scipy.linalg.subspace_angles, which switches from cosines to sines for small angles, so angles down to
    ~1e-8 rad are accurate (an arccos of singular values loses everything below ~1e-8 rad^(1/2)).
    """
    return scipy.linalg.subspace_angles(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


def _orth(a: np.ndarray) -> np.ndarray:
    return scipy.linalg.orth(np.asarray(a, dtype=np.float64))


@float64
def projector_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||P_a - P_b||_F between the orthogonal projectors onto the column spans of a and b.

    For equal dimensions this is sqrt(2 sum_i sin^2 theta_i) over the principal angles theta_i.
    """
    qa, qb = _orth(a), _orth(b)
    return float(np.linalg.norm(qa @ qa.T - qb @ qb.T))


@float64
def procrustes_error(x: np.ndarray, y: np.ndarray) -> float:
    """min over orthogonal R of ||x R - y||_F / ||y||_F, for embeddings x, y of shape (n, d).

    Compares two embeddings that are only defined up to a rotation of their d output axes.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"embeddings must have the same shape; got {x.shape} and {y.shape}")
    r, _ = scipy.linalg.orthogonal_procrustes(x, y)
    return float(np.linalg.norm(x @ r - y) / np.linalg.norm(y))


@float64
def gram_relative_error(x: np.ndarray, y: np.ndarray) -> float:
    """||x x^T - y y^T||_F / ||y y^T||_F: rotation-invariant distance of embeddings x, y (n, d) of the same points.

    Computed through the d x d products (||x x^T||_F^2 = ||x^T x||_F^2 etc.), so n can be large; the
    cancellation in that form limits the accuracy to about 1e-7 relative, far below any threshold used here.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"embeddings must be of the same points; got {x.shape[0]} and {y.shape[0]} rows")
    xx, yy, xy = x.T @ x, y.T @ y, x.T @ y
    diff2 = np.sum(xx**2) + np.sum(yy**2) - 2.0 * np.sum(xy**2)
    return float(np.sqrt(max(diff2, 0.0)) / np.linalg.norm(yy))


@float64
def subspace_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """||Q_a^T Q_b||_F^2 / min(p, q) in [0, 1]: the mean squared cosine of the principal angles between the column
    spans of a (n, p) and b (n, q) (1: one span contains the other; 0: orthogonal).

    Rotation-invariant, and blind to the scale of each direction: it compares *which* functions of the n points two
    embeddings span (the learned subspace), not their lengths. For independent uniformly random subspaces its
    expectation is max(p, q) / n (:func:`random_subspace_similarity`).
    """
    qa, qb = _orth(a), _orth(b)
    if qa.shape[1] == 0 or qb.shape[1] == 0:
        raise ValueError(f"both spans must be non-trivial; got ranks {qa.shape[1]} and {qb.shape[1]}")
    return float(np.sum((qa.T @ qb) ** 2) / min(qa.shape[1], qb.shape[1]))


@float64
def random_subspace_similarity(n: int, p: int, q: int | None = None) -> float:
    """Expected :func:`subspace_similarity` of a uniformly random p-dimensional subspace of R^n and any fixed
    q-dimensional one: E ||Q_a^T Q_b||_F^2 = p q / n, so max(p, q) / n (d / n for equal dimensions)."""
    q = p if q is None else q
    if not (1 <= p <= n and 1 <= q <= n):
        raise ValueError(f"need 1 <= p, q <= n; got n = {n}, p = {p}, q = {q}")
    return max(p, q) / n
