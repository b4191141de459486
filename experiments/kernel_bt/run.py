"""Runner for the kernel Barlow Twins experiment (Simon et al. 2023, kernel extension; theory note 3 and 6.8).

Builds n fixed positive pairs (two random crops per image), the (2n, 2n) kernel over the views and the kernel rows
of held-out crops, trains the kernel machine f(x) = B k(x) by full-batch GD in float64 (the update written with K
only, :func:`stepwise.training.train_kernel_bt`), computes the kernel theory's predictions from K, the initial
embeddings and the learning rate (:mod:`stepwise.theory.kernel`), and writes ``trajectory.npz``, ``kernel_bt.png``
(drawn from it) and ``results.json`` (last), each atomically.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from stepwise._compat import enable_x64
from experiments.kernel_bt.config import KernelBTConfig
from experiments.linear_bt.run import write_exact_run
from stepwise import compare
from stepwise.compare.exact import compare_exact_steps
from stepwise.theory import kernel as theory
from stepwise.theory import linear
from stepwise.training.small_init import train_kernel_small_init

EXPERIMENT = "kernel_bt"
FIGURE = "kernel_bt.png"


def median_bandwidth(x: np.ndarray) -> float:
    """sqrt(median squared pairwise distance / 2): the usual median heuristic for exp(-|x - y|^2 / (2 h^2))."""
    sq = np.sum(x**2, 1)[:, None] + np.sum(x**2, 1)[None, :] - 2.0 * x @ x.T
    off = sq[~np.eye(x.shape[0], dtype=bool)]
    return math.sqrt(max(float(np.median(off)), np.finfo(np.float64).tiny) / 2.0)


def kernel_matrices(
    cfg: KernelBTConfig, x: np.ndarray, xt: np.ndarray, key: jax.Array
) -> tuple[np.ndarray, np.ndarray, dict]:
    """K over the 2n views (x) and the rows k(x_test) (n_test, 2n), plus what defines the kernel."""
    if cfg.kernel == "linear":
        return theory.linear_kernel(x), theory.linear_kernel(xt, x), {}
    if cfg.kernel == "rbf":
        h = cfg.bandwidth_scale * median_bandwidth(x)
        return theory.rbf_kernel(x, bandwidth=h), theory.rbf_kernel(xt, x, bandwidth=h), {"bandwidth": h}
    from stepwise.models import build_model, pure_model
    from stepwise.ntk import empirical_ntk

    m = x.shape[1]
    model = pure_model(build_model("mlp", (1, 1, m), hidden=(cfg.ntk_width,), embed_dim=cfg.d or cfg.d_max,
                                   seed=int(jax.random.randint(key, (), 0, 2**31 - 1))))
    with enable_x64(True):
        params = jax.tree.map(lambda p: np.asarray(p, np.float64), model.params)
        xs, xts = x.reshape(-1, 1, 1, m), xt.reshape(-1, 1, 1, m)
        k = np.asarray(empirical_ntk(model.apply, params, xs, backend="jax"), dtype=np.float64)
        kt = np.asarray(empirical_ntk(model.apply, params, xts, xs, backend="jax"), dtype=np.float64)
    return 0.5 * (k + k.T), kt, {"ntk": f"empirical NTK of a 1-hidden-layer ReLU MLP, width {cfg.ntk_width}"}


def choose_d(gammas: np.ndarray, cfg: KernelBTConfig) -> int:
    """``cfg.d``, or the largest d in [3, d_max] whose next eigenvalue leaves a gap gamma_(d+1)/gamma_d <= gap_ratio.

    At least 3 modes, so that the step-time and plateau checks test something.
    """
    n_pos = theory.positive_modes(gammas)
    if cfg.d is not None:
        if n_pos < cfg.d:
            raise ValueError(f"the contrastive kernel has only {n_pos} positive eigenvalues; use d <= {n_pos}")
        return cfg.d
    ratios = gammas[1 : cfg.d_max + 1] / gammas[: cfg.d_max]
    ok = [j + 1 for j in range(2, min(cfg.d_max, n_pos)) if ratios[j] <= cfg.gap_ratio]
    if not ok:
        raise ValueError(
            f"no d in [3, {cfg.d_max}] has gamma_(d+1)/gamma_d <= {cfg.gap_ratio} "
            f"(ratios {np.round(ratios, 3).tolist()}); pass --d explicitly, or a larger --gap-ratio / --d-max"
        )
    return max(ok)


def leakage_estimate(gammas: np.ndarray, amplitudes: np.ndarray, d: int) -> float:
    """Theory note 2.7's order-of-magnitude estimate of mode d+1's relative amplitude in the final embedding,
    lambda_d(0)^((1 - gamma_(d+1)/gamma_d) / 2), from the spectrum and mode d's initial eigenvalue (known before
    training); nan when mode d+1 does not exist or is not positive."""
    if d >= gammas.size or not gammas[d] > 0:
        return float("nan")
    ratio = float(gammas[d] / gammas[d - 1])
    return float(np.asarray(amplitudes, dtype=np.float64)[d - 1] ** ((1.0 - ratio) / 2.0))


def run(cfg: KernelBTConfig, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Run the experiment and write its files to ``out_dir``. Returns the results dictionary."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    (x1, x2, xt), (k_b, k_net) = cfg.data.load(cfg.seed, 2)  # input errors are raised here, before any compute
    x = np.concatenate([x1, x2])  # (2n, m) ordered (x_1..x_n, x'_1..x'_n)
    k, kt, kernel_info = kernel_matrices(cfg, x, xt, k_net)

    g, a = theory.contrastive_eigh(k, ridge=cfg.ridge)
    d = choose_d(g, cfg)
    cfg = dataclasses.replace(cfg, d=d)
    gd = train_kernel_small_init(k, (g, a), cfg.d, k_b, init_scale=cfg.init_scale, lr_scale=cfg.lr_scale,
                                 steps=cfg.steps, max_steps=cfg.max_steps, progress=progress)
    lr, pred, steps, traj = gd.lr, gd.pred, gd.steps, gd.traj

    gated = linear.separated_modes(g, cfg.d, cfg.gate_ratio)
    cmp = compare_exact_steps(
        traj.step, traj.eigenvalues, traj.loss, pred, gated, plateau_separation=cfg.plateau_separation,
        gate_ratio=cfg.gate_ratio, amplitude_reason="the kernel model is the linear model in feature space: "
        "Gram-Schmidt amplitudes from F(0) a_j and the exact per-mode GD map are exact up to terms that vanish "
        "with the initial scale",
    )

    f_test = kt @ traj.b_final.T
    f_test_pred = theory.predict_embeddings(k, kt, cfg.d, eig=(g, a))
    f_train = k @ traj.b_final.T
    f_train_pred = theory.predict_embeddings(k, k, cfg.d, eig=(g, a))
    # A random d-dimensional function of the same kernel: the baseline a Gram error of 1e-2 must be far below.
    rand = np.asarray(jax.random.normal(jax.random.fold_in(k_b, 1), (k.shape[0], cfg.d), dtype=jnp.float32),
                      dtype=np.float64)
    baseline = compare.gram_relative_error(kt @ rand, f_test_pred)
    leak = leakage_estimate(g, pred.amplitudes, cfg.d)
    gap = (f"gamma_(d+1)/gamma_d = {g[cfg.d] / g[cfg.d - 1]:.3f}, so the note-2.7 estimate of mode d+1's leakage, "
           f"lambda_d(0)^((1 - ratio)/2), is {leak:.1e} before training")

    # The two kernel-PCA checks (theory note 6.7-6.8, criterion 1e-2): (name, trained, predicted, reason, description).
    gram = (
        ("train_gram_rel_error", f_train, f_train_pred, "on the training views the embedding is kernel PCA of the "
         f"contrastive kernel, up to the leakage of mode d+1 ({gap})",
         "relative Frobenius error of the Gram matrix of the 2n training-view embeddings"),
        ("test_gram_rel_error", f_test, f_test_pred, "f_j(x) = gamma_j^(-1/2) a_j^T k(x) on new inputs, up to a "
         f"rotation and the leakage of mode d+1 ({gap}); a random function of the same kernel is at about 1 "
         "(summary: random_function_gram_error)",
         f"relative Frobenius error of the {xt.shape[0]}x{xt.shape[0]} Gram matrix of held-out embeddings, trained "
         "vs predicted"),
    )
    checks = [*cmp.checks, *(compare.check(name, compare.gram_relative_error(f, fp), 1e-2, kind="theory",
                                           reason="theory note 6.7-6.8 (criterion 1e-2): " + why, description=what,
                                           predicted=leak) for name, f, fp, why, what in gram)]

    title = f"kernel Barlow Twins ({cfg.kernel} kernel, {cfg.data.dataset}, 2n = {k.shape[0]}): GD vs kernel theory"
    return write_exact_run(
        out_dir, cfg, t0, EXPERIMENT, traj, traj.lr * traj.step, pred, steps, g, lr, cmp, gated, checks,
        head={"two_n": k.shape[0], "m": x.shape[1], "kernel": kernel_info},
        tail={"random_function_gram_error": baseline, "leakage_estimate": leak},
        arrays={"test_embeddings": f_test, "predicted_test_embeddings": f_test_pred}, figure=out_dir / FIGURE,
        title=title)
