"""Riemannian gradient descent for weights with orthonormal columns (Grassmannian / Stiefel), with a retraction.

For a loss L(W) that depends only on span(W) (L(WQ) = L(W) for orthogonal Q, as every loss of
:mod:`stepwise.theory.grassmann`), one step is

    W <- R(W - lr * (I - W W^T) grad L(W))

where (I - W W^T) G is the horizontal (Grassmannian) Riemannian gradient, equal to the Stiefel gradient with the
Euclidean metric for such losses, and R is a retraction back to W^T W = I:

- ``"qr"``: the Q factor of a thin QR, with signs fixed so that diag(R) > 0 (a smooth first-order retraction);
- ``"polar"``: U V^T from the thin SVD Y = U S V^T, the closest matrix with orthonormal columns (second order).

Both return a basis of span(W - lr * xi), so for an O(h)-invariant loss they give the same sequence of subspaces
(projectors agree to round-off) and differ only by a rotation of the columns. Gradient descent with step lr is the
Euler-plus-retraction discretisation of the flow dW/dt = -(I - W W^T) grad L at time t = lr x steps; the subspace
error against the flow is O(lr).

Beside it, for comparison and for unconstrained parameters: plain gradient descent with the same recording
(:func:`euclidean_gd`) and a Haar-random start on the Stiefel manifold (:func:`random_orthonormal`).

Two interfaces: pure functions (:func:`riemannian_step`, :func:`riemannian_gd`, a jitted ``lax.scan`` loop) and an
optax ``GradientTransformation`` (:func:`riemannian_sgd`) whose updates ``u`` make ``optax.apply_updates`` land on
the retracted point (``params + u = R(...)`` to round-off, which the next step's retraction removes again). Combine
it with ``optax.multi_transform`` to constrain only some leaves of a network's parameters.

References:
    P.-A. Absil, R. Mahony, R. Sepulchre. Optimization Algorithms on Matrix Manifolds. Princeton 2008, sections
    3.6, 4.1 (Riemannian gradient, retractions; QR and polar retractions, Example 4.1.3).
    P. Esser, S. Mukherjee, D. Ghoshdastidar. Representation Learning Dynamics of Self-Supervised Models.
    arXiv 2309.02011 (2023): "gradient descent on the Grassmannian" [V-abs]; which retraction the paper uses is
    unknown (theory note esser2023, pitfall 8).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "RETRACTIONS",
    "Retraction",
    "RiemannianState",
    "euclidean_gd",
    "horizontal_gradient",
    "polar_retraction",
    "qr_retraction",
    "random_orthonormal",
    "record_schedule",
    "retract",
    "riemannian_gd",
    "riemannian_sgd",
    "riemannian_step",
]

Retraction = Literal["qr", "polar"]


def _check_matrix(y: jax.Array, what: str) -> None:
    if jnp.ndim(y) != 2 or not 1 <= jnp.shape(y)[1] <= jnp.shape(y)[0]:
        raise ValueError(f"{what} must be an (m, h) matrix with 1 <= h <= m (orthonormal columns); got shape "
                         f"{tuple(jnp.shape(y))}")


def qr_retraction(y: jax.Array) -> jax.Array:
    """Q factor of the thin QR of (m, h) ``y``, columns signed so that the R factor has a positive diagonal."""
    _check_matrix(y, "y")
    q, r = jnp.linalg.qr(y)
    d = jnp.diagonal(r)
    return q * jnp.where(d < 0, -1.0, 1.0).astype(q.dtype)[None, :]


def polar_retraction(y: jax.Array) -> jax.Array:
    """Orthonormal polar factor U V^T of (m, h) ``y`` (thin SVD), i.e. y (y^T y)^{-1/2}."""
    _check_matrix(y, "y")
    u, _, vt = jnp.linalg.svd(y, full_matrices=False)
    return u @ vt


RETRACTIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"qr": qr_retraction, "polar": polar_retraction}


def retract(y: jax.Array, retraction: Retraction = "qr") -> jax.Array:
    """Apply the named retraction to (m, h) ``y``."""
    if retraction not in RETRACTIONS:
        raise ValueError(f"unknown retraction {retraction!r}; expected one of {sorted(RETRACTIONS)}")
    return RETRACTIONS[retraction](y)


def horizontal_gradient(w: jax.Array, egrad: jax.Array) -> jax.Array:
    """(I - W W^T) G: the Riemannian gradient of an O(h)-invariant loss at W (W^T W = I) from its Euclidean G."""
    return egrad - w @ (w.T @ egrad)


def riemannian_step(w: jax.Array, egrad: jax.Array, lr: float | jax.Array, *,
                    retraction: Retraction = "qr") -> jax.Array:
    """One step W <- R(W - lr (I - W W^T) G) for (m, h) W with orthonormal columns and Euclidean gradient G.

    Raises:
      ValueError: W and G of different shapes or not (m, h) with h <= m, or an unknown retraction.
    """
    _check_matrix(w, "w")
    if jnp.shape(egrad) != jnp.shape(w):
        raise ValueError(f"the gradient must have the shape of w {tuple(jnp.shape(w))}; got {tuple(jnp.shape(egrad))}")
    return retract(w - lr * horizontal_gradient(w, egrad), retraction)


def _check_schedule(lr: float, steps: int, record_every: int) -> None:
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be finite and > 0; got {lr}")
    if not (isinstance(record_every, (int, np.integer)) and record_every >= 1):
        raise ValueError(f"record_every must be a positive integer; got {record_every!r}")
    if not (isinstance(steps, (int, np.integer)) and steps >= record_every and steps % record_every == 0):
        raise ValueError(f"steps must be a positive multiple of record_every = {record_every}; got {steps!r}")


@functools.partial(jax.jit, static_argnames=("loss_fn", "n_records", "retraction"))
def _gd(w0, lr, args, record_every, *, loss_fn, n_records, retraction):
    # record_every is traced (a while loop inside), so runs that differ only in it share one compilation.
    # retraction None: plain gradient descent (euclidean_gd).
    grad = jax.grad(lambda w: loss_fn(w, *args))

    def inner(v, g):
        return v - lr * g if retraction is None else riemannian_step(v, g, lr, retraction=retraction)

    def block(w, _):
        w = jax.lax.fori_loop(0, record_every, lambda _, v: inner(v, grad(v)), w)
        return w, w

    _, ws = jax.lax.scan(block, w0, None, length=n_records)
    return jnp.concatenate([w0[None], ws])


def riemannian_gd(loss_fn: Callable[..., jax.Array], w0: jax.Array, lr: float, steps: int, *,
                  args: tuple = (), retraction: Retraction = "qr", record_every: int = 1) -> jax.Array:
    """Riemannian gradient descent on ``loss_fn`` (gradient by ``jax.grad``), one jitted ``lax.scan``.

    Args:
      loss_fn: ``(W (m, h), *args) -> scalar``, invariant under W -> W Q (the horizontal gradient assumes it).
        A static argument: pass the same function object (e.g. a module-level function) and put the data in
        ``args`` to reuse one compilation.
      w0: (m, h) start with orthonormal columns.
      lr: step size (continuous time t = lr x step).
      steps: number of updates, a multiple of ``record_every``.
      args: arrays passed to ``loss_fn`` after W (traced, not static).
      retraction: ``"qr"`` or ``"polar"``.
      record_every: keep W every this many steps. Runs with the same number of records share one compilation.

    Returns:
      (steps // record_every + 1, m, h) W after 0, record_every, 2 record_every, ... updates.

    Raises:
      ValueError: bad shapes, lr not finite and > 0, steps not a positive multiple of record_every, w0 without
        orthonormal columns (max |W0^T W0 - I| > sqrt(eps)), an unknown retraction.
    """
    _check_matrix(w0, "w0")
    if retraction not in RETRACTIONS:
        raise ValueError(f"unknown retraction {retraction!r}; expected one of {sorted(RETRACTIONS)}")
    _check_schedule(lr, steps, record_every)
    w0 = jnp.asarray(w0)
    err = float(jnp.max(jnp.abs(w0.T @ w0 - jnp.eye(w0.shape[1], dtype=w0.dtype))))
    tol = float(np.sqrt(jnp.finfo(w0.dtype).eps))
    if err > tol:
        raise ValueError(f"w0 must have orthonormal columns; max |W0^T W0 - I| = {err:.3e} > {tol:.1e} "
                         "(orthonormalise it with qr_retraction(w0))")
    return _gd(w0, jnp.asarray(lr, w0.dtype), tuple(args), jnp.asarray(record_every, jnp.int32), loss_fn=loss_fn,
               n_records=int(steps) // int(record_every), retraction=retraction)


class RiemannianState(NamedTuple):
    """State of :func:`riemannian_sgd`: the number of updates made (for learning-rate schedules)."""

    count: jax.Array


def riemannian_sgd(learning_rate: float | optax.Schedule, *,
                   retraction: Retraction = "qr") -> optax.GradientTransformation:
    """Riemannian SGD as an optax transformation: every leaf is an (m, h) matrix with orthonormal columns.

    ``update(grads, state, params)`` returns ``R(W - lr (I - W W^T) G) - W`` per leaf, so
    ``optax.apply_updates(params, updates)`` gives the retracted point (to one rounding). ``params`` is required.

    Args:
      learning_rate: a float or an optax schedule ``count -> lr``.
      retraction: ``"qr"`` or ``"polar"``.

    Example:
      >>> w = qr_retraction(jnp.arange(6.0).reshape(3, 2) + jnp.eye(3, 2))
      >>> tx = riemannian_sgd(0.1)
      >>> g = -2.0 * jnp.diag(jnp.array([3.0, 2.0, 1.0])) @ w     # gradient of -tr(W^T C W)
      >>> u, _ = tx.update(g, tx.init(w), w)
      >>> w1 = optax.apply_updates(w, u)
      >>> bool(jnp.allclose(w1.T @ w1, jnp.eye(2), atol=1e-6))
      True
    """
    if retraction not in RETRACTIONS:
        raise ValueError(f"unknown retraction {retraction!r}; expected one of {sorted(RETRACTIONS)}")
    if not callable(learning_rate) and not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be finite and > 0 (or a schedule); got {learning_rate}")

    def init_fn(params):
        for leaf in jax.tree.leaves(params):
            _check_matrix(leaf, "every parameter leaf")
        return RiemannianState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("riemannian_sgd needs params: call update(grads, state, params)")
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        new = jax.tree.map(lambda g, w: riemannian_step(w, g, lr, retraction=retraction) - w, updates, params)
        return new, RiemannianState(count=optax.safe_int32_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------------------------
# Unconstrained gradient descent and random starts.


def random_orthonormal(rng: np.random.Generator, m: int, h: int) -> np.ndarray:
    """A uniformly random (Haar) point of the Stiefel manifold: QR of an (m, h) Gaussian matrix, signs fixed.

    A NumPy generator rather than a JAX key: each eager ``jax.random`` call compiles once per shape.
    """
    if not 1 <= h <= m:
        raise ValueError(f"need 1 <= h <= m; got m = {m}, h = {h}")
    return np.asarray(qr_retraction(jnp.asarray(rng.normal(size=(m, h)))))


def record_schedule(t_end: float, lr: float, records: int) -> tuple[int, int]:
    """``(record_every, n_records)`` for a run of step ``lr`` covering time ``t_end`` (at least one step) with about
    ``records`` recorded points: pass ``steps = record_every * n_records`` and ``record_every`` to the loops."""
    steps = max(1, math.ceil(t_end / lr))
    every = max(1, math.ceil(steps / records))
    return every, math.ceil(steps / every)


def euclidean_gd(loss_fn: Callable[..., jax.Array], w0: jax.Array, lr: float, steps: int, *, args: tuple = (),
                 record_every: int = 1) -> jax.Array:
    """Plain gradient descent W <- W - lr grad L(W) (gradient by ``jax.grad``), one jitted ``lax.scan``.

    The unconstrained counterpart of :func:`riemannian_gd` (no projection, no retraction, any array shape), with
    the same arguments and recording.

    Returns:
      (steps // record_every + 1, *w0.shape) W after 0, record_every, 2 record_every, ... updates.

    Raises:
      ValueError: lr not finite and > 0, steps not a positive multiple of record_every.
    """
    _check_schedule(lr, steps, record_every)
    w0 = jnp.asarray(w0)
    return _gd(w0, jnp.asarray(lr, w0.dtype), tuple(args), jnp.asarray(record_every, jnp.int32), loss_fn=loss_fn,
               n_records=int(steps) // int(record_every), retraction=None)
