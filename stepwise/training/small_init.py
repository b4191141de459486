"""Full-batch GD from small initialisation of the models with an exact stepwise theory, run until the theory says the
last step is over: how many updates that is (:func:`settle_steps`), and the kernel machine f(x) = B k(x) on a fixed
kernel with its prediction (:func:`train_kernel_small_init`; ``kernel_bt`` and the width sweep's infinite-width point).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from stepwise.theory import kernel, linear
from stepwise.training.kernel import KernelRun, train_kernel_bt

__all__ = ["SmallInitRun", "settle_steps", "train_kernel_small_init"]


def settle_steps(pred, extra_widths: float) -> int:
    """Updates until the last predicted step (``pred.mode_steps``, any theory's prediction) plus ``extra_widths`` of
    its rise widths (``pred.widths``), rounded up."""
    last = int(np.argmax(pred.mode_steps))
    return int(math.ceil(pred.mode_steps[last] + extra_widths * pred.widths[last]))


@dataclasses.dataclass(frozen=True)
class SmallInitRun:
    """A kernel machine trained by :func:`train_kernel_small_init`: initial coefficients B(0) (d, 2n), learning rate,
    the kernel theory's prediction, the number of updates and the recorded trajectory."""

    b0: np.ndarray
    lr: float
    pred: kernel.KernelPrediction
    steps: int
    traj: KernelRun


def train_kernel_small_init(k: np.ndarray, eig: tuple[np.ndarray, np.ndarray], d: int, key: jax.Array, *,
                            init_scale: float, lr_scale: float, extra_widths: float = 6.0, steps: int | None = None,
                            max_steps: int | None = None, progress: bool = False) -> SmallInitRun:
    """GD on ||C - I||_F^2 of f(x) = B k(x) over the 2n training views from small random B(0), and its prediction.

    Args:
      k: (2n, 2n) kernel over the views (x_1..x_n, x'_1..x'_n).
      eig: its contrastive eigenpairs (:func:`stepwise.theory.kernel.contrastive_eigh`).
      d: embedding dimension.
      key: draws B(0) (float32 normal draws: the same numbers whether or not x64 is enabled; a float64 copy), scaled
        so the initial embeddings of the training views have rms ``init_scale`` / sqrt(gamma_1).
      lr_scale: learning rate in units of the stability limit 1/(4 gamma_1).
      extra_widths, steps: the number of updates: ``steps``, or until the last predicted step plus ``extra_widths``
        rise widths (:func:`settle_steps`).
      max_steps: refuse (before training) a run predicted to need more updates.

    Raises:
      ValueError: the run would exceed ``max_steps``.
    """
    g = eig[0]
    b0 = np.array(jax.random.normal(key, (d, k.shape[0]), dtype=jnp.float32), dtype=np.float64)
    b0 *= init_scale / math.sqrt(g[0]) / math.sqrt(np.mean((b0 @ k) ** 2))  # rms of F(0) = init_scale / sqrt(g_1)
    lr = lr_scale * linear.stability_limit(g[0])
    pred = kernel.predict(k, (b0 @ k).T, lr, eig=eig)
    steps = steps or settle_steps(pred, extra_widths)
    if max_steps is not None and steps > max_steps:
        raise ValueError(
            f"the theory predicts the last of d = {d} steps after {np.max(pred.mode_steps):.3g} updates (gamma_d / "
            f"gamma_1 = {g[d - 1] / g[0]:.3g}), beyond max_steps = {max_steps}; use a smaller d or raise "
            "--max-steps"
        )
    return SmallInitRun(b0=b0, lr=lr, pred=pred, steps=steps, traj=train_kernel_bt(k, b0, lr, steps, progress=progress))
