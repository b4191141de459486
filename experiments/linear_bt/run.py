"""Runner for the linear Barlow Twins experiment (Simon et al. 2023, Fig. 1A/B).

Builds n fixed positive pairs (two random crops per image), trains f(x) = W x by full-batch GD in float64, computes
the linear theory's predictions from the same Gamma, W(0) and learning rate, and writes to ``out_dir``:
``trajectory.npz`` (measured and predicted curves), ``linear_bt.png`` (drawn from that file) and ``results.json``
(checks, config, versions, device, wall time), each atomically; results.json last.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import numpy as np

from experiments.linear_bt.config import LinearBTConfig
from stepwise import compare, io
from stepwise.compare.exact import compare_exact_steps
from stepwise.theory import linear as theory
from stepwise.training import train_linear_bt
from stepwise.training.small_init import settle_steps

EXPERIMENT = "linear_bt"


def fixed_pair_images(cfg: LinearBTConfig) -> np.ndarray:
    """Shim for experiments/speedup until it holds a PairData: ``cfg.data.images(cfg.seed)``."""
    return cfg.data.images(cfg.seed)


def fixed_pair_views(cfg: LinearBTConfig, images: np.ndarray, key: jax.Array):
    """Shim for experiments/speedup until it holds a PairData: ``cfg.data.views(images, key)``."""
    return cfg.data.views(images, key)


def run(cfg: LinearBTConfig, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Run the experiment and write its files to ``out_dir``. Returns the results dictionary."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    (x1, x2, xt), (k_w,) = cfg.data.load(cfg.seed, 1)  # input errors are raised here, before any compute
    gamma = theory.cross_correlation(x1, x2)
    g, v = theory.eigh_desc(gamma)
    n_pos = int(np.sum(g > 0))
    if n_pos < cfg.d:
        raise ValueError(f"Gamma has only {n_pos} positive eigenvalues, so d = {cfg.d} modes cannot all be learned; "
                         f"use d <= {n_pos}")
    m = gamma.shape[0]
    w0 = cfg.init_scale / math.sqrt(g[0]) * np.asarray(jax.random.normal(k_w, (cfg.d, m)), dtype=np.float64)
    lr = cfg.lr_scale * theory.stability_limit(g[0])

    pred = theory.predict(gamma, w0, lr, eig=(g, v))
    steps = cfg.steps or settle_steps(pred, 6)
    traj = train_linear_bt(gamma, w0, lr, steps, basis=cfg.basis, progress=progress, eig=(g, v))

    gated = theory.separated_modes(g, cfg.d, cfg.gate_ratio)
    cmp = compare_exact_steps(
        traj.step, traj.eigenvalues, traj.loss, pred, gated, plateau_separation=cfg.plateau_separation,
        gate_ratio=cfg.gate_ratio, amplitude_reason="Gram-Schmidt amplitudes + the exact per-mode GD map are exact "
        "up to mode-interaction terms that vanish with the initial scale",
    )
    measured = cmp.measured
    w_final = traj.w_final
    angles = compare.principal_angles(w_final.T, v[:, : cfg.d])

    checks = [
        *cmp.checks,
        compare.check(
            "final_rowspace_max_angle",
            float(np.max(angles)),
            1e-2,
            kind="theory",
            reason="theory note 6.7 (criterion 1e-2 rad): small initialisation selects exactly the top-d "
            "eigenvectors of Gamma; leakage of mode d+1 is ~ lambda_d(0)^((1 - gamma_(d+1)/gamma_d)/2) (note 2.7)",
            description="largest principal angle (rad) between the row space of W and span(v_1..v_d)",
        ),
    ]
    if cfg.data.n_test:
        f_meas = xt @ w_final.T
        f_pred = theory.final_embedding(gamma, cfg.d, xt)
        checks.append(
            compare.check(
                "test_gram_rel_error",
                compare.gram_relative_error(f_meas, f_pred),
                1e-2,
                kind="theory",
                reason="theory note 6.7 (criterion 1e-2): on new inputs f(x) = Lambda^(-1/2) V_d^T x up to a "
                "rotation; the rotation-free Gram matrix must agree to 1e-2",
                description=f"relative Frobenius error of the {cfg.data.n_test}x{cfg.data.n_test} Gram matrix of "
                "held-out embeddings, trained vs predicted",
            )
        )

    # Cruder amplitude conventions, reported (not gated) so users can see why Gram-Schmidt matters.
    diagnostics = {}
    for method in ("projection", "isotropic"):
        a = theory.eigenbasis_amplitudes(g, v, w0, method)
        alt = np.sort(theory.map_crossing_steps(g[: cfg.d], a, lr))
        err = compare.relative_errors(alt, measured)
        diagnostics[f"step_time_rel_error_max_{method}"] = float(np.max(np.abs(err[gated]))) if gated.any() else None

    return write_exact_run(out_dir, cfg, t0, EXPERIMENT, traj, traj.time, pred, steps, g, lr, cmp, gated, checks,
                           head={"m": m}, tail={"principal_angles": angles, "diagnostics": diagnostics})


def write_exact_run(out_dir: Path, cfg, t0: float, experiment: str, traj, time_axis: np.ndarray, pred, steps: int,
                    g: np.ndarray, lr: float, cmp, gated: np.ndarray, checks: list, *, head: dict, tail: dict,
                    arrays: dict | None = None, figure: Path | None = None, title: str | None = None) -> dict:
    """Write ``trajectory.npz`` (measured and predicted curves, ``cmp``'s arrays, ``arrays``), the figure drawn from it
    (``figure``, default ``linear_bt.png``, with ``title``) and ``results.json`` (summary: ``head``, the step
    statistics, ``tail``) of a run compared with its exact theory (linear_bt, kernel_bt). Returns the results."""
    from stepwise.plots.linear_bt import plot_linear_bt

    pred_curves = np.sort(pred.eigenvalue_curves(steps), axis=1)[:, ::-1]
    out_dir.mkdir(parents=True, exist_ok=True)
    io.save_npz_atomic(
        out_dir / "trajectory.npz", step=traj.step, time=time_axis, eigenvalues=traj.eigenvalues, loss=traj.loss,
        predicted_eigenvalues=pred_curves, predicted_loss=theory.predicted_loss(pred_curves), gammas=g[: cfg.d + 5],
        lr=np.float64(lr), **cmp.arrays(), **(arrays or {}),
    )
    figure = plot_linear_bt(out_dir, figure, title=title)
    summary = {
        **head, "lr": lr, "steps": steps, "gamma_top": g[: cfg.d + 1], "gamma_ratios": g[1 : cfg.d + 1] / g[: cfg.d],
        "amplitudes": pred.amplitudes, "predicted_steps": cmp.predicted, "measured_steps": cmp.measured,
        "rel_errors": cmp.rel_errors, "gated": gated, "separation_ratios": cmp.separation, **tail,
    }
    return io.write_results(
        out_dir, experiment=experiment, config={**dataclasses.asdict(cfg), "crop_size": cfg.data.crop_size},
        checks=checks, wall_time_s=time.perf_counter() - t0,
        extra={"summary": summary, "figures": [figure.name], "data": ["trajectory.npz"]},
    )
