"""Full-batch gradient descent on the kernel Barlow Twins model, recorded at every step, in float64.

The kernel machine f(x) = B k(x), B in R^{d x 2n}, k(x) = [K(x, x~_a)]_a over the 2n augmented training points
ordered (x_1..x_n, x'_1..x'_n), is the model f = W phi(x) with W = B Phi kept in the span of the training features,
which gradient descent in feature space never leaves. Its update, written with the kernel only:

    F = B K  (d x 2n, the embeddings of the training points),    C = (1/2n) F Z F^T,
    B <- B - lr (4/2n) (C - I) F Z,

the exact image of W <- W - lr 4 (C - I) W Gamma_phi (Gamma_phi = (1/2n) Phi^T Z Phi; Z swaps each view with its
partner). O(d (2n)^2) per step: the update as written, independent of the eigen-decomposition the theory uses.
Steps run in jitted ``lax.scan`` chunks (one compilation per run).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from stepwise.training.linear import run_in_chunks

__all__ = ["KernelRun", "train_kernel_bt"]


@dataclasses.dataclass(frozen=True)
class KernelRun:
    """A recorded GD run of the kernel model.

    Attributes:
      step: (T,) update counts 0..steps.
      eigenvalues: (T, d) eigenvalues of C, sorted decreasing.
      loss: (T,) ||C - I||_F^2.
      b_final: (d, 2n) coefficients after the last update; embeddings of new inputs are ``k_test_train @ b.T``.
      lr: the learning rate.
    """

    step: np.ndarray
    eigenvalues: np.ndarray
    loss: np.ndarray
    b_final: np.ndarray
    lr: float


def _swap(f):
    half = f.shape[1] // 2
    return jnp.concatenate([f[:, half:], f[:, :half]], axis=1)


def _state(b, k):
    f = b @ k
    fz = _swap(f)
    c = fz @ f.T / f.shape[1]
    c = 0.5 * (c + c.T)
    c_minus_i = c - jnp.eye(c.shape[0], dtype=c.dtype)
    return fz, c_minus_i, jnp.linalg.eigvalsh(c)[::-1], jnp.sum(c_minus_i**2)


@functools.partial(jax.jit, static_argnames=("length",), donate_argnums=(0,))
def _chunk(b, k, lr, n_valid, *, length: int):
    def body(b, i):
        fz, c_minus_i, eigs, loss = _state(b, k)
        b_new = b - lr * (4.0 / k.shape[0]) * (c_minus_i @ fz)
        return jnp.where(i < n_valid, b_new, b), (eigs, loss)

    return jax.lax.scan(body, b, jnp.arange(length))


def train_kernel_bt(
    k_train: np.ndarray, b0: np.ndarray, lr: float, steps: int, *, chunk: int = 4096, progress: bool = False
) -> KernelRun:
    """Run ``steps`` full-batch GD updates of the kernel model from coefficients ``b0``, recording every step.

    Args:
      k_train: (2n, 2n) symmetric kernel over the augmented training points (x_1..x_n, x'_1..x'_n).
      b0: (d, 2n) initial coefficients (the initial function is f_0(x) = b0 k(x)).
      lr: learning rate (stable below 1/(4 gamma_1), gamma_1 the top contrastive eigenvalue).
      steps: number of updates.
      chunk: updates per jitted scan call.
      progress: show a progress bar.

    Returns:
      A :class:`KernelRun` with steps + 1 records.

    Raises:
      ValueError: shapes that do not match.
      DivergenceError: the loss became NaN/inf; says at which step and what to try.
    """
    k = np.asarray(k_train, dtype=np.float64)
    b0 = np.asarray(b0, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2:
        raise ValueError(f"k_train must be (2n, 2n); got shape {k.shape}")
    if b0.ndim != 2 or b0.shape[1] != k.shape[0]:
        raise ValueError(f"b0 must be (d, 2n = {k.shape[0]}); got shape {b0.shape}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    b_final, records = run_in_chunks(
        _chunk, lambda b, k: _state(b, k)[2:], (k,), b0, lr, steps, chunk=chunk, progress=progress,
        desc="kernel BT (GD)",
    )
    return KernelRun(**records, b_final=b_final)
