"""Exact theory of the linearised Barlow Twins model (Simon et al. 2023, sections 2.1-2.7 of the theory note).

Model and loss (the normalisation every constant below depends on):

    f(x) = W x,   W in R^{d x m}
    Gamma = (1/2n) sum_i (x_i x_i'^T + x_i' x_i^T)             (symmetric m x m)
    C = W Gamma W^T,   L(W) = ||C - I_d||_F^2,   dL/dW = 4 (C - I) W Gamma

Gradient descent W <- W - lr * dL/dW is the Euler discretisation of gradient flow with time t = lr * step.

Aligned initialisation W(0) = U S(0) V_d^T keeps that form for all time and every embedding eigenvalue
lambda_j = gamma_j s_j^2 follows, independently of the others,

    flow:  lambda_j(t) = a_j e^{8 gamma_j t} / (1 + a_j (e^{8 gamma_j t} - 1)),    a_j = lambda_j(0)
    GD:    lambda_j <- lambda_j (1 + 4 lr gamma_j (1 - lambda_j))^2          (exact, any stable lr)

From a small random initialisation the same holds with a_j = gamma_j r_jj^2, where r_jj are the diagonal entries
of the R factor of W(0) V_d (columns in mode order): once mode 1 saturates, the decorrelation term removes from
every later mode its component along the modes already learned (Gram-Schmidt).

Everything here is NumPy float64: these are the predictions the checks compare against.

References:
    J. Simon, M. Knutins, L. Ziyin, D. Geisz, A. Fetterman, J. Albrecht. On the Stepwise Nature of
    Self-Supervised Learning. ICML 2023 (arXiv 2303.15438), Fig. 1A/B and the linear-model solution.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np

from stepwise._precision import float64

__all__ = [
    "LinearPrediction",
    "ModePrediction",
    "aligned_eigenvalues",
    "aligned_eigenvalues_gd",
    "aligned_map",
    "cross_correlation",
    "eigenbasis_amplitudes",
    "eigh_desc",
    "final_embedding",
    "final_weights",
    "gradient",
    "initial_amplitudes",
    "loss",
    "map_crossing_steps",
    "flow_crossing_times",
    "predict",
    "predicted_loss",
    "separated_modes",
    "separation_ratios",
    "stability_limit",
    "step_times",
]

AmplitudeMethod = Literal["gram_schmidt", "projection", "isotropic"]

# Below this eigenvalue the GD map is geometric to relative accuracy ~1e-8 (the neglected factor is 1 - lambda),
# so the map is jumped analytically up to here and iterated exactly afterwards.
_GEOMETRIC_REGIME = 1e-8
_MAX_EXACT_ITERATIONS = 50_000_000


# ----------------------------------------------------------------------------------------------------------------
# Inputs, validation and the loss itself.


@float64
def cross_correlation(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Symmetrised feature cross-correlation Gamma of n positive pairs.

    Args:
      x1: (n, m) first views, one row per pair.
      x2: (n, m) second views, row i is the partner of ``x1[i]``.

    Returns:
      (m, m) float64 ``(x1^T x2 + x2^T x1) / (2n)``.
    """
    x1 = np.asarray(x1, dtype=np.float64)
    x2 = np.asarray(x2, dtype=np.float64)
    if x1.ndim != 2 or x1.shape != x2.shape:
        raise ValueError(f"views must both have shape (n, m); got {x1.shape} and {x2.shape}")
    n = x1.shape[0]
    g = x1.T @ x2
    return (g + g.T) / (2.0 * n)


def _validate_gamma(gamma: np.ndarray) -> np.ndarray:
    gamma = np.asarray(gamma, dtype=np.float64)
    if gamma.ndim != 2 or gamma.shape[0] != gamma.shape[1]:
        raise ValueError(f"gamma must be a square (m, m) matrix; got shape {gamma.shape}")
    if not np.all(np.isfinite(gamma)):
        bad = int(np.sum(~np.isfinite(gamma)))
        raise ValueError(f"gamma has {bad} non-finite entries (NaN or inf); the theory needs a finite matrix")
    scale = max(float(np.max(np.abs(gamma))), np.finfo(np.float64).tiny)
    asym = float(np.max(np.abs(gamma - gamma.T)))
    if asym > 1e-10 * scale:
        raise ValueError(
            f"gamma must be symmetric (the symmetrised cross-correlation); max |gamma - gamma^T| = {asym:.3e} "
            f"is above 1e-10 x max|gamma| = {1e-10 * scale:.3e}. Use cross_correlation(x1, x2) to build it."
        )
    return 0.5 * (gamma + gamma.T)


def _validate_w0(w0: np.ndarray, m: int) -> np.ndarray:
    w0 = np.asarray(w0, dtype=np.float64)
    if w0.ndim != 2 or w0.shape[1] != m:
        raise ValueError(f"w0 must have shape (d, m) = (d, {m}) to match gamma ({m} x {m}); got shape {w0.shape}")
    if not 1 <= w0.shape[0] <= m:
        raise ValueError(f"the embedding dimension d = {w0.shape[0]} must be between 1 and m = {m}")
    if not np.all(np.isfinite(w0)):
        raise ValueError("w0 has non-finite entries (NaN or inf)")
    return w0


@float64
def stability_limit(gamma_1: float) -> float:
    """Largest stable GD learning rate near convergence, 1 / (4 gamma_1).

    At the minimum the loss Hessian has largest eigenvalue 8 gamma_1, so GD diverges for lr >= 2 / (8 gamma_1).
    """
    if gamma_1 <= 0:
        return math.inf
    return 1.0 / (4.0 * gamma_1)


def _validate_lr(lr: float, gamma_1: float) -> float:
    lr = float(lr)
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"the learning rate must be a finite positive number; got {lr}")
    limit = stability_limit(gamma_1)
    if lr >= limit:
        raise ValueError(
            f"learning rate {lr:.6g} is beyond the stability limit 1/(4 gamma_1) = {limit:.6g} "
            f"(gamma_1 = {gamma_1:.6g}); gradient descent would oscillate or diverge near convergence. "
            f"Use lr < {limit:.6g}, e.g. {0.5 * limit:.6g}."
        )
    return lr


@float64
def eigh_desc(gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigendecomposition of a symmetric matrix with eigenvalues sorted in decreasing order.

    Returns:
      ``(g, v)``: (m,) eigenvalues g_1 >= g_2 >= ... and (m, m) orthonormal eigenvectors as columns.
    """
    gamma = _validate_gamma(gamma)
    g, v = np.linalg.eigh(gamma)
    return g[::-1].copy(), v[:, ::-1].copy()


@float64
def loss(w: np.ndarray, gamma: np.ndarray) -> float:
    """L(W) = ||W Gamma W^T - I||_F^2."""
    c = w @ gamma @ w.T
    return float(np.sum((c - np.eye(c.shape[0])) ** 2))


@float64
def gradient(w: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """dL/dW = 4 (C - I) W Gamma for symmetric Gamma."""
    c = w @ gamma @ w.T
    return 4.0 * (c - np.eye(c.shape[0])) @ w @ gamma


# ----------------------------------------------------------------------------------------------------------------
# Trajectories.


@float64
def aligned_eigenvalues(gammas: np.ndarray, a0: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Gradient-flow embedding eigenvalues from aligned initialisation (exact logistic curves).

    Args:
      gammas: (d,) eigenvalues gamma_j of Gamma for the learned modes (positive).
      a0: (d,) initial embedding eigenvalues a_j = gamma_j s_j(0)^2.
      t: (T,) effective times t = lr * step.

    Returns:
      (T, d) lambda_j(t) = a_j e^{8 gamma_j t} / (1 + a_j (e^{8 gamma_j t} - 1)), evaluated as a logistic of
      logit(a_j) + 8 gamma_j t so that it neither overflows nor underflows.
    """
    gammas = np.asarray(gammas, dtype=np.float64)
    a0 = np.asarray(a0, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    logit = np.log(a0) - np.log1p(-a0) + 8.0 * gammas[None, :] * t[:, None]
    return _expit(logit)


@float64
def aligned_eigenvalues_gd(gammas: np.ndarray, a0: np.ndarray, lr: float, steps: int) -> np.ndarray:
    """Embedding eigenvalues under gradient descent from aligned initialisation, by the exact per-mode map.

    lambda_j <- lambda_j (1 + 4 lr gamma_j (1 - lambda_j))^2.

    Returns:
      (steps + 1, d) array; row k is the value after k updates.
    """
    gammas = np.asarray(gammas, dtype=np.float64)
    lam = np.array(a0, dtype=np.float64)
    out = np.empty((steps + 1, lam.size))
    out[0] = lam
    g = 4.0 * lr * gammas
    for k in range(steps):
        lam = lam * (1.0 + g * (1.0 - lam)) ** 2
        out[k + 1] = lam
    return out


@float64
def predicted_loss(eigenvalues: np.ndarray, d: int | None = None) -> np.ndarray:
    """Loss sum_j (1 - lambda_j)^2 of an aligned state with embedding eigenvalues ``eigenvalues`` (..., k).

    If ``d`` > k, the d - k modes that are never learned contribute 1 each.
    """
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    extra = 0 if d is None else d - eigenvalues.shape[-1]
    return np.sum((1.0 - eigenvalues) ** 2, axis=-1) + extra


# ----------------------------------------------------------------------------------------------------------------
# Initial amplitudes and step times.


@float64
def initial_amplitudes(gamma: np.ndarray, w0: np.ndarray, method: AmplitudeMethod = "gram_schmidt") -> np.ndarray:
    """Effective initial embedding eigenvalue a_j = gamma_j r_j^2 of each of the top-d modes.

    Args:
      gamma: (m, m) symmetric Gamma.
      w0: (d, m) initial weights.
      method: how r_j is obtained from p_j = W(0) v_j:
        ``"gram_schmidt"``: the j-th diagonal entry of R in W(0) V_d = Q R (the refined prediction, section 2.4);
        ``"projection"``: ||p_j|| (ignores the decorrelation between modes; errors up to ~17%);
        ``"isotropic"``: the typical value sqrt((d - j + 1) sigma^2) with sigma^2 the mean square entry of W(0).

    Returns:
      (d,) amplitudes a_j; ``nan`` where gamma_j <= 0 (that mode is never learned).
    """
    gamma = _validate_gamma(gamma)
    w0 = _validate_w0(w0, gamma.shape[0])
    g, v = eigh_desc(gamma)
    return eigenbasis_amplitudes(g, v, w0, method)


@float64
def eigenbasis_amplitudes(
    g: np.ndarray, v: np.ndarray, w0: np.ndarray, method: AmplitudeMethod = "gram_schmidt"
) -> np.ndarray:
    """:func:`initial_amplitudes` from an eigendecomposition already at hand (g decreasing, v its columns)."""
    d = w0.shape[0]
    p = w0 @ v[:, :d]
    if method == "gram_schmidt":
        r2 = np.abs(np.diag(np.linalg.qr(p, mode="r"))) ** 2
    elif method == "projection":
        r2 = np.sum(p**2, axis=0)
    elif method == "isotropic":
        r2 = (d - np.arange(d)) * np.mean(w0**2)
    else:
        raise ValueError(f"unknown amplitude method {method!r}; expected 'gram_schmidt', 'projection' or 'isotropic'")
    gd = g[:d]
    return np.where(gd > 0, gd * r2, np.nan)


@float64
def flow_crossing_times(gammas: np.ndarray, a0: np.ndarray, level: float = 0.5) -> np.ndarray:
    """Gradient-flow time at which an aligned mode's eigenvalue first reaches ``level``.

    t_j = (logit(level) - logit(a_j)) / (8 gamma_j); 0 if a_j >= level; inf if gamma_j <= 0.
    """
    gammas = np.asarray(gammas, dtype=np.float64)
    a0 = np.asarray(a0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (_logit(level) - _logit(a0)) / (8.0 * gammas)
    t = np.where(a0 >= level, 0.0, t)
    return np.where((gammas > 0) & np.isfinite(a0), t, np.inf)


@float64
def map_crossing_steps(gammas: np.ndarray, a0: np.ndarray, lr: float, level: float = 0.5, *,
                       eps: float | None = None) -> np.ndarray:
    """Real-valued number of GD updates after which an aligned mode's eigenvalue first reaches ``level``.

    Exact for the per-mode map lambda <- lambda (1 + 4 lr gamma kappa(lambda) (1 - lambda))^2, with kappa = 1 for
    plain Barlow Twins and kappa = (1 + eps)/(max(lambda, 0) + eps) for the boosted gradient of
    :mod:`stepwise.theory.speedup` (``eps``): the geometric early phase is jumped analytically up to lambda = 1e-8
    min(1, eps / (1 + eps)) (relative error ~1e-8), the rest is iterated, and the fractional update is interpolated
    linearly in logit(lambda) between the two iterates that bracket the level (the same convention
    :func:`stepwise.compare.crossing_times` uses on measured curves).

    Args:
      gammas: (d,) mode eigenvalues (the mode rates).
      a0: (d,) initial eigenvalues a_j.
      lr: learning rate.
      level: the level in (0, 1).
      eps: the boost's epsilon (> 0), or None for the plain map.

    Returns:
      (d,) steps; 0 where a_j >= level; inf where gamma_j <= 0 or a_j is not finite and positive.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1); got {level}")
    gammas = np.asarray(gammas, dtype=np.float64)
    a0 = np.asarray(a0, dtype=np.float64)
    out = np.full(gammas.shape, np.inf)
    live = (gammas > 0) & np.isfinite(a0) & (a0 > 0)
    out[live & (a0 >= level)] = 0.0
    todo = np.flatnonzero(live & (a0 < level))
    if todo.size == 0:
        return out
    g = 4.0 * float(lr) * gammas[todo]
    kappa0 = 1.0 if eps is None else (1.0 + eps) / eps
    growth = 2.0 * np.log1p(g * kappa0)  # d(log lambda)/d(step) while lambda << min(1, eps)
    lam = a0[todo].copy()
    jump_to = min(_GEOMETRIC_REGIME * (1.0 if eps is None else min(1.0, eps / (1.0 + eps))), level)
    k0 = np.where(lam < jump_to, np.floor(np.log(jump_to / lam) / growth), 0.0)
    lam = lam * np.exp(k0 * growth)
    steps = k0.copy()
    frac = np.full(todo.size, np.nan)
    prev = lam.copy()
    active = np.ones(todo.size, dtype=bool)
    for _ in range(_MAX_EXACT_ITERATIONS):
        if not active.any():
            break
        prev[active] = lam[active]
        lam[active] = aligned_map(lam[active], g[active], eps)
        crossed = active & (lam >= level)
        if crossed.any():
            lo, hi = _logit(prev[crossed]), _logit(np.minimum(lam[crossed], 1 - 1e-16))
            frac[crossed] = (_logit(level) - lo) / (hi - lo)
            active &= ~crossed
        steps[active] += 1.0
    else:  # pragma: no cover - needs lr * gamma ~ 1e-8
        raise ValueError("step-time iteration did not converge; the learning rate is too small for this gamma")
    out[todo] = steps + frac
    return out


@float64
def aligned_map(lam: np.ndarray, x: np.ndarray, eps: float | None = None) -> np.ndarray:
    """One exact GD step of aligned eigenvalues: lambda (1 + x kappa(lambda) (1 - lambda))^2 with x = 4 lr gamma
    and kappa = 1 (plain) or (1 + eps)/(max(lambda, 0) + eps) (the boost of :mod:`stepwise.theory.speedup`)."""
    kappa = 1.0 if eps is None else (1.0 + eps) / (np.maximum(lam, 0.0) + eps)
    return lam * (1.0 + x * kappa * (1.0 - lam)) ** 2


@float64
def step_times(gamma: np.ndarray, w0: np.ndarray, lr: float) -> np.ndarray:
    """Predicted GD step times of the linear Barlow Twins model from an initialisation ``w0``.

    For full-batch gradient descent W <- W - lr * dL/dW on L = ||W gamma W^T - I||_F^2, returns the predicted
    number of updates after which the j-th largest eigenvalue of C = W gamma W^T first reaches 1/2
    (real-valued), for j = 1..d.

    The prediction uses the Gram-Schmidt-refined amplitudes a_j (:func:`initial_amplitudes`) and the exact
    finite-learning-rate map of each mode (:func:`map_crossing_steps`); the j-th crossing event is the j-th
    smallest of the per-mode times, so the result is sorted. Modes with gamma_j <= 0 are never learned (inf).

    Args:
      gamma: (m, m) symmetric, finite matrix (e.g. :func:`cross_correlation`).
      w0: (d, m) initial weights, 1 <= d <= m.
      lr: learning rate, 0 < lr < 1/(4 gamma_1).

    Returns:
      (d,) float64 array of step counts, non-decreasing.

    Raises:
      ValueError: non-square, non-symmetric or non-finite ``gamma``; ``w0`` of the wrong shape or non-finite;
        a learning rate that is not positive or is beyond the stability limit 1/(4 gamma_1).

    Example:
      >>> g = np.diag([2.0, 1.0, 0.5]); w0 = 1e-4 * np.eye(2, 3)
      >>> np.round(step_times(g, w0, lr=0.01), 1)
      array([114.7, 234.3])
    """
    return predict(gamma, w0, lr).step_times


@float64
def separated_modes(gammas: np.ndarray, d: int, ratio: float = 0.95) -> np.ndarray:
    """Which of the top-d modes have both neighbours separated: gamma_{j+1}/gamma_j <= ratio on each side.

    Mode d's upper neighbour is gamma_{d+1} when it exists (it competes for the last free direction of W).
    Nearly degenerate modes merge and can swap order, so their step times are not gated (theory note 7.7).
    """
    gammas = np.asarray(gammas, dtype=np.float64)
    ok = np.ones(d, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for j in range(d):
            if gammas[j] <= 0:
                ok[j] = False
                continue
            if j > 0 and not gammas[j] / gammas[j - 1] <= ratio:
                ok[j] = False
            if j + 1 < gammas.size and gammas[j + 1] > 0 and not gammas[j + 1] / gammas[j] <= ratio:
                ok[j] = False
    return ok


@float64
def separation_ratios(times: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Step-separation ratio R_j = (t_{j+1} - t_j) / width_{j+1} for j = 1..d-1 (section 2.7).

    Steps are distinct when R_j >> 1; the loss has a flat plateau between them.
    """
    times = np.asarray(times, dtype=np.float64)
    widths = np.asarray(widths, dtype=np.float64)
    return np.diff(times) / widths[1:]


# ----------------------------------------------------------------------------------------------------------------
# Final representation.


@float64
def final_weights(gamma: np.ndarray, d: int, rotation: np.ndarray | None = None) -> np.ndarray:
    """W(inf) = U Lambda_d^{-1/2} V_d^T: the whitened projection onto the top-d eigenvectors of Gamma.

    ``rotation`` is U in O(d) (identity by default); the loss does not determine it.
    """
    g, v = eigh_desc(gamma)
    positive = g > 1e-10 * abs(g[0])  # below this the whitening 1/sqrt(gamma) only amplifies round-off
    if not positive[d - 1]:
        raise ValueError(
            f"only {int(np.sum(positive))} eigenvalues of gamma are positive (above 1e-10 x gamma_1); "
            f"d = {d} modes cannot all be learned"
        )
    w = (v[:, :d] / np.sqrt(g[:d])).T
    return w if rotation is None else np.asarray(rotation) @ w


@float64
def final_embedding(gamma: np.ndarray, d: int, x: np.ndarray) -> np.ndarray:
    """Predicted final embeddings f(x) = Lambda_d^{-1/2} V_d^T x of inputs x (n, m), up to a rotation of d axes."""
    return np.asarray(x, dtype=np.float64) @ final_weights(gamma, d).T


# ----------------------------------------------------------------------------------------------------------------
# Everything at once.


@dataclasses.dataclass(frozen=True)
class ModePrediction:
    """The per-mode step predictions of the exact GD map, shared by this theory and the kernel theory (the kernel
    model is this linear model in feature space: :class:`stepwise.theory.kernel.KernelPrediction`).

    Attributes:
      gammas: eigenvalues of Gamma (of Gamma_phi for the kernel model), decreasing.
      lr: learning rate.
      amplitudes: (d,) Gram-Schmidt a_j per mode (mode order).
      mode_steps: (d,) GD half-rise step of each mode (mode order; inf if never learned).
      step_times: (d,) the j-th half-rise event, i.e. ``sorted(mode_steps)``.
      widths: (d,) 10%-90% rise width of each mode in steps.
    """

    gammas: np.ndarray
    lr: float
    amplitudes: np.ndarray
    mode_steps: np.ndarray
    step_times: np.ndarray
    widths: np.ndarray

    @classmethod
    def from_amplitudes(cls, gammas: np.ndarray, amplitudes: np.ndarray, lr: float, **fields):
        """The prediction of ``cls`` for modes starting at ``amplitudes`` (the GD map's half-rise steps and rise
        widths), with the subclass's own ``fields``."""
        d = amplitudes.size
        mode_steps = map_crossing_steps(gammas[:d], amplitudes, lr, 0.5)
        widths = map_crossing_steps(gammas[:d], np.full(d, 0.1), lr, 0.9)
        widths = np.where(gammas[:d] > 0, widths, np.inf)
        return cls(gammas=gammas, lr=lr, amplitudes=amplitudes, mode_steps=mode_steps, step_times=np.sort(mode_steps),
                   widths=widths, **fields)

    @property
    def d(self) -> int:
        return self.amplitudes.size

    def eigenvalue_curves(self, steps: int) -> np.ndarray:
        """(steps + 1, d) predicted embedding eigenvalues per mode, by the exact GD map."""
        return aligned_eigenvalues_gd(self.gammas[: self.d], np.nan_to_num(self.amplitudes), self.lr, steps)

    def separation(self) -> np.ndarray:
        """(d - 1,) separation ratios (gap / rise width) between consecutive steps, in the order the steps happen."""
        order = np.argsort(self.mode_steps, kind="stable")
        return separation_ratios(self.mode_steps[order], self.widths[order])


@dataclasses.dataclass(frozen=True)
class LinearPrediction(ModePrediction):
    """All predictions of the linear theory for one (Gamma, W(0), lr): those of :class:`ModePrediction` and

    Attributes:
      eigvecs: (m, m) eigenvectors of Gamma (columns), in the order of ``gammas``.
      flow_times: (d,) gradient-flow half-rise times (effective time) of each mode, for reference.
    """

    eigvecs: np.ndarray
    flow_times: np.ndarray

    def loss_curve(self, steps: int) -> np.ndarray:
        """(steps + 1,) predicted loss sum_j (1 - lambda_j)^2 (modes treated as independent)."""
        return predicted_loss(self.eigenvalue_curves(steps))


@float64
def predict(
    gamma: np.ndarray, w0: np.ndarray, lr: float, *, eig: tuple[np.ndarray, np.ndarray] | None = None
) -> LinearPrediction:
    """Compute every linear-theory prediction for GD with learning rate ``lr`` from ``w0`` (see :func:`step_times`).

    ``eig``: the decomposition ``eigh_desc(gamma)`` if the caller already has it (saves an O(m^3) eigh).
    """
    gamma = _validate_gamma(gamma)
    w0 = _validate_w0(w0, gamma.shape[0])
    if eig is None:
        g, v = np.linalg.eigh(gamma)
        g, v = g[::-1].copy(), v[:, ::-1].copy()
    else:
        g, v = eig
    lr = _validate_lr(lr, float(g[0]))
    a = eigenbasis_amplitudes(g, v, w0, "gram_schmidt")
    return LinearPrediction.from_amplitudes(g, a, lr, eigvecs=v, flow_times=flow_crossing_times(g[: a.size], a, 0.5))


def _logit(p):
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


def _expit(z):
    z = np.asarray(z, dtype=np.float64)
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))
