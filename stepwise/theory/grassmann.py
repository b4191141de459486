"""Linear SSL dynamics with and without orthogonality constraints (Esser, Mukherjee & Ghoshdastidar 2023).

Source status (theory note esser2023, section 0): only the abstract of the paper could be read. Labels used below:
[V-abs] = stated in the abstract; [D] = derived in the note and checked numerically, true for the natural model
the abstract describes (the paper's notation and constants may differ); [R?] = our reconstruction of what the
paper most likely contains, not checked against the PDF.

Model and loss (note section 1, [R?] for the normalisation; every constant below depends on it):

    f_W(x) = W^T x,   W in R^{m x h}   (inputs of dimension m, h representation dimensions)
    L_NC(W) = -(1/n) sum_i f(x_i)^T f(x_i+)                       (non-contrastive)
    L_C(W)  = L_NC(W) + (1/n) sum_i f(x_i)^T f(x_i-)              (contrastive)
    both = -tr(W^T C W),  C_NC = (1/2n) sum_i (x_i x_i+^T + x_i+ x_i^T),  C_C = C_NC - (same with x_i-)   [D]

C is symmetric and may be indefinite (contrastive case). With eigenvalues lambda_1 > lambda_2 >= ... >= lambda_m
and eigenvectors u_k:

- Naive gradient flow dW/dt = -grad L = 2 C W:  W(t) = exp(2tC) W(0) [D]. It collapses to rank one, the
  "trivial scalar representation" of the abstract [V-abs]: sigma_2 / sigma_1 of W(t) decays like
  exp(-2 (lambda_1 - lambda_2) t) [D] (:func:`collapse_rate`), and the norm grows like exp(2 lambda_1 t).
- Orthogonality-constrained flow (Riemannian gradient flow on the Grassmannian, the abstract's constrained
  objective [V-abs]; the exact form is [D]):  dW/dt = 2 (I - W W^T) C W. It keeps W^T W = I and its exact
  solution on the Grassmannian is [D]

      P(t) = W(t) W(t)^T = Y (Y^T Y)^{-1} Y^T,   Y = exp(2tC) W(0)      (:func:`projector`)

  (the orthonormal W(t) itself is Y (Y^T Y)^{-1/2} Q(t) with an unknown rotation Q(t): compare projectors or
  principal angles, never raw W). If W(0)^T U_h is non-singular, P(t) -> U_h U_h^T (top-h eigenspace, Ky Fan),
  the loss tends to -sum_{k<=h} lambda_k, and the principal angles decay like exp(-2 (lambda_h - lambda_{h+1}) t)
  [D] (:func:`principal_angle_rate`). "Network-width independent" [V-abs] is read here as [R?]: the same formula
  for every h, with time constants that depend only on the spectrum of C.

Numerics: nothing here forms exp(2tC). With C = V diag(lambda) V^T, Y = V diag(e^{2t lambda}) V^T W(0), and the
span of Y is that of the graded matrix diag(e^{2t (lambda - lambda_1)}) V^T W(0) (rows scaled by factors in (0, 1],
decreasing), whose Householder QR resolves small rows far below eps relative to the large ones (rows sorted by
decreasing size). The factors underflow once 2t (lambda_1 - lambda_k) > -log(tiny) (~708 in float64), which would
erase the small principal angles, so the time is split into k equal stages, each short enough that nothing
underflows, with a QR after each: span(exp(2tC) W0) = span(exp(2(t/k)C) ... exp(2(t/k)C) W0). The tests check the
result against an independent graph-coordinate formula to ~1e-13 absolute for the projector, and principal sines
to ~1e-13 relative down to 1e-60 (t where exp(2tC) itself would overflow by hundreds of orders of magnitude).

The flows, projectors and diagnostics are JAX functions (dtype follows the input; eager == jit == vmap); called
eagerly, float64 inputs give float64 results even when the process has not enabled x64 (:mod:`stepwise._precision`).
Value checks (symmetry, orthonormality, t >= 0) run only on concrete inputs, shape checks always. :func:`integrate`
runs diffrax's adaptive Runge-Kutta solvers (float64) and returns NumPy arrays.

References:
    P. Esser, S. Mukherjee, D. Ghoshdastidar. Representation Learning Dynamics of Self-Supervised Models.
    arXiv 2309.02011 (2023), abstract; theory note /shared/theory/esser2023.md, sections 1-2 and 4.
    K. Fan. On a theorem of Weyl concerning eigenvalues of linear transformations. PNAS 35 (1949).
    M. Cox, N. Higham. Stability of Householder QR factorization for weighted least squares problems (1998):
    row-wise stability of Householder QR with rows sorted by decreasing norm.
"""

from __future__ import annotations

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
    "Eig",
    "Solver",
    "collapse_rate",
    "constrained_field",
    "eigh_desc",
    "integrate",
    "limit_loss",
    "loss",
    "naive_field",
    "naive_flow",
    "naive_singular_ratios",
    "principal_angle_rate",
    "principal_sines",
    "projector",
    "projector_trajectory",
    "riccati_field",
    "ssl_loss",
    "ssl_matrix",
    "top_eigenspace",
]

Solver = Literal["tsit5", "dopri5", "dopri8"]
_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}


class Eig(NamedTuple):
    """Eigendecomposition of a symmetric C, eigenvalues decreasing: C = vectors diag(values) vectors^T."""

    values: jax.Array  # (m,)
    vectors: jax.Array  # (m, m), column k is u_k


# ----------------------------------------------------------------------------------------------------------------
# Validation (shapes are static, so these also run under jit; value checks only on concrete arrays).


def _concrete(a) -> np.ndarray | None:
    try:
        return np.asarray(a)
    except jax.errors.TracerArrayConversionError:
        return None


def _float_dtype(*arrays) -> np.dtype:
    dt = jnp.result_type(*arrays)
    return np.dtype(dt) if jnp.issubdtype(dt, jnp.floating) else np.dtype(jnp.result_type(float))


def _sym_tol(dtype) -> float:
    # float64: the same relative 1e-10 as stepwise.theory.linear; float32: a few hundred ulps of a matrix product.
    return max(1e-10, 1e3 * float(jnp.finfo(dtype).eps))


def _ortho_tol(dtype) -> float:
    # sqrt(eps): 1.5e-8 in float64, 3.5e-4 in float32; a QR or polar factor is orthonormal to ~m eps.
    return math.sqrt(float(jnp.finfo(dtype).eps))


def _check_c(c) -> jax.Array:
    if jnp.ndim(c) != 2 or jnp.shape(c)[0] != jnp.shape(c)[1] or jnp.shape(c)[0] < 1:
        raise ValueError(f"C must be a square (m, m) matrix; got shape {tuple(jnp.shape(c))}")
    c = jnp.asarray(c, _float_dtype(c))
    cc = _concrete(c)
    if cc is not None:
        if not np.all(np.isfinite(cc)):
            raise ValueError(f"C has {int(np.sum(~np.isfinite(cc)))} non-finite entries (NaN or inf)")
        scale = max(float(np.max(np.abs(cc))), float(np.finfo(cc.dtype).tiny))
        asym = float(np.max(np.abs(cc - cc.T)))
        tol = _sym_tol(cc.dtype)
        if asym > tol * scale:
            raise ValueError(
                f"C must be symmetric: max |C - C^T| = {asym:.3e} is above {tol:.0e} x max|C| = {tol * scale:.3e}. "
                "Only the symmetric part of sum x x+^T enters the loss; build C with ssl_matrix() or use (C + C^T)/2."
            )
    return c


def _check_w0(w0, m: int, *, orthonormal: bool = True) -> jax.Array:
    if jnp.ndim(w0) != 2 or jnp.shape(w0)[0] != m:
        raise ValueError(f"w0 must have shape (m, h) = ({m}, h) to match C ({m} x {m}); got shape "
                         f"{tuple(jnp.shape(w0))}")
    h = jnp.shape(w0)[1]
    if not 1 <= h <= m:
        raise ValueError(f"w0 must have 1 <= h <= m = {m} columns; got h = {h}")
    w0 = jnp.asarray(w0, _float_dtype(w0))
    wc = _concrete(w0)
    if wc is not None:
        if not np.all(np.isfinite(wc)):
            raise ValueError("w0 has non-finite entries (NaN or inf)")
        if orthonormal:
            err = float(np.max(np.abs(wc.T @ wc - np.eye(h, dtype=wc.dtype))))
            tol = _ortho_tol(wc.dtype)
            if err > tol:
                raise ValueError(
                    f"w0 must have orthonormal columns (W0^T W0 = I_{h}, a point of the constraint set); "
                    f"max |W0^T W0 - I| = {err:.3e} is above {tol:.1e}. Orthonormalise it first, e.g. with "
                    "jnp.linalg.qr(w0)[0] (the span, all the constrained flow depends on, is unchanged)."
                )
    return w0


def _check_t(t) -> jax.Array:
    if jnp.ndim(t) != 0:
        raise ValueError(f"t must be a scalar time; got shape {tuple(jnp.shape(t))} (use projector_trajectory for "
                         "many times, or jax.vmap)")
    tc = _concrete(t)
    if tc is not None and not (np.isfinite(tc) and tc >= 0):
        raise ValueError(f"t must be a finite time >= 0 (the flow starts at t = 0); got {float(tc)}")
    return jnp.asarray(t)


def _check_ts(ts) -> jax.Array:
    if jnp.ndim(ts) != 1:
        raise ValueError(f"ts must be a 1-D array of times; got shape {tuple(jnp.shape(ts))}")
    tc = _concrete(ts)
    if tc is not None and not (np.all(np.isfinite(tc)) and np.all(tc >= 0)):
        raise ValueError(f"every time in ts must be finite and >= 0; got min {float(np.min(tc)):.6g}")
    return jnp.asarray(ts)


def _check_h(h, m: int) -> int:
    if not isinstance(h, (int, np.integer)) or not 1 <= h <= m:
        raise ValueError(f"h must be an integer in 1..m = 1..{m}; got {h!r}")
    return int(h)


# ----------------------------------------------------------------------------------------------------------------
# The matrix C, the loss and the vector fields.


@float64
def ssl_matrix(x: jax.Array, x_pos: jax.Array, x_neg: jax.Array | None = None) -> jax.Array:
    """C of the linear SSL loss L(W) = -tr(W^T C W) from n pairs (and optional negatives), rows = samples.

    Args:
      x: (n, m) anchors x_i.
      x_pos: (n, m) positives x_i+ (row i pairs with ``x[i]``).
      x_neg: (n, m) negatives x_i- for the contrastive loss, or None for the non-contrastive one.

    Returns:
      (m, m) symmetric ``C_NC = (x^T x+ + x+^T x) / 2n``, minus ``(x^T x- + x-^T x) / 2n`` if ``x_neg`` is given
      ([D] form, [R?] 1/n normalisation: the paper's constants are unverified).
    """
    x, x_pos = jnp.asarray(x), jnp.asarray(x_pos)
    if jnp.ndim(x) != 2 or jnp.shape(x) != jnp.shape(x_pos) or (x_neg is not None and jnp.shape(x_neg) != jnp.shape(x)):
        shapes = [tuple(jnp.shape(a)) for a in (x, x_pos, x_neg) if a is not None]
        raise ValueError(f"x, x_pos (and x_neg) must all have the same shape (n, m); got {shapes}")
    n = jnp.shape(x)[0]
    if n < 1:
        raise ValueError("need at least one pair (n >= 1)")
    g = x.T @ x_pos
    if x_neg is not None:
        g = g - x.T @ jnp.asarray(x_neg)
    return (g + g.T) / (2 * n)


@float64
def ssl_loss(w: jax.Array, x: jax.Array, x_pos: jax.Array, x_neg: jax.Array | None = None) -> jax.Array:
    """The loss written on representations f(x) = W^T x (the form autodiff of a model would see).

    ``-(1/n) sum_i f(x_i).f(x_i+)`` (+ ``(1/n) sum_i f(x_i).f(x_i-)``); equals ``loss(w, ssl_matrix(...))`` [D].
    """
    fx, fp = x @ w, x_pos @ w
    out = -jnp.mean(jnp.sum(fx * fp, axis=-1))
    if x_neg is not None:
        out = out + jnp.mean(jnp.sum(fx * (x_neg @ w), axis=-1))
    return out


@float64
def loss(w: jax.Array, c: jax.Array) -> jax.Array:
    """L(W) = -tr(W^T C W) for (m, h) W and symmetric (m, m) C; its gradient is -2 C W."""
    return -jnp.sum(w * (c @ w))


@float64
def naive_field(w: jax.Array, c: jax.Array) -> jax.Array:
    """Unconstrained gradient flow dW/dt = -grad L = 2 C W [D]."""
    return 2.0 * (c @ w)


@float64
def constrained_field(w: jax.Array, c: jax.Array) -> jax.Array:
    """Riemannian gradient flow on the Grassmannian dW/dt = 2 (I - W W^T) C W [D].

    It is the horizontal projection of -grad L; it equals the Stiefel (Euclidean-metric) gradient here because
    W^T C W is symmetric, and it is Oja's subspace flow.
    """
    cw = c @ w
    return 2.0 * (cw - w @ (w.T @ cw))


@float64
def riccati_field(p: jax.Array, c: jax.Array) -> jax.Array:
    """The same flow for the projector P = W W^T: dP/dt = 2 (C P + P C - 2 P C P) [D]."""
    cp = c @ p
    return 2.0 * (cp + cp.T - 2.0 * p @ cp)


# ----------------------------------------------------------------------------------------------------------------
# Spectrum and predicted rates.


@float64
def eigh_desc(c: jax.Array) -> Eig:
    """Eigendecomposition of symmetric C with eigenvalues in decreasing order."""
    c = _check_c(c)
    vals, vecs = jnp.linalg.eigh(0.5 * (c + c.T))
    return Eig(vals[::-1], vecs[:, ::-1])


@float64
def collapse_rate(c: jax.Array) -> jax.Array:
    """Predicted decay rate of sigma_2(W(t)) / sigma_1(W(t)) under the naive flow: 2 (lambda_1 - lambda_2) [D].

    Raises:
      ValueError: m < 2 (there is no second singular value).
    """
    lam = eigh_desc(c).values
    if lam.shape[0] < 2:
        raise ValueError("the collapse rate needs m >= 2")
    return 2.0 * (lam[0] - lam[1])


@float64
def principal_angle_rate(c: jax.Array, h: int) -> jax.Array:
    """Predicted decay rate of the largest principal angle between span W(t) and the top-h eigenspace [D].

    2 (lambda_h - lambda_{h+1}); for h = m the subspace is the whole space and the rate is +inf.
    """
    lam = eigh_desc(c).values
    h = _check_h(h, lam.shape[0])
    if h == lam.shape[0]:
        return jnp.asarray(jnp.inf, lam.dtype)
    return 2.0 * (lam[h - 1] - lam[h])


@float64
def limit_loss(c: jax.Array, h: int) -> jax.Array:
    """The constrained minimum -sum_{k<=h} lambda_k (Ky Fan), reached when W(0)^T U_h is non-singular [D]."""
    lam = eigh_desc(c).values
    return -jnp.sum(lam[: _check_h(h, lam.shape[0])])


@float64
def top_eigenspace(c: jax.Array, h: int) -> jax.Array:
    """(m, h) orthonormal basis U_h of the top-h eigenspace of C (the constrained optimum's span)."""
    vecs = eigh_desc(c).vectors
    return vecs[:, : _check_h(h, vecs.shape[0])]


# ----------------------------------------------------------------------------------------------------------------
# Closed forms.


def _graded(eig: Eig, w0: jax.Array, t: jax.Array) -> jax.Array:
    """diag(e^{2t(lambda - lambda_1)}) V^T W0: the span of exp(2tC) W0 in the eigenbasis, rows decreasing in size."""
    scale = jnp.exp(2.0 * t * (eig.values - eig.values[0]))
    return scale[:, None] * (eig.vectors.T @ w0)


# Largest exponent spread per stage: 85% of the way to the smallest normal number (600 in float64, 74 in float32).
_STAGE_FRACTION = 0.85


def _basis(eig: Eig, w0: jax.Array, t: jax.Array) -> jax.Array:
    """(m, h) orthonormal basis of span(exp(2tC) W0), in the eigenbasis of C (staged graded QR, module docstring)."""
    lam = eig.values
    limit = _STAGE_FRACTION * -math.log(float(jnp.finfo(lam.dtype).tiny))
    stages = jnp.maximum(1.0, jnp.ceil(2.0 * t * (lam[0] - lam[-1]) / limit))
    scale = jnp.exp(2.0 * (t / stages) * (lam - lam[0]))[:, None]
    q0 = eig.vectors.T @ w0
    return jax.lax.fori_loop(0, stages.astype(jnp.int32), lambda _, q: jnp.linalg.qr(scale * q)[0], q0)


def _projector(eig: Eig, w0: jax.Array, t: jax.Array) -> jax.Array:
    q = eig.vectors @ _basis(eig, w0, t)
    return q @ q.T


@float64
def projector(c: jax.Array, w0: jax.Array, t: jax.Array | float) -> jax.Array:
    """Closed-form projector of the orthogonality-constrained flow, P(t) = Y (Y^T Y)^{-1} Y^T, Y = exp(2tC) W0 [D].

    The exact solution of dW/dt = 2 (I - W W^T) C W on the Grassmannian: P(t) = W(t) W(t)^T for every t >= 0
    (note section 2.2). Computed from the eigendecomposition of C and a QR of the graded matrix
    diag(e^{2t(lambda - lambda_1)}) V^T W0 (module docstring), so it is accurate to round-off for every t.

    Args:
      c: (m, m) symmetric C (possibly indefinite).
      w0: (m, h) initial weights with orthonormal columns (W0^T W0 = I_h).
      t: scalar time t >= 0 (continuous time; gradient descent with step lr reaches t = lr x steps).

    Returns:
      (m, m) symmetric rank-h orthogonal projector.

    Raises:
      ValueError: C not square or not symmetric (relative 1e-10 in float64), w0 of the wrong shape or without
        orthonormal columns (max |W0^T W0 - I| > sqrt(eps)), t not a scalar or t < 0, non-finite entries. Value
        checks run on concrete inputs only (under jit / vmap only the shapes are checked).

    Example:
      >>> c = jnp.diag(jnp.array([2.0, 1.0, 0.0]))
      >>> w0 = jnp.array([[0.6], [0.0], [0.8]])
      >>> p = projector(c, w0, 10.0)   # -> the top eigenvector e_1
      >>> bool(jnp.allclose(p, jnp.diag(jnp.array([1.0, 0.0, 0.0])), atol=1e-6))
      True
    """
    c = _check_c(c)
    w0 = _check_w0(w0, jnp.shape(c)[0])
    t = _check_t(t)
    dtype = jnp.result_type(c, w0)
    return _projector(eigh_desc(c.astype(dtype)), w0.astype(dtype), t.astype(dtype))


@float64
def projector_trajectory(c: jax.Array, w0: jax.Array, ts: jax.Array) -> jax.Array:
    """:func:`projector` at many times with one eigendecomposition: (T,) times -> (T, m, m)."""
    c = _check_c(c)
    w0 = _check_w0(w0, jnp.shape(c)[0])
    ts = _check_ts(ts)
    dtype = jnp.result_type(c, w0)
    eig = eigh_desc(c.astype(dtype))
    return jax.vmap(lambda t: _projector(eig, w0.astype(dtype), t))(ts.astype(dtype))


@float64
def principal_sines(c: jax.Array, w0: jax.Array, t: jax.Array | float) -> jax.Array:
    """Sines of the principal angles between the closed-form span W(t) and the top-h eigenspace, decreasing.

    In the eigenbasis the orthonormal basis Q of span(exp(2tC) W0) has rows h.. equal to U_perp^T Q, whose
    singular values are the sines; the staged graded QR keeps them accurate to ~1e-13 relative far below 1e-8 [D]
    (arccos of cosines would lose everything below ~1e-8).

    Returns:
      (h,) sin(theta_1) >= ... >= sin(theta_h); sin(theta_1) decays like exp(-2 (lambda_h - lambda_{h+1}) t).
    """
    c = _check_c(c)
    w0 = _check_w0(w0, jnp.shape(c)[0])
    t = _check_t(t)
    dtype = jnp.result_type(c, w0)
    h = jnp.shape(w0)[1]
    q = _basis(eigh_desc(c.astype(dtype)), w0.astype(dtype), t.astype(dtype))
    if h == jnp.shape(c)[0]:
        return jnp.zeros((h,), dtype)
    s = jnp.linalg.svd(q[h:], compute_uv=False)
    return jnp.concatenate([s, jnp.zeros((h - s.shape[0],), dtype)]) if s.shape[0] < h else s


@float64
def naive_flow(c: jax.Array, w0: jax.Array, t: jax.Array | float) -> jax.Array:
    """W(t) = exp(2tC) W0, the unconstrained flow [D], via the eigendecomposition (overflows once 2 t lambda_1 >~ 709).

    ``w0`` need not be orthonormal here (any (m, h) start).
    """
    c = _check_c(c)
    w0 = _check_w0(w0, jnp.shape(c)[0], orthonormal=False)
    t = _check_t(t)
    dtype = jnp.result_type(c, w0)
    eig = eigh_desc(c.astype(dtype))
    return eig.vectors @ (jnp.exp(2.0 * t * eig.values)[:, None] * (eig.vectors.T @ w0.astype(dtype)))


@float64
def naive_singular_ratios(c: jax.Array, w0: jax.Array, t: jax.Array | float) -> jax.Array:
    """sigma_k(W(t)) / sigma_1(W(t)) of the naive flow, k = 1..h, computed without overflow (graded form) [D].

    The ratio sigma_2 / sigma_1 decays like exp(-2 (lambda_1 - lambda_2) t): dimension collapse to a rank-one,
    "trivial scalar" representation [V-abs]. Accurate in absolute terms to ~1e-16 (a singular value below
    eps x sigma_1 is round-off; rows below ~1e-300 of sigma_1 underflow to 0).
    """
    c = _check_c(c)
    w0 = _check_w0(w0, jnp.shape(c)[0], orthonormal=False)
    t = _check_t(t)
    dtype = jnp.result_type(c, w0)
    s = jnp.linalg.svd(_graded(eigh_desc(c.astype(dtype)), w0.astype(dtype), t.astype(dtype)), compute_uv=False)
    return s / s[0]


# ----------------------------------------------------------------------------------------------------------------
# Numerical integration (the reference the closed forms are tested against).


@functools.partial(jax.jit, static_argnames=("constrained", "solver", "rtol", "atol", "max_steps"))
def _solve(w0, c, ts, *, constrained, solver, rtol, atol, max_steps):
    field = constrained_field if constrained else naive_field
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, w, c: field(w, c)), _SOLVERS[solver](), ts[0], ts[-1], None, w0, args=c,
        saveat=diffrax.SaveAt(ts=ts), stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps, throw=False,
    )
    return sol.ys, sol.stats["num_accepted_steps"], sol.result == diffrax.RESULTS.successful


@float64
def integrate(
    c: np.ndarray,
    w0: np.ndarray,
    ts: np.ndarray,
    *,
    constrained: bool = True,
    solver: Solver = "dopri8",
    rtol: float = 1e-12,
    atol: float = 1e-14,
    max_steps: int = 1_000_000,
) -> tuple[np.ndarray, int]:
    """Integrate the constrained (or naive) flow numerically with diffrax's adaptive solver, in float64.

    For the constrained flow the field is evaluated with C + s I, s = max(0, -lambda_min(C)). On the constraint
    set (I - W W^T) W = 0, so the field, the trajectory and P(t) are unchanged [D]; off it, the Gram error
    E = W^T W - I obeys dE/dt = -2 (E S + S E) + O(E^2) with S = W^T C W, which amplifies round-off when S has
    negative eigenvalues (indefinite C, e.g. h = 8 of 10 with negative lambda_h: O(1) errors by t ~ 5). The shift
    makes S positive semi-definite, so the solver's errors decay back onto W^T W = I instead of growing.

    Args:
      c: (m, m) symmetric C.
      w0: (m, h) initial weights (orthonormal columns when ``constrained``).
      ts: (T,) strictly increasing save times; ts[0] is the initial time.
      constrained: integrate dW/dt = 2 (I - W W^T) C W (True) or dW/dt = 2 C W (False).
      solver: ``"dopri8"`` (default), ``"tsit5"`` or ``"dopri5"``; rtol, atol: PID step-size control.
      max_steps: the solver's step budget.

    Returns:
      ``(ws, n_steps)``: (T, m, h) float64 W at the save times and the number of accepted steps.

    Raises:
      ValueError: bad shapes or values (as :func:`projector`), bad times or solver settings.
      FloatingPointError: the solver did not reach ts[-1].
    """
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {sorted(_SOLVERS)}; got {solver!r}")
    if not (rtol > 0 and atol > 0 and math.isfinite(rtol) and math.isfinite(atol)):
        raise ValueError(f"rtol and atol must be finite and > 0; got rtol={rtol}, atol={atol}")
    if not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer; got {max_steps!r}")
    ts = np.asarray(ts, np.float64)
    if ts.ndim != 1 or ts.size < 2 or not np.all(np.isfinite(ts)) or np.any(np.diff(ts) <= 0):
        raise ValueError(f"ts must be a 1-D strictly increasing array of >= 2 finite times; got shape {ts.shape}")
    with _compat.enable_x64(True):
        c = _check_c(np.asarray(c, np.float64))
        w0 = _check_w0(np.asarray(w0, np.float64), c.shape[0], orthonormal=constrained)
        if constrained:
            c = c + max(0.0, -float(eigh_desc(c).values[-1])) * jnp.eye(c.shape[0], dtype=c.dtype)
        ys, steps, ok = _solve(w0, c, jnp.asarray(ts), constrained=constrained, solver=solver, rtol=float(rtol),
                               atol=float(atol), max_steps=int(max_steps))
        ys = np.asarray(ys, np.float64)
    if not bool(ok):
        hint = (f"raise max_steps (now {max_steps}) or shorten the time span" if np.all(np.isfinite(ys))
                else "the state became NaN/inf (the naive flow grows like exp(2 lambda_1 t))")
        raise FloatingPointError(f"the ODE solver did not reach t = {ts[-1]:.6g}. Try: {hint}")
    return ys, int(steps)
