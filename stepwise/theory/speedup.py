"""Speeding up the linear Barlow Twins model: step times of two preconditioned variants (Simon et al. 2023, section 5).

Simon et al. propose to speed up SSL by "selectively focusing gradient on small embedding eigendirections"; the
theory note (section 5) derives what that does in the linear model. Everything below is derived here for the model
and loss of :mod:`stepwise.theory.linear` (C = W Gamma W^T, L = ||C - I||_F^2, dL/dW = 4 (C - I) W Gamma) and
checked against numerical gradient descent and an ODE solver in ``tests/test_theory_speedup.py``.

**The family of updates.** With an input-space preconditioner M (m x m, symmetric PSD) and an embedding-space one
K(C) (d x d, a function of C, so it commutes with C):

    dW/dt = -4 K(C) (C - I) W Gamma M                (flow; GD: W <- W - lr * 4 K(C) (C - I) W Gamma M)

``plain``        K = I, M = I: Barlow Twins as it is.
``input``        (a) M = Gamma_r^+ + (I - P_r) / gamma_1: the pseudo-inverse of Gamma on its top-r eigenspace (P_r
                 its projector, r = d by default), and the plain gradient, in the same units, on the rest. This is
                 the note's dW/dt = -4 (C - I) W Gamma Gamma^+ on span(v_1..v_r). The rest of input space keeps its
                 plain rates gamma_k / gamma_1 < 1 (k > r): the full pseudo-inverse would give *every* positive mode
                 the same rate, so small initialisation would no longer select the top-d modes, and would make the
                 negative-gamma directions grow (ds/dt = 4 s (1 - gamma s^2) > 0 for gamma < 0).
``boost``        (b) K(C) = kappa(C), kappa(lambda) = (1 + eps) / (max(lambda, 0) + eps), M = I: a per-mode rescaling
                 of the gradient along each eigendirection u_k of C by the current eigenvalue lambda_k. A mode that
                 has not appeared (lambda << eps) gets (1 + eps) / eps times the plain gradient; once it has appeared
                 (lambda >> eps) its gradient returns to the plain one (kappa(1) = 1). Read the other way round: once
                 a mode has appeared its gradient is scaled down by eps / (lambda + eps), and the learning rate is
                 raised by B = (1 + eps) / eps, which the appeared (stiff) modes could not otherwise tolerate. It
                 needs only C, not Gamma: a loss modification (the note's (C + eps I)^{-1} preconditioner, normalised
                 so that learned modes keep their step size).
``input_boost``  both.

**Aligned coordinates.** From W(0) = U S(0) V_d^T (V_d the top-d eigenvectors of Gamma, U in O(d)), W = U S V_d^T
for all time, because W Gamma M = U S diag(gamma_j mu_j) V_d^T (mu_j the eigenvalue of M on v_j) and
K(C) = U diag(kappa(lambda_j)) U^T are both diagonal in the same frames. With lambda_j = gamma_j s_j^2 and the *mode
rate* g_j = gamma_j mu_j (plain: g_j = gamma_j; input: g_j = 1 for j <= r):

    ds_j/dt = 4 g_j kappa(lambda_j) s_j (1 - lambda_j)  =>  dlambda_j/dt = 8 g_j kappa(lambda_j) lambda_j (1 - lambda_j)
    GD (exact):  lambda_j <- lambda_j (1 + 4 lr g_j kappa(lambda_j) (1 - lambda_j))^2

**Closed-form step times (flow).** Half-rise (or any level l) time from lambda_j(0) = a_j < l < 1:

    kappa = 1:   t_j = (logit l - logit a_j) / (8 g_j)                     (plain: g_j = gamma_j, theory note 2.3;
                                                                             input: g_j = 1, t_j = ln((1-a_j)/a_j) / 8)
    boost:       t_j = [eps (logit l - logit a_j) + ln((1 - a_j)/(1 - l))] / (8 g_j (1 + eps))

The boost integral: t = int_a^l (lambda + eps) dlambda / (8 g (1 + eps) lambda (1 - lambda)), and
(lambda + eps)/(lambda (1 - lambda)) = 1/(1 - lambda) + eps (1/lambda + 1/(1 - lambda)). The logarithm of the
initial scale, ln(1/a), which dominates plain step times from small initialisation, is multiplied by
eps / (1 + eps); the 1/g_j dependence stays (the note: embedding-space preconditioning cannot tell the modes apart
early). The input preconditioner removes the 1/gamma_j instead and keeps ln(1/a). The two compose.

**Stability and the fair comparison.** Near the minimum, the GD map's derivative at lambda = 1 is
1 - 8 lr g_j kappa(1), so GD is stable for lr < 1 / (4 max_j g_j) (kappa(1) = 1 for every variant): 1/(4 gamma_1)
for plain and boost, 1/4 for input and input_boost (rates <= 1). Each variant runs at the same fraction
``lr_scale`` of its own limit, so "faster" means fewer GD steps at the same distance from divergence (in flow time
any variant can be sped up by rescaling time). In the flow limit (lr_scale -> 0) the number of steps to reach the
last step is 4 g_max t_d / lr_scale, so the predicted reduction of the last step time t_d is

    input:        gamma_1 / gamma_d
    boost:        (1 + eps) ln((1 - a_d)/a_d) / [eps ln((1 - a_d)/a_d) + ln(2 (1 - a_d))]
    input_boost:  the product.

At finite lr the exact per-mode GD map (:func:`map_crossing_steps`) gives the prediction; its relative difference
to the flow formula is x/2 to first order, x = 4 lr g_j kappa_max the largest per-step logit rate of the mode.
A boosted mode's growth phase is no longer slow in steps, so x can be of order 1 and the GD map is what to compare
with. The boost also multiplies the early step on *negative*-gamma directions (present from a random
initialisation) by (1 + eps) / eps: they oscillate instead of decaying unless 4 lr |gamma_min| (1 + eps)/eps < 2.

Everything here is NumPy float64.

References:
    J. Simon et al. On the Stepwise Nature of Self-Supervised Learning. ICML 2023 (arXiv 2303.15438), section 5
    of the BAIR blog post (the proposed speed-up); theory note sections 2.2-2.3 and 5.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, get_args

import numpy as np

from stepwise._precision import float64
from stepwise.theory import linear as _linear

__all__ = [
    "VARIANTS",
    "SpeedupPrediction",
    "boost_gain",
    "flow_crossing_times",
    "gd_eigenvalues",
    "input_preconditioner",
    "map_crossing_steps",
    "mode_rates",
    "predict",
    "update_direction",
]

Variant = Literal["plain", "input", "boost", "input_boost"]
#: The update rules, in the order results and figures show them.
VARIANTS: tuple[str, ...] = get_args(Variant)


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def _check_eps(eps: float | None) -> float | None:
    if eps is None:
        return None
    eps = float(eps)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite positive number (or None for no boost); got {eps}")
    return eps


def _uses_boost(variant: str) -> bool:
    return variant in ("boost", "input_boost")


def _uses_input(variant: str) -> bool:
    return variant in ("input", "input_boost")


@float64
def mode_rates(gammas: np.ndarray, variant: str, rank: int | None = None) -> np.ndarray:
    """Rate g_k = gamma_k mu_k of every eigenmode of Gamma under a variant's input preconditioner.

    Args:
      gammas: (m,) eigenvalues of Gamma, decreasing, gamma_1 > 0.
      variant: one of :data:`VARIANTS`.
      rank: r, the number of top modes the input preconditioner equalises (``input``, ``input_boost``); required
        for those, ignored otherwise.

    Returns:
      (m,) rates: gamma_k for ``plain`` / ``boost``; for ``input`` / ``input_boost`` 1 for k <= r and
      gamma_k / gamma_1 for k > r (the plain rate in the preconditioned units).

    Example:
      >>> mode_rates(np.array([2.0, 1.0, 0.5]), "input", rank=2)
      array([1.  , 1.  , 0.25])
    """
    _check_variant(variant)
    g = np.asarray(gammas, dtype=np.float64)
    if g.ndim != 1 or g.size == 0 or not g[0] > 0:
        raise ValueError(f"gammas must be a non-empty decreasing vector with gamma_1 > 0; got {g!r}")
    if not _uses_input(variant):
        return g.copy()
    if rank is None or not 1 <= rank <= g.size or not g[rank - 1] > 0:
        raise ValueError(f"rank must be in [1, {g.size}] with gamma_rank > 0 for variant {variant!r}; got {rank}")
    rates = g / g[0]
    rates[:rank] = 1.0
    return rates


@float64
def input_preconditioner(g: np.ndarray, v: np.ndarray, rank: int) -> np.ndarray:
    """M = Gamma_r^+ + (I - P_r) / gamma_1 from an eigendecomposition of Gamma (g decreasing, v its columns).

    Gamma M = V diag(:func:`mode_rates`(g, "input", rank)) V^T: the top-r modes all get rate 1.

    Returns:
      (m, m) symmetric positive definite matrix.
    """
    g = np.asarray(g, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if not 1 <= rank <= g.size or not g[rank - 1] > 0:
        raise ValueError(f"rank must be in [1, {g.size}] with gamma_rank > 0; got {rank}")
    mu = np.full(g.size, 1.0 / g[0])
    mu[:rank] = 1.0 / g[:rank]
    return (v * mu) @ v.T


@float64
def boost_gain(lam: np.ndarray, eps: float | None) -> np.ndarray:
    """kappa(lambda) = (1 + eps) / (max(lambda, 0) + eps); ones when ``eps`` is None (no boost).

    (1 + eps)/eps for a mode that has not appeared, 1 for a learned one (lambda = 1). Negative eigenvalues of C
    are clipped to 0 so the gain stays positive and bounded.
    """
    lam = np.asarray(lam, dtype=np.float64)
    eps = _check_eps(eps)
    if eps is None:
        return np.ones_like(lam)
    return (1.0 + eps) / (np.maximum(lam, 0.0) + eps)


@float64
def update_direction(w: np.ndarray, gamma: np.ndarray, *, precond: np.ndarray | None = None,
                     eps: float | None = None) -> np.ndarray:
    """The preconditioned Barlow Twins direction 4 K(C) (C - I) W Gamma M (GD: W <- W - lr * this).

    Args:
      w: (d, m) weights; gamma: (m, m) symmetric Gamma.
      precond: (m, m) input preconditioner M (None: identity), e.g. :func:`input_preconditioner`.
      eps: the boost's eps (None: K = I).

    Returns:
      (d, m) array; with ``precond=None, eps=None`` it is :func:`stepwise.theory.linear.gradient`.
    """
    w = np.asarray(w, dtype=np.float64)
    gamma = np.asarray(gamma, dtype=np.float64)
    c = w @ gamma @ w.T
    c = 0.5 * (c + c.T)
    lam, u = np.linalg.eigh(c)
    ke = (u * (boost_gain(lam, eps) * (lam - 1.0))) @ u.T  # K(C) (C - I), both diagonal in C's eigenbasis
    wg = w @ gamma
    if precond is not None:
        wg = wg @ np.asarray(precond, dtype=np.float64)
    return 4.0 * ke @ wg


@float64
def flow_crossing_times(rates: np.ndarray, a0: np.ndarray, *, eps: float | None = None,
                        level: float = 0.5) -> np.ndarray:
    """Closed-form gradient-flow time at which an aligned mode's eigenvalue reaches ``level`` (module docstring).

    Args:
      rates: (d,) mode rates g_j (:func:`mode_rates`).
      a0: (d,) initial eigenvalues a_j in (0, 1).
      eps: the boost's eps (None: plain or input preconditioning).
      level: the level l in (0, 1).

    Returns:
      (d,) times (t = lr x step): (logit l - logit a) / (8 g), or with the boost
      [eps (logit l - logit a) + ln((1 - a)/(1 - l))] / (8 g (1 + eps)); 0 where a >= l; inf where g <= 0.

    Example:
      >>> flow_crossing_times(np.array([1.0]), np.array([1 / (1 + np.e ** 8)]))   # logit a = -8
      array([1.])
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1); got {level}")
    eps = _check_eps(eps)
    g = np.asarray(rates, dtype=np.float64)
    a = np.asarray(a0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        span = _logit(level) - _logit(a)
        if eps is None:
            t = span / (8.0 * g)
        else:
            t = (eps * span + np.log1p(-a) - math.log1p(-level)) / (8.0 * g * (1.0 + eps))
    t = np.where(a >= level, 0.0, t)
    return np.where((g > 0) & np.isfinite(a) & (a > 0), t, np.inf)


_map = _linear.aligned_map


@float64
def gd_eigenvalues(rates: np.ndarray, a0: np.ndarray, lr: float, steps: int, *,
                   eps: float | None = None) -> np.ndarray:
    """Aligned embedding eigenvalues under GD by the exact per-mode map (module docstring).

    Returns:
      (steps + 1, d) array; row k is the value after k updates.
    """
    eps = _check_eps(eps)
    x = 4.0 * float(lr) * np.asarray(rates, dtype=np.float64)
    lam = np.array(a0, dtype=np.float64)
    out = np.empty((int(steps) + 1, lam.size))
    out[0] = lam
    for k in range(int(steps)):
        lam = _map(lam, x, eps)
        out[k + 1] = lam
    return out


@float64
def map_crossing_steps(rates: np.ndarray, a0: np.ndarray, lr: float, *, eps: float | None = None,
                       level: float = 0.5) -> np.ndarray:
    """Real-valued number of GD updates after which an aligned mode's eigenvalue first reaches ``level``.

    Exact for the per-mode map lambda <- lambda (1 + 4 lr g kappa(lambda) (1 - lambda))^2: the geometric early
    phase is jumped analytically up to lambda = 1e-8 min(1, eps / (1 + eps)) (relative error ~1e-8), the rest is
    iterated, and the fractional update is interpolated linearly in logit(lambda) between the two iterates that
    bracket the level (the convention of :func:`stepwise.compare.crossing_times` with ``interp="logit"``). With
    ``eps=None`` it equals :func:`stepwise.theory.linear.map_crossing_steps` with gamma = the rates.

    Args:
      rates: (d,) mode rates g_j; a0: (d,) initial eigenvalues; lr: learning rate; eps: the boost (None: none);
      level: in (0, 1).

    Returns:
      (d,) steps; 0 where a_j >= level; inf where g_j <= 0 or a_j is not finite and positive.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1); got {level}")
    return _linear.map_crossing_steps(rates, a0, lr, level, eps=_check_eps(eps))


@dataclasses.dataclass(frozen=True)
class SpeedupPrediction:
    """Predicted GD step times of one variant from aligned initialisation.

    Attributes:
      variant: one of :data:`VARIANTS`.
      rates: (d,) mode rates g_j.
      eps: the boost's eps (None without boost).
      lr: the learning rate, ``lr_scale / (4 max(rates))``.
      lr_limit: the GD stability limit 1 / (4 max_j g_j) (over all m modes).
      amplitudes: (d,) initial eigenvalues a_j.
      mode_steps: (d,) half-rise step of each mode by the exact GD map (mode order).
      step_times: (d,) the j-th half-rise event (``sorted(mode_steps)``).
      widths: (d,) 10%-90% rise width of each mode in steps (exact map).
      flow_steps: (d,) the flow closed form in steps, ``flow_crossing_times / lr`` (mode order).
      x_max: (d,) largest per-step logit rate of each mode, 4 lr g_j kappa(0): the first-order relative difference
        between ``mode_steps`` and ``flow_steps`` is x/2.
      last_step: the last step time t_d = max(mode_steps) in GD steps.
    """

    variant: str
    rates: np.ndarray
    eps: float | None
    lr: float
    lr_limit: float
    amplitudes: np.ndarray
    mode_steps: np.ndarray
    step_times: np.ndarray
    widths: np.ndarray
    flow_steps: np.ndarray
    x_max: np.ndarray
    last_step: float


@float64
def predict(gammas: np.ndarray, a0: np.ndarray, variant: str, *, lr_scale: float, eps: float | None = None,
            rank: int | None = None) -> SpeedupPrediction:
    """Every prediction for one variant, at ``lr_scale`` x its own stability limit, from aligned initialisation.

    Args:
      gammas: (m,) eigenvalues of Gamma, decreasing (all m: the stability limit is over every mode).
      a0: (d,) initial eigenvalues of the top-d modes, lambda_j(0) = gamma_j s_j(0)^2, in (0, 1).
      variant: one of :data:`VARIANTS`.
      lr_scale: learning rate as a fraction of the variant's limit 1 / (4 max_k g_k), in (0, 1).
      eps: the boost's eps (required for ``boost`` / ``input_boost``, ignored otherwise).
      rank: the input preconditioner's rank r (required for ``input`` / ``input_boost``), d <= r.

    Returns:
      A :class:`SpeedupPrediction`.

    Example:
      >>> g, a = np.array([1.0, 0.25, 0.1]), np.full(2, 1e-12)
      >>> p, q = predict(g, a, "plain", lr_scale=0.1), predict(g, a, "input", lr_scale=0.1, rank=2)
      >>> round(p.last_step / q.last_step, 2)   # ~ gamma_1 / gamma_2 = 4 (flow limit)
      3.87
    """
    _check_variant(variant)
    a = np.asarray(a0, dtype=np.float64)
    d = a.size
    if not 0 < lr_scale < 1:
        raise ValueError(f"lr_scale must be in (0, 1), a fraction of the stability limit; got {lr_scale}")
    if not np.all((a > 0) & (a < 1)):
        raise ValueError(f"initial eigenvalues a0 must lie in (0, 1); got {a}")
    if _uses_boost(variant):
        eps = _check_eps(eps)
        if eps is None:
            raise ValueError(f"variant {variant!r} needs eps > 0")
    else:
        eps = None
    if _uses_input(variant) and (rank is None or rank < d):
        raise ValueError(f"variant {variant!r} needs rank >= d = {d}; got {rank}")
    all_rates = mode_rates(gammas, variant, rank)
    if all_rates.size < d or not np.all(all_rates[:d] > 0):
        raise ValueError(f"the top d = {d} modes must have positive gamma; got {np.asarray(gammas)[:d]}")
    limit = 1.0 / (4.0 * float(np.max(all_rates)))
    lr = float(lr_scale) * limit
    rates = all_rates[:d]
    mode = map_crossing_steps(rates, a, lr, eps=eps)
    widths = map_crossing_steps(rates, np.full(d, 0.1), lr, eps=eps, level=0.9)
    kappa0 = 1.0 if eps is None else (1.0 + eps) / eps
    return SpeedupPrediction(
        variant=variant, rates=rates, eps=eps, lr=lr, lr_limit=limit, amplitudes=a, mode_steps=mode,
        step_times=np.sort(mode), widths=widths, flow_steps=flow_crossing_times(rates, a, eps=eps) / lr,
        x_max=4.0 * lr * rates * kappa0, last_step=float(np.max(mode)),
    )


def _logit(p):
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)
