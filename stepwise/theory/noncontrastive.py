"""Linear-model theory of non-contrastive SSL: BYOL and SimSiam with a predictor (Tian, Chen & Ganguli 2021).

Model and loss (theory note tian2021, section 1; the normalisation every constant below depends on):

    online W (n2, n1), predictor W_p (n2, n2), target W_a (n2, n1); views x1, x2 of the same x
    J(W, W_p) = 1/2 E || W_p W x1 - StopGrad(W_a x2) ||^2                                   (Eqn 1)
    X = E[xbar xbar^T] (augmentation-averaged data),  X' = E_x[V[x'|x]] (augmentation covariance)
    E[x1 x1^T] = E[x2 x2^T] = X + X',  E[x1 x2^T] = X

Gradient flow (Lemma 1, Eqns 2-4; the learning rate is the time step, so it does not appear):

    dW_p/dt = alpha_p (-W_p W (X+X') + W_a X) W^T - eta_p W_p
    dW/dt   =          W_p^T (-W_p W (X+X') + W_a X) - eta W
    dW_a/dt = beta (W - W_a)

The target (``Hyper.method``): ``"byol"`` is the EMA above; ``"simsiam"`` sets W_a = W (no Eqn 4);
``"fixed_tau"`` sets W_a = tau W with a constant tau (Assumption 1 with tau fixed, as in the note's Eqn 16 and
Fig. 8). ``stop_gradient=False`` differentiates the target branch too (Theorem 2); it is defined for ``simsiam`` and
``fixed_tau`` only: an EMA target is a functional of the *past* of W, so in the gradient-flow limit there is no
gradient through it to stop (removing the stop-gradient from BYOL changes nothing in this model).
``symmetric_predictor=True`` symmetrises the predictor's flow (Assumption 3).

Results implemented here (equation numbers of the ar5iv version; see the note for the paper's typos):

- Theorem 1 (Eqn 5): W W^T - alpha_p^-1 W_p^T W_p = e^{-2 eta t} C for any W_a, any X, X'   (:func:`balance`)
- Theorem 2 (Eqn 6): without stop-gradient vec(dW/dt) = -H vec(W), ||W(t)|| <= e^{-lambda0 t} ||W(0)||
  (:func:`theorem2_operator`, :func:`isotropic_decay_rate`)
- Eqn 7 and Theorem 3 (Eqns 8-10): under isotropy (X = I, X' = sigma2 I), W_a = tau W and a symmetric W_p,
  L = [F, W_p] obeys dL/dt = -(L K + K L)  (:func:`symmetric_flow`, :func:`alignment_operator`)
- Eqns 11-13: decoupled per-mode dynamics of (p_j, s_j, tau_j)                  (:func:`mode_field`)
- Eqn 14: s_j - p_j^2 / alpha_p = c_j e^{-2 eta t}, c_j = s_j(0) - p_j(0)^2 / alpha_p   (:func:`mode_invariant`)
- Eqn 16: on the invariant parabola, dp/dt = -(1+sigma2) p (p - p_-)(p - p_+); fixed points, basins and the
  collapse threshold eta_c = tau^2 / (4 (1 + sigma2))   (:func:`fixed_points`, :func:`collapse_threshold`)

Two generalisations, both reducing to the paper at eta_p = eta: a separate predictor weight decay eta_p (the
paper's Table 5 setting) enters Theorem 3 as K = ... + (eta + eta_p / 2) I instead of (3/2) eta I; alpha_p = 0 with
eta_p = 0 holds W_p fixed (Theorem 2's "W_p fixed" setting).

The vector fields and diagnostics are JAX functions (dtype follows the input; eager == jit == vmap); the
integrators run diffrax's adaptive Runge-Kutta solvers in float64 and return NumPy arrays; the fixed points and
thresholds are plain floats.

References:
    Y. Tian, X. Chen, S. Ganguli. Understanding Self-Supervised Learning Dynamics without Contrastive Pairs.
    ICML 2021 (arXiv 2102.06810), Lemma 1, Theorems 1-3, Eqns 5-17.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from stepwise import _compat
from stepwise._precision import float64

__all__ = [
    "Hyper",
    "ModeTrajectory",
    "Modes",
    "Trajectory",
    "Weights",
    "aligned_spectrum",
    "alignment_cosines",
    "alignment_operator",
    "asymmetry",
    "balance",
    "collapse_threshold",
    "commutator",
    "fixed_points",
    "integrate",
    "integrate_modes",
    "isotropic",
    "isotropic_decay_rate",
    "loss",
    "mode_field",
    "mode_invariant",
    "parabola_limit",
    "parabola_velocity",
    "symmetric_flow",
    "theorem2_operator",
    "vector_field",
]

Method = Literal["byol", "simsiam", "fixed_tau"]
Solver = Literal["tsit5", "dopri5", "dopri8"]
_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}


# ----------------------------------------------------------------------------------------------------------------
# Hyperparameters and state.


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


@dataclasses.dataclass(frozen=True)
class Hyper:
    """Hyperparameters of the gradient flow (note section 1, "Gradient flow vs. discrete training").

    Attributes:
      method: the target: ``"byol"`` (EMA W_a, Eqn 4), ``"simsiam"`` (W_a = W) or ``"fixed_tau"`` (W_a = tau W).
      alpha_p: predictor learning-rate ratio (>= 0). 0 together with ``eta_p = 0`` holds W_p fixed.
      beta: EMA rate of the target, in (0, 1] (discrete EMA momentum gamma_a = 1 - lr * beta; used by ``byol``).
      eta: weight decay of the online network W (>= 0).
      eta_p: weight decay of the predictor; None means ``eta`` (the paper's setting).
      sigma2: isotropic augmentation variance (X' = sigma2 I), used by the per-mode and Eqn 7 functions; the
        matrix model takes X and X' explicitly.
      tau: the constant target/online ratio of ``fixed_tau`` (> 0); ``simsiam`` is tau = 1.
      stop_gradient: False differentiates the target branch too (Theorem 2); ``simsiam`` / ``fixed_tau`` only.
      symmetric_predictor: symmetrise the predictor's flow (Assumption 3); W_p must start symmetric.

    Raises:
      ValueError: any value out of range, with what was expected.
    """

    method: Method = "byol"
    alpha_p: float = 1.0
    beta: float = 0.5
    eta: float = 0.0
    eta_p: float | None = None
    sigma2: float = 0.0
    tau: float = 1.0
    stop_gradient: bool = True
    symmetric_predictor: bool = False

    def __post_init__(self):
        errors = []
        if self.method not in ("byol", "simsiam", "fixed_tau"):
            errors.append(f"method must be 'byol', 'simsiam' or 'fixed_tau' (got {self.method!r})")
        if not (_finite(self.alpha_p) and self.alpha_p >= 0):
            errors.append(f"alpha_p must be a finite number >= 0 (got {self.alpha_p})")
        if not (_finite(self.beta) and 0 < self.beta <= 1):
            errors.append(f"beta (EMA rate) must be in (0, 1] (got {self.beta})")
        if not (_finite(self.eta) and self.eta >= 0):
            errors.append(f"eta (weight decay) must be a finite number >= 0 (got {self.eta})")
        if self.eta_p is not None and not (_finite(self.eta_p) and self.eta_p >= 0):
            errors.append(f"eta_p (predictor weight decay) must be None or a finite number >= 0 (got {self.eta_p})")
        if not (_finite(self.sigma2) and self.sigma2 >= 0):
            errors.append(f"sigma2 (augmentation variance) must be a finite number >= 0 (got {self.sigma2})")
        if not (_finite(self.tau) and self.tau > 0):
            errors.append(f"tau must be a finite number > 0 (got {self.tau})")
        if self.method == "simsiam" and self.tau != 1.0:
            errors.append(f"simsiam has W_a = W, i.e. tau = 1 (got tau = {self.tau}); use method='fixed_tau'")
        if self.method == "byol" and not self.stop_gradient:
            errors.append("stop_gradient=False is defined for 'simsiam' and 'fixed_tau' only: the EMA target of "
                          "'byol' depends on the past of W alone, so gradient flow has no gradient through it")
        if self.alpha_p == 0 and self.eta_pred != 0:
            errors.append("alpha_p = 0 freezes the predictor's learning but eta_p would still shrink it; "
                          f"set eta_p = 0 to hold W_p fixed (got eta_p = {self.eta_pred})")
        if errors:
            raise ValueError("invalid non-contrastive hyperparameters: " + "; ".join(errors))

    @property
    def eta_pred(self) -> float:
        """The predictor's weight decay (``eta_p``, or ``eta`` when it is None)."""
        return float(self.eta if self.eta_p is None else self.eta_p)

    def _coefficients(self) -> np.ndarray:
        # Flags travel as numbers so that one compiled solver serves every method (compilation dominates the
        # cost of these small systems).
        flags = [self.method == "byol", self.stop_gradient, self.symmetric_predictor]
        return np.array([self.alpha_p, self.beta, self.eta, self.eta_pred, self.sigma2, self.tau, *flags],
                        dtype=np.float64)


class Weights(NamedTuple):
    """State of the matrix model: online ``w`` (n2, n1), predictor ``wp`` (n2, n2), target ``wa`` (n2, n1)."""

    w: jax.Array
    wp: jax.Array
    wa: jax.Array


class Modes(NamedTuple):
    """State of the decoupled per-mode system: predictor eigenvalue ``p``, eigenvalue ``s`` of F, ratio ``tau``."""

    p: jax.Array
    s: jax.Array
    tau: jax.Array


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """A solved matrix-model trajectory (float64 NumPy).

    Attributes:
      t: (T,) save times. w: (T, n2, n1). wp: (T, n2, n2). wa: (T, n2, n1) the target actually used
        (tau W for ``fixed_tau``, W for ``simsiam``).
      num_steps: accepted solver steps.
    """

    t: np.ndarray
    w: np.ndarray
    wp: np.ndarray
    wa: np.ndarray
    num_steps: int


@dataclasses.dataclass(frozen=True)
class ModeTrajectory:
    """A solved per-mode trajectory (float64 NumPy): t (T,), p, s, tau (T, k); num_steps accepted steps."""

    t: np.ndarray
    p: np.ndarray
    s: np.ndarray
    tau: np.ndarray
    num_steps: int


# ----------------------------------------------------------------------------------------------------------------
# The matrix model (Lemma 1).


@float64
def isotropic(n1: int, sigma2: float) -> tuple[np.ndarray, np.ndarray]:
    """Assumption 2: X = I and X' = sigma2 I (float64, (n1, n1) each)."""
    if not isinstance(n1, (int, np.integer)) or n1 < 1:
        raise ValueError(f"n1 must be a positive integer (got {n1!r})")
    if not (_finite(sigma2) and sigma2 >= 0):
        raise ValueError(f"sigma2 must be a finite number >= 0 (got {sigma2})")
    return np.eye(n1), float(sigma2) * np.eye(n1)


def _target(y: Weights, tau, method: str):
    return y.wa if method == "byol" else tau * y.w


def _matrix_field(y: Weights, x, x_aug, c) -> Weights:
    alpha_p, beta, eta, eta_p, tau = c[0], c[1], c[2], c[3], c[5]
    byol, stop_gradient, symmetric = c[6] > 0.5, c[7] > 0.5, c[8] > 0.5
    w, wp = y.w, y.wp
    target = jnp.where(byol, y.wa, tau * w)
    s = x + x_aug
    g = -wp @ w @ s + target @ x  # (n2, n1): the residual that drives both W and W_p
    m = g @ w.T
    m = jnp.where(symmetric, 0.5 * (m + m.T), m)
    dwp = alpha_p * m - eta_p * wp
    # Without stop-gradient the target branch is differentiated too: -dJ/dW with W_a = tau W not detached.
    dw_free = -(wp.T @ wp @ w @ s - tau * (wp + wp.T) @ w @ x + tau**2 * w @ s)
    dw = jnp.where(stop_gradient, wp.T @ g, dw_free) - eta * w
    dwa = jnp.where(byol, beta * (w - y.wa), tau * dw)
    return Weights(dw, dwp, dwa)


@float64
def vector_field(y: Weights, x: jax.Array, x_aug: jax.Array, hyper: Hyper) -> Weights:
    """Right-hand side of Lemma 1 (Eqns 2-4) for the matrix model.

    Args:
      y: current :class:`Weights` (w (n2, n1), wp (n2, n2), wa (n2, n1)); for ``simsiam`` / ``fixed_tau`` the
        target is tau W and ``wa``'s derivative is tau dW/dt, so ``wa = tau w`` is preserved.
      x: (n1, n1) X, the correlation of augmentation-averaged inputs.
      x_aug: (n1, n1) X', the augmentation covariance averaged over the data.
      hyper: the :class:`Hyper` (static: a Python object, not traced).

    Returns:
      :class:`Weights` of time derivatives.

    References:
      Tian, Chen & Ganguli 2021, Lemma 1 (Eqns 2-4); without stop-gradient, the gradient of Eqn 1 with the target
      branch differentiated (the flow of Theorem 2).
    """
    c = jnp.asarray(hyper._coefficients(), dtype=jnp.result_type(y.w))
    return _matrix_field(y, x, x_aug, c)


@float64
def loss(y: Weights, x: jax.Array, x_aug: jax.Array, hyper: Hyper) -> jax.Array:
    """Population loss J = 1/2 E ||W_p W x1 - sg(W_a x2)||^2 (Eqn 1) in terms of X and X'.

    J = 1/2 tr(W_p W S W^T W_p^T) - tr(W_p W X W_a^T) + 1/2 tr(W_a S W_a^T),  S = X + X'.
    The stop-gradient is applied when ``hyper.stop_gradient``; ``jax.grad`` of this loss is the reference for
    :func:`vector_field` (minus weight decay).
    """
    target = _target(y, hyper.tau, hyper.method)
    if hyper.stop_gradient:
        target = jax.lax.stop_gradient(target)
    s = x + x_aug
    a = y.wp @ y.w
    return 0.5 * jnp.trace(a @ s @ a.T) - jnp.trace(a @ x @ target.T) + 0.5 * jnp.trace(target @ s @ target.T)


@float64
def balance(w: jax.Array, wp: jax.Array, t: jax.Array, *, alpha_p: float, eta: float) -> jax.Array:
    """Theorem 1's conserved matrix C = e^{2 eta t} (W W^T - alpha_p^-1 W_p^T W_p) (Eqn 5).

    Args:
      w: (..., n2, n1) online weights; wp: (..., n2, n2) predictors; t: (...) times (leading axes broadcast).
      alpha_p: predictor learning-rate ratio (> 0). eta: the weight decay shared by W and W_p.

    Returns:
      (..., n2, n2) C(t); Theorem 1 says it equals C(0) for any W_a, X, X' (stop-gradient on, eta_p = eta, no
      predictor symmetrisation). The appendix restatement drops alpha_p^-1; its proof keeps it (note section 7).
    """
    if not (_finite(alpha_p) and alpha_p > 0):
        raise ValueError(f"alpha_p must be > 0 for Theorem 1's invariant (got {alpha_p})")
    if not (_finite(eta) and eta >= 0):
        raise ValueError(f"eta must be a finite number >= 0 (got {eta})")
    d = w @ jnp.swapaxes(w, -1, -2) - jnp.swapaxes(wp, -1, -2) @ wp / alpha_p
    return jnp.exp(2.0 * eta * jnp.asarray(t, dtype=d.dtype))[..., None, None] * d


@float64
def theorem2_operator(wp: jax.Array, x: jax.Array, x_aug: jax.Array, hyper: Hyper) -> jax.Array:
    """The matrix H of Theorem 2 (Eqn 6): without stop-gradient, d vec(W)/dt = -H vec(W).

    H = X' (x) (W_p^T W_p + tau^2 I) + X (x) (W_p - tau I)^T (W_p - tau I) + eta I,  vec column-major
    (vec(W) = W.T.reshape(-1)). The paper's form is tau = 1 (SimSiam); ``fixed_tau`` gives the general tau.
    H is positive semi-definite, and under isotropy lambda_min(H) >= sigma2 tau^2 + eta.

    Args:
      wp: (n2, n2) predictor. x, x_aug: (n1, n1) X and X'. hyper: must have stop_gradient=False.

    Returns:
      (n1 n2, n1 n2) H.
    """
    if hyper.stop_gradient:
        raise ValueError("Theorem 2's operator describes the flow without stop-gradient; pass a Hyper with "
                         "stop_gradient=False (method 'simsiam' or 'fixed_tau')")
    tau = jnp.asarray(hyper.tau, dtype=wp.dtype)
    n2 = wp.shape[0]
    eye = jnp.eye(n2, dtype=wp.dtype)
    wt = wp - tau * eye
    h = jnp.kron(x_aug, wp.T @ wp + tau**2 * eye) + jnp.kron(x, wt.T @ wt)
    return h + hyper.eta * jnp.eye(h.shape[0], dtype=h.dtype)


@float64
def isotropic_decay_rate(sigma2: float, eta: float, tau: float = 1.0) -> float:
    """Lower bound sigma2 tau^2 + eta on lambda_min(H) under isotropy: ||W(t)|| <= e^{-rate t} ||W(0)|| (Thm 2)."""
    if not (_finite(sigma2) and sigma2 >= 0 and _finite(eta) and eta >= 0 and _finite(tau) and tau > 0):
        raise ValueError(f"need sigma2 >= 0, eta >= 0, tau > 0 (got sigma2={sigma2}, eta={eta}, tau={tau})")
    return float(sigma2) * float(tau) ** 2 + float(eta)


# ----------------------------------------------------------------------------------------------------------------
# Isotropic, aligned and per-mode reductions (Eqn 7, Theorem 3, Eqns 11-16).


@float64
def symmetric_flow(wp: jax.Array, f: jax.Array, tau, hyper: Hyper) -> tuple[jax.Array, jax.Array]:
    """Eqn 7: the (W_p, F) flow under isotropy, W_a = tau W and a symmetric predictor, F = W W^T.

    dW_p/dt = -(alpha_p/2)(1+sigma2){W_p, F} + alpha_p tau F - eta_p W_p
    dF/dt   = -(1+sigma2){W_p^2, F} + tau {W_p, F} - 2 eta F,     {A, B} = AB + BA

    Args:
      wp: (n2, n2) symmetric predictor. f: (n2, n2) F. tau: scalar target/online ratio (may vary in time).
      hyper: alpha_p, sigma2, eta, eta_p are used.

    Returns:
      (dW_p/dt, dF/dt), each (n2, n2).
    """
    a, s2 = hyper.alpha_p, hyper.sigma2
    anti = lambda u, v: u @ v + v @ u
    dwp = -(a / 2) * (1 + s2) * anti(wp, f) + a * tau * f - hyper.eta_pred * wp
    df = -(1 + s2) * anti(wp @ wp, f) + tau * anti(wp, f) - 2 * hyper.eta * f
    return dwp, df


@float64
def commutator(f: jax.Array, wp: jax.Array) -> jax.Array:
    """L = [F, W_p] = F W_p - W_p F (Theorem 3); (..., n, n)."""
    return f @ wp - wp @ f


@float64
def alignment_operator(f: jax.Array, wp: jax.Array, tau, hyper: Hyper) -> jax.Array:
    """K of Theorem 3 (Eqn 9): dL/dt = -(L K + K L) for L = [F, W_p] under Eqn 7.

    K = (1+sigma2) [ (alpha_p/2) F + W_p^2 - tau/(1+sigma2) W_p ] + (eta + eta_p/2) I,
    which is the paper's (3/2) eta I at eta_p = eta. If inf_t lambda_min K(t) >= lambda0 > 0 then
    ||L(t)||_F <= e^{-2 lambda0 t} ||L(0)||_F (the appendix's "max_t" is a typo for "inf_t", note section 2).

    Returns:
      (n2, n2) symmetric K.
    """
    s2 = hyper.sigma2
    n = wp.shape[-1]
    eye = jnp.eye(n, dtype=wp.dtype)
    k = (1 + s2) * ((hyper.alpha_p / 2) * f + wp @ wp) - tau * wp
    return k + (hyper.eta + hyper.eta_pred / 2) * eye


def _mode_field(m: Modes, c) -> Modes:
    alpha_p, beta, eta, sigma2, byol = c[0], c[1], c[2], c[4], c[6] > 0.5
    tau = m.tau
    gap = tau - (1 + sigma2) * m.p
    dp = alpha_p * m.s * gap - eta * m.p
    growth = m.p * gap - eta  # = ds/dt / (2 s): finite even as s -> 0
    ds = 2 * m.s * growth
    dtau = jnp.where(byol, beta * (1 - tau) - tau * growth, jnp.zeros_like(tau))
    return Modes(dp, ds, dtau)


@float64
def mode_field(m: Modes, hyper: Hyper) -> Modes:
    """Decoupled per-mode dynamics (Eqns 11-13), valid once W_p and F share eigenvectors (isotropic data).

    dp_j/dt = alpha_p s_j [tau - (1+sigma2) p_j] - eta p_j
    ds_j/dt = 2 p_j s_j [tau - (1+sigma2) p_j] - 2 eta s_j
    s_j dtau_j/dt = beta (1 - tau_j) s_j - tau_j (ds_j/dt) / 2          (``byol``; written without dividing by s_j)

    For ``simsiam`` / ``fixed_tau`` tau is constant (dtau/dt = 0; pass ``tau`` = 1 / ``hyper.tau``). This is
    scalar BYOL with s = w^2, p = w_p, tau = w_a / w. Weight decay is the paper's single eta on both (eta_p must
    equal eta for Eqn 14 to hold; the field uses eta for both).

    Args:
      m: :class:`Modes` with arrays of any common shape (one entry per mode).
      hyper: alpha_p, beta, eta, sigma2 and the method.

    Returns:
      :class:`Modes` of time derivatives.
    """
    if hyper.eta_pred != hyper.eta:
        raise ValueError(f"the per-mode system has one weight decay; got eta = {hyper.eta}, eta_p = {hyper.eta_pred}")
    c = jnp.asarray(hyper._coefficients(), dtype=jnp.result_type(m.p))
    return _mode_field(m, c)


@float64
def mode_invariant(p: jax.Array, s: jax.Array, t: jax.Array, *, alpha_p: float, eta: float) -> jax.Array:
    """Eqn 14's constant c_j = e^{2 eta t} (s_j - p_j^2 / alpha_p): conserved along Eqns 11-12 (any tau(t)).

    The main text prints the opposite sign for c_j; the appendix derivation gives this one (note section 2).
    Shapes broadcast; returns c with the broadcast shape.
    """
    if not (_finite(alpha_p) and alpha_p > 0):
        raise ValueError(f"alpha_p must be > 0 (got {alpha_p})")
    if not (_finite(eta) and eta >= 0):
        raise ValueError(f"eta must be a finite number >= 0 (got {eta})")
    return jnp.exp(2.0 * eta * t) * (s - p**2 / alpha_p)


@float64
def parabola_velocity(p: jax.Array, *, tau: float, sigma2: float, eta: float) -> jax.Array:
    """Eqn 16: dp/dt = p^2 [tau - (1+sigma2) p] - eta p on the invariant parabola s = p^2 / alpha_p, fixed tau.

    Equals -(1+sigma2) p (p - p_-)(p - p_+) (the Fig. 4 caption omits the (1+sigma2) factor).
    """
    return p**2 * (tau - (1 + sigma2) * p) - eta * p


def _check_tau_sigma2(tau, sigma2):
    if not (_finite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0 (got {tau})")
    if not (_finite(sigma2) and sigma2 >= 0):
        raise ValueError(f"sigma2 must be a finite number >= 0 (got {sigma2})")


@float64
def collapse_threshold(tau: float, sigma2: float) -> float:
    """The weight decay eta_c = tau^2 / (4 (1 + sigma2)) above which every mode collapses (Eqn 16, Obs#5).

    >>> collapse_threshold(1.0, 0.5)
    0.16666666666666666
    """
    _check_tau_sigma2(tau, sigma2)
    return float(tau) ** 2 / (4.0 * (1.0 + float(sigma2)))


@float64
def fixed_points(tau: float, sigma2: float, eta: float) -> tuple[float, float]:
    """The non-zero fixed points (p_-, p_+) of Eqn 16 (the per-mode predictor eigenvalue on the parabola).

    p_+- = [tau +- sqrt(tau^2 - 4 eta (1+sigma2))] / (2 (1+sigma2)); p_- is computed as
    2 eta / (tau + sqrt(...)) to avoid cancellation. p_- is unstable (the edge of the collapse basin p < p_-),
    p_+ and 0 are stable; at eta = 0, p_- = 0 (a double root: 0 is a saddle) and p_+ = tau / (1 + sigma2).

    Args:
      tau: target/online ratio (> 0). sigma2: augmentation variance (>= 0). eta: weight decay (>= 0).

    Returns:
      (p_minus, p_plus) as floats.

    Raises:
      ValueError: bad input, or eta above the collapse threshold (the message gives it): then 0 is the only
        fixed point and every mode collapses.

    >>> [round(v, 5) for v in fixed_points(1.0, 0.5, 0.01)]
    [0.01015, 0.65651]
    """
    _check_tau_sigma2(tau, sigma2)
    if not (_finite(eta) and eta >= 0):
        raise ValueError(f"eta (weight decay) must be a finite number >= 0 (got {eta})")
    tau, sigma2, eta = float(tau), float(sigma2), float(eta)
    threshold = collapse_threshold(tau, sigma2)
    if eta > threshold:
        raise ValueError(f"eta = {eta:.6g} is above the collapse threshold tau^2/(4(1+sigma2)) = {threshold:.6g} "
                         f"(tau = {tau:.6g}, sigma2 = {sigma2:.6g}): p = 0 is the only fixed point, every mode "
                         "collapses")
    root = math.sqrt(max(tau**2 - 4.0 * eta * (1.0 + sigma2), 0.0))
    return 2.0 * eta / (tau + root), (tau + root) / (2.0 * (1.0 + sigma2))


@float64
def parabola_limit(p0: float, tau: float, sigma2: float, eta: float) -> float:
    """Where Eqn 16 takes p(0) = p0 as t -> infinity (the basins): 0 if p0 < p_- (or eta above the threshold),
    p_+ if p0 > p_-, p_- if p0 = p_- exactly. At eta = 0 every p0 > 0 goes to p_+ = tau / (1 + sigma2)."""
    _check_tau_sigma2(tau, sigma2)
    if not _finite(p0):
        raise ValueError(f"p0 must be finite (got {p0})")
    if not (_finite(eta) and eta >= 0):
        raise ValueError(f"eta (weight decay) must be a finite number >= 0 (got {eta})")
    if eta > collapse_threshold(tau, sigma2):
        return 0.0
    p_minus, p_plus = fixed_points(tau, sigma2, eta)
    if p0 > p_minus:
        return p_plus
    return p_minus if p0 == p_minus else 0.0


# ----------------------------------------------------------------------------------------------------------------
# Diagnostics of alignment and symmetry (Theorem 3, Fig. 2, Fig. 8).


@float64
def aligned_spectrum(f: jax.Array, wp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Eigenvalues s_j of F (descending) and the predictor's eigenvalues on them, p_j = u_j^T W_p u_j.

    Args:
      f: (n, n) symmetric F. wp: (n, n) predictor (need not be symmetric).

    Returns:
      ((n,) s, (n,) p). Once aligned (Theorem 3), W_p = U diag(p) U^T and these are the per-mode variables.
    """
    s, u = jnp.linalg.eigh(f)
    s, u = s[::-1], u[:, ::-1]
    return s, jnp.einsum("ij,ik,kj->j", u, wp, u)


@float64
def alignment_cosines(f: jax.Array, wp: jax.Array) -> jax.Array:
    """cos_j = u_j^T W_p u_j / ||W_p u_j|| for the eigenvectors u_j of F, descending s_j (Fig. 2, note B1)."""
    _, u = jnp.linalg.eigh(f)
    u = u[:, ::-1]
    wu = wp @ u
    return jnp.sum(u * wu, axis=0) / jnp.linalg.norm(wu, axis=0)


@float64
def asymmetry(wp: jax.Array) -> jax.Array:
    """||W_p - W_p^T||_F / ||W_p||_F (the replication's asymmetry measure, note B2); (...) for (..., n, n)."""
    diff = wp - jnp.swapaxes(wp, -1, -2)
    return jnp.linalg.norm(diff, axis=(-2, -1)) / jnp.linalg.norm(wp, axis=(-2, -1))


# ----------------------------------------------------------------------------------------------------------------
# Integrators (diffrax, float64).


def _check_times(t) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or t.size < 2 or not np.all(np.isfinite(t)):
        raise ValueError(f"t must be a 1-D array of >= 2 finite save times (got shape {t.shape})")
    if np.any(np.diff(t) <= 0):
        raise ValueError("t must be strictly increasing (the first entry is the initial time)")
    return t


def _check_solver(solver, rtol, atol, max_steps):
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {sorted(_SOLVERS)} (got {solver!r})")
    if not (_finite(rtol) and rtol > 0 and _finite(atol) and atol > 0):
        raise ValueError(f"rtol and atol must be finite and > 0 (got rtol={rtol}, atol={atol})")
    if not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer (got {max_steps!r})")


def _check_matrix(name, a, shape) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (got {a.shape})")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite entries (NaN or inf)")
    return a


def _check_psd(name, a) -> np.ndarray:
    scale = max(float(np.max(np.abs(a))), np.finfo(np.float64).tiny)
    if np.max(np.abs(a - a.T)) > 1e-12 * scale:
        raise ValueError(f"{name} must be symmetric (a second-moment matrix); max |A - A^T| = "
                         f"{np.max(np.abs(a - a.T)):.3e}")
    lo = float(np.min(np.linalg.eigvalsh(a)))
    if lo < -1e-12 * scale:
        raise ValueError(f"{name} must be positive semi-definite (a second-moment matrix); lambda_min = {lo:.3e}")
    return a


def _max_norm(tree) -> jax.Array:
    return jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in jax.tree.leaves(tree)]))


def _solve(field, y0, args, ts, *, solver, rtol, atol, max_steps):
    # The max norm (not diffrax's default RMS) holds every component to rtol/atol, and makes padding with copies
    # of a mode exactly neutral (see integrate_modes).
    controller = diffrax.PIDController(rtol=rtol, atol=atol, norm=_max_norm)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), _SOLVERS[solver](), ts[0], ts[-1], None, y0, args=args,
        saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller, max_steps=max_steps, throw=False,
    )
    ok = sol.result == diffrax.RESULTS.successful
    return sol.ys, sol.stats["num_accepted_steps"], ok, sol.result == diffrax.RESULTS.max_steps_reached


def _matrix_term(t, y, args):
    return _matrix_field(y, *args)


def _mode_term(t, m, c):
    return _mode_field(m, c)


@functools.partial(jax.jit, static_argnames=("solver", "rtol", "atol", "max_steps"))
def _solve_matrix(y0, x, x_aug, c, ts, *, solver, rtol, atol, max_steps):
    return _solve(_matrix_term, y0, (x, x_aug, c), ts, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps)


@functools.partial(jax.jit, static_argnames=("solver", "rtol", "atol", "max_steps"))
def _solve_modes(m0, c, ts, *, solver, rtol, atol, max_steps):
    return _solve(_mode_term, m0, c, ts, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps)


def _run(solve, y0, args, ts: np.ndarray, what: str, *, solver, rtol, atol, max_steps):
    """``solve(y0, *args, ts)`` (``_solve_matrix`` or ``_solve_modes``) in float64 on the NumPy state ``y0`` (a
    :class:`Weights` or :class:`Modes`) and arguments: (the saved states, in NumPy, the solver's accepted steps).

    Raises:
      FloatingPointError: the solver did not reach ts[-1] (step budget exhausted or the state blew up).
    """
    with _compat.enable_x64(True):
        ys, n_steps, ok, max_steps_reached = solve(
            type(y0)(*(jnp.asarray(a, dtype=jnp.float64) for a in y0)), *map(jnp.asarray, args), jnp.asarray(ts),
            solver=solver, rtol=float(rtol), atol=float(atol), max_steps=int(max_steps),
        )
        ys = type(y0)(*(np.asarray(a) for a in ys))
    if not bool(ok):
        hint = (f"raise max_steps (now {max_steps}), shorten the time span (t_end = {ts[-1]:.6g}) or loosen rtol/atol"
                if bool(max_steps_reached) else "the step size collapsed or the state became NaN/inf (a blow-up): "
                "check the initial weights and hyperparameters")
        raise FloatingPointError(f"the ODE solver did not reach t = {ts[-1]:.6g} for {what}. Try: {hint}")
    return ys, int(n_steps)


@float64
def integrate(
    y0: Weights,
    x: np.ndarray,
    x_aug: np.ndarray,
    t: np.ndarray,
    hyper: Hyper,
    *,
    solver: Solver = "tsit5",
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 1_000_000,
) -> Trajectory:
    """Integrate Lemma 1's flow (Eqns 2-4) of the matrix model with an adaptive Runge-Kutta solver, float64.

    Args:
      y0: initial :class:`Weights` (w (n2, n1), wp (n2, n2), wa (n2, n1)); for ``simsiam`` / ``fixed_tau``
        ``wa`` is ignored and set to tau w.
      x, x_aug: (n1, n1) X and X' (symmetric positive semi-definite).
      t: (T,) strictly increasing save times; t[0] is the initial time.
      hyper: the :class:`Hyper`.
      solver: ``"tsit5"`` (default), ``"dopri5"`` or ``"dopri8"`` (diffrax). rtol, atol: PID step-size control.
      max_steps: the solver's step budget.

    Returns:
      A :class:`Trajectory` (NumPy float64).

    Raises:
      ValueError: bad shapes, non-finite values, X / X' not symmetric PSD, an asymmetric W_p(0) with
        ``symmetric_predictor``, bad times or solver settings.
      FloatingPointError: the solver did not reach t[-1] (step budget exhausted or the state blew up).
    """
    if not isinstance(hyper, Hyper):
        raise ValueError(f"hyper must be a Hyper (got {type(hyper).__name__})")
    w0 = np.asarray(y0.w, dtype=np.float64)
    if w0.ndim != 2:
        raise ValueError(f"w must be a 2-D (n2, n1) matrix (got shape {w0.shape})")
    n2, n1 = w0.shape
    w0 = _check_matrix("w", w0, (n2, n1))
    wp0 = _check_matrix("wp", y0.wp, (n2, n2))
    wa0 = _check_matrix("wa", y0.wa, (n2, n1)) if hyper.method == "byol" else hyper.tau * w0
    x = _check_psd("x (X)", _check_matrix("x (X)", x, (n1, n1)))
    x_aug = _check_psd("x_aug (X')", _check_matrix("x_aug (X')", x_aug, (n1, n1)))
    if hyper.symmetric_predictor and np.max(np.abs(wp0 - wp0.T)) > 1e-12 * max(np.max(np.abs(wp0)), 1e-300):
        raise ValueError("symmetric_predictor=True needs a symmetric W_p(0) (Assumption 3); got an asymmetric one")
    ts = _check_times(t)
    _check_solver(solver, rtol, atol, max_steps)
    ys, n_steps = _run(_solve_matrix, Weights(w0, wp0, wa0), (x, x_aug, hyper._coefficients()), ts, "the matrix model",
                       solver=solver, rtol=rtol, atol=atol, max_steps=max_steps)
    return Trajectory(t=ts, w=ys.w, wp=ys.wp, wa=ys.wa, num_steps=n_steps)


@float64
def integrate_modes(
    p0: np.ndarray,
    s0: np.ndarray,
    t: np.ndarray,
    hyper: Hyper,
    *,
    tau0: np.ndarray | float | None = None,
    solver: Solver = "tsit5",
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 1_000_000,
) -> ModeTrajectory:
    """Integrate the decoupled per-mode system (Eqns 11-13) for k modes at once, float64.

    Args:
      p0: (k,) initial predictor eigenvalues. s0: (k,) initial eigenvalues of F (>= 0).
      t: (T,) strictly increasing save times. hyper: the :class:`Hyper` (``eta_p`` must equal ``eta``: Eqns 11-12
        have a single weight decay).
      tau0: initial tau_j for ``byol`` (default 0, i.e. W_a(0) = 0 as in the paper's analyses); for ``simsiam`` /
        ``fixed_tau`` tau is ``hyper.tau`` and tau0 must be None or equal to it.
      solver, rtol, atol, max_steps: as in :func:`integrate`.

    Returns:
      A :class:`ModeTrajectory` with (T, k) arrays.
    """
    if not isinstance(hyper, Hyper):
        raise ValueError(f"hyper must be a Hyper (got {type(hyper).__name__})")
    if hyper.eta_pred != hyper.eta:
        raise ValueError(f"the per-mode system has one weight decay; got eta = {hyper.eta}, eta_p = {hyper.eta_pred}")
    p0 = np.atleast_1d(np.asarray(p0, dtype=np.float64))
    s0 = np.atleast_1d(np.asarray(s0, dtype=np.float64))
    if p0.ndim != 1 or p0.shape != s0.shape:
        raise ValueError(f"p0 and s0 must be 1-D arrays of the same length (got {p0.shape} and {s0.shape})")
    if not (np.all(np.isfinite(p0)) and np.all(np.isfinite(s0))):
        raise ValueError("p0 and s0 must be finite")
    if np.any(s0 < 0):
        raise ValueError(f"s0 are eigenvalues of F = W X W^T and must be >= 0 (min {s0.min():.3g})")
    if hyper.method == "byol":
        tau0 = np.broadcast_to(np.asarray(0.0 if tau0 is None else tau0, dtype=np.float64), p0.shape).copy()
        if not np.all(np.isfinite(tau0)):
            raise ValueError("tau0 must be finite")
    else:
        if tau0 is not None and np.any(np.asarray(tau0) != hyper.tau):
            raise ValueError(f"tau is fixed at hyper.tau = {hyper.tau} for method {hyper.method!r}; "
                             f"got tau0 = {tau0}")
        tau0 = np.full(p0.shape, hyper.tau)
    ts = _check_times(t)
    _check_solver(solver, rtol, atol, max_steps)
    # Pad the k modes to a power of two (>= 8) with copies of mode 0, so a handful of compiled solvers serves every
    # k; under the max norm the copies leave the step sizes, hence the numbers, unchanged.
    k = p0.size
    pad = np.zeros(max(8, 1 << (k - 1).bit_length()) - k, dtype=int)
    padded = [np.concatenate([a, a[pad]]) for a in (p0, s0, tau0)]
    ys, n_steps = _run(_solve_modes, Modes(*padded), (hyper._coefficients(),), ts, "the per-mode system",
                       solver=solver, rtol=rtol, atol=atol, max_steps=max_steps)
    return ModeTrajectory(t=ts, p=ys.p[:, :k], s=ys.s[:, :k], tau=ys.tau[:, :k], num_steps=n_steps)
