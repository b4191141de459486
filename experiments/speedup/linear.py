"""Full-batch GD of the linear model under the preconditioned updates of :mod:`stepwise.theory.speedup`, in float64.

    W <- W - lr * 4 K(C) (C - I) W Gamma M,    C = W Gamma W^T

run in the eigenbasis of Gamma (W~ = W V, Gamma = V diag(g) V^T, M = V diag(mu) V^T; an orthogonal change of
variables, as ``stepwise.training.train_linear_bt(basis="eigen")``): W~ <- W~ - lr * 4 K(C) (C - I) W~ diag(g mu).
K(C) is applied as U diag(kappa(lambda) (lambda - 1)) U^T from the eigendecomposition C = U diag(lambda) U^T computed
at every step. The host loop is :func:`stepwise.training.linear.run_in_chunks` (one compilation, jitted scan
chunks, divergence checks), shared with the plain trainer.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from stepwise.training.linear import run_in_chunks

__all__ = ["VariantRun", "train_variant"]


@dataclasses.dataclass(frozen=True)
class VariantRun:
    """A recorded GD run: ``step`` (T,), ``eigenvalues`` (T, d) of C sorted decreasing, ``loss`` (T,)
    ||C - I||_F^2, ``w_final`` (d, m) in the eigenbasis of Gamma, ``lr``."""

    step: np.ndarray
    eigenvalues: np.ndarray
    loss: np.ndarray
    w_final: np.ndarray
    lr: float


def _record(w, g, eps, boost: bool):
    c = (w * g[None, :]) @ w.T
    c = 0.5 * (c + c.T)
    lam, u = jnp.linalg.eigh(c)
    kappa = (1.0 + eps) / (jnp.maximum(lam, 0.0) + eps) if boost else jnp.ones_like(lam)
    ke = (u * (kappa * (lam - 1.0))[None, :]) @ u.T  # K(C) (C - I)
    loss = jnp.sum((lam - 1.0) ** 2)
    return ke, lam[::-1], loss


@functools.partial(jax.jit, static_argnames=("length", "boost"), donate_argnums=(0,))
def _chunk(w, g, rates, eps, lr, n_valid, *, length: int, boost: bool):
    def body(w, i):
        ke, eigs, loss = _record(w, g, eps, boost)
        w_new = w - lr * 4.0 * (ke @ (w * rates[None, :]))
        return jnp.where(i < n_valid, w_new, w), (eigs, loss)

    return jax.lax.scan(body, w, jnp.arange(length))


def train_variant(g: np.ndarray, rates: np.ndarray, w0: np.ndarray, lr: float, steps: int, *,
                  eps: float | None = None, chunk: int = 4096, progress: bool = False) -> VariantRun:
    """Run ``steps`` GD updates from ``w0`` (given in the eigenbasis of Gamma), recording every step.

    Args:
      g: (m,) eigenvalues of Gamma (any order matching the columns of ``w0``).
      rates: (m,) g_k mu_k, the eigenvalues of Gamma M (:func:`stepwise.theory.speedup.mode_rates`).
      w0: (d, m) initial weights in the eigenbasis (W(0) V).
      lr: learning rate; steps: number of updates.
      eps: the boost's eps (None: K = I).

    Raises:
      DivergenceError: the loss or C became NaN/inf.
    """
    boost = eps is not None
    w_final, records = run_in_chunks(
        functools.partial(_chunk, boost=boost), lambda w, g, rates, eps: _record(w, g, eps, boost)[1:],
        (g, rates, 1.0 if eps is None else eps), w0, lr, steps, chunk=chunk, progress=progress,
        desc="linear BT variant (GD)",
    )
    return VariantRun(**records, w_final=w_final)
