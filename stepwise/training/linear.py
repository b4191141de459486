"""Full-batch gradient descent on the linear Barlow Twins model, recorded at every step, in float64.

    W <- W - lr * 4 (C - I) W Gamma,    C = W Gamma W^T

Two exact implementations of the same iteration:

- ``basis="pixel"``: the update as written, O(d m^2) per step. The reference.
- ``basis="eigen"``: the same iteration in the eigenbasis of Gamma (W~ = W V, Gamma = V diag(g) V^T, an
  orthogonal change of variables, so W~ <- W~ - lr * 4 (C - I) W~ diag(g) with C = W~ diag(g) W~^T), O(d^2 m)
  per step. Mathematically identical; the tests check it matches ``pixel`` to round-off.

Steps run in jitted ``lax.scan`` chunks (one compilation for the whole run); the host only checks each chunk for
divergence and updates the progress bar.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from stepwise._compat import enable_x64
from stepwise.errors import DivergenceError

__all__ = ["LinearRun", "train_linear_bt"]

Basis = Literal["eigen", "pixel"]


@dataclasses.dataclass(frozen=True)
class LinearRun:
    """A recorded GD run.

    Attributes:
      step: (T,) update counts 0..steps (row k is the state after k updates).
      eigenvalues: (T, d) eigenvalues of C = W Gamma W^T, sorted decreasing.
      loss: (T,) ||C - I||_F^2.
      w_final: (d, m) weights after the last update, in the input (pixel) basis.
      lr: the learning rate.
    """

    step: np.ndarray
    eigenvalues: np.ndarray
    loss: np.ndarray
    w_final: np.ndarray
    lr: float

    @property
    def time(self) -> np.ndarray:
        """Effective time t = lr * step."""
        return self.lr * self.step


def _gamma_apply(op, diagonal: bool):
    """v -> v Gamma: a matrix product, or a column scaling when Gamma is diagonal (the eigenbasis)."""
    return (lambda v: v * op[None, :]) if diagonal else (lambda v: v @ op)


def _record(w, gamma_apply):
    wg = gamma_apply(w)
    c = wg @ w.T
    c = 0.5 * (c + c.T)
    eye = jnp.eye(c.shape[0], dtype=c.dtype)
    loss = jnp.sum((c - eye) ** 2)
    return wg, c - eye, jnp.linalg.eigvalsh(c)[::-1], loss


@functools.partial(jax.jit, static_argnames=("length", "diagonal"), donate_argnums=(0,))
def _chunk(w, gamma, lr, n_valid, *, length: int, diagonal: bool):
    """``length`` GD steps (only the first ``n_valid`` update w); returns the new w and per-step records."""
    gamma_apply = _gamma_apply(gamma, diagonal)

    def body(w, i):
        wg, c_minus_i, eigs, loss = _record(w, gamma_apply)
        w_new = w - lr * 4.0 * (c_minus_i @ wg)
        return jnp.where(i < n_valid, w_new, w), (eigs, loss)

    return jax.lax.scan(body, w, jnp.arange(length))


def run_in_chunks(chunk_fn, record_fn, operands: tuple, state, lr: float, steps: int, *, chunk: int, progress: bool,
                  desc: str):
    """Drive a jitted scan ``chunk_fn(state, *operands, lr, n_valid, length=length) -> (state, (eigs, loss))`` over
    ``steps`` updates, in float64.

    One compilation (every call has the same ``length``; only the first ``n_valid`` updates apply); the host checks
    each chunk for divergence and appends the record ``record_fn(state, *operands) -> (eigs, loss)`` after the last
    update. ``state`` and ``operands`` are NumPy arrays (or scalars), passed to the functions as float64 JAX arrays.
    Returns ``(final state (NumPy), records)``, the records as keyword arguments of a run (:class:`LinearRun`):
    ``step`` (steps + 1,) update counts, ``eigenvalues`` (steps + 1, d), ``loss`` (steps + 1,) and ``lr``.

    Raises:
      DivergenceError: the loss became NaN/inf; says at which step and what to try.
    """
    from tqdm.auto import tqdm

    hint = (f"lower the learning rate (now {lr:.6g}; the stability limit is 1/(4 gamma_1)) or the initial scale")
    chunk = max(1, min(chunk, steps))
    eig_chunks, loss_chunks = [], []
    done = 0
    with enable_x64(True), tqdm(total=steps, desc=desc, unit="step", disable=not progress, leave=False) as bar:
        operands = tuple(jnp.asarray(a, dtype=jnp.float64) for a in operands)
        state = jnp.asarray(state, dtype=jnp.float64)
        lr_j = jnp.asarray(lr, dtype=jnp.float64)
        while done < steps:  # records 0..steps-1 here; the record after the last update comes below
            n_valid = min(chunk, steps - done)
            state, (eigs, loss) = chunk_fn(state, *operands, lr_j, jnp.asarray(n_valid), length=chunk)
            eigs, loss = np.asarray(eigs)[:n_valid], np.asarray(loss)[:n_valid]
            bad = np.flatnonzero(~np.isfinite(loss) | ~np.all(np.isfinite(eigs), axis=1))
            if bad.size:
                raise DivergenceError(step=done + int(bad[0]), quantity="loss ||C - I||_F^2",
                                      value=float(loss[bad[0]]), hint=hint)
            eig_chunks.append(eigs)
            loss_chunks.append(loss)
            done += n_valid
            bar.update(n_valid)
        eigs_last, loss_last = record_fn(state, *operands)
        state = np.asarray(state)
    eig_chunks.append(np.asarray(eigs_last)[None])
    loss_chunks.append(np.asarray(loss_last)[None])
    loss = np.concatenate(loss_chunks)
    if not np.isfinite(loss[-1]):
        raise DivergenceError(step=steps, quantity="loss ||C - I||_F^2", value=float(loss[-1]), hint=hint)
    return state, dict(step=np.arange(steps + 1, dtype=np.float64), eigenvalues=np.concatenate(eig_chunks), loss=loss,
                       lr=float(lr))


def train_linear_bt(
    gamma: np.ndarray,
    w0: np.ndarray,
    lr: float,
    steps: int,
    *,
    basis: Basis = "eigen",
    chunk: int = 4096,
    progress: bool = False,
    eig: tuple[np.ndarray, np.ndarray] | None = None,
) -> LinearRun:
    """Run ``steps`` full-batch GD updates on L = ||W gamma W^T - I||_F^2 from ``w0``, recording every step.

    Args:
      gamma: (m, m) symmetric Gamma.
      w0: (d, m) initial weights.
      lr: learning rate.
      steps: number of updates.
      basis: ``"eigen"`` (fast, exact change of variables) or ``"pixel"`` (the update as written).
      chunk: updates per jitted scan call.
      progress: show a progress bar.
      eig: an eigendecomposition (g, v) of gamma (any order) for ``basis="eigen"``, if the caller has one.

    Returns:
      A :class:`LinearRun` with steps + 1 records.

    Raises:
      DivergenceError: the loss or C became NaN/inf; says at which step and what to try.
    """
    gamma = np.asarray(gamma, dtype=np.float64)
    w0 = np.asarray(w0, dtype=np.float64)
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    if basis == "eigen":
        g, v = np.linalg.eigh(0.5 * (gamma + gamma.T)) if eig is None else eig
        op, w_init = g, w0 @ v
    elif basis == "pixel":
        v = None
        op, w_init = gamma, w0
    else:
        raise ValueError(f"basis must be 'eigen' or 'pixel'; got {basis!r}")
    diagonal = basis == "eigen"
    w_final, records = run_in_chunks(
        functools.partial(_chunk, diagonal=diagonal), lambda w, op: _record(w, _gamma_apply(op, diagonal))[2:],
        (op,), w_init, lr, steps, chunk=chunk, progress=progress, desc="linear BT (GD)",
    )
    return LinearRun(**records, w_final=w_final if v is None else w_final @ v.T)
