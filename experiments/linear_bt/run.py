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
from stepwise.data import Augmentation, augment_batch, load_images, make_pairs
from stepwise.theory import linear as theory
from stepwise.training import train_linear_bt

EXPERIMENT = "linear_bt"


def _images(cfg: LinearBTConfig) -> np.ndarray:
    ds = load_images(cfg.dataset, cfg.n_pairs + cfg.n_test, seed=cfg.seed, data_dir=cfg.data_dir)
    h, w, _ = ds.image_shape
    if cfg.crop_size > min(h, w):
        raise ValueError(f"crop {cfg.crop_size} does not fit in {cfg.dataset} images of {h}x{w}")
    return ds.images


def _views(cfg: LinearBTConfig, images: np.ndarray, key: jax.Array):
    k_pairs, k_test = jax.random.split(key)
    aug = Augmentation(crop=(cfg.crop_size, cfg.crop_size))
    train, test = images[: cfg.n_pairs], images[cfg.n_pairs :]
    x1, x2 = make_pairs(aug, k_pairs, train)
    flat = lambda x: np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
    x1, x2 = flat(x1), flat(x2)
    xt = flat(augment_batch(aug, k_test, test)) if cfg.n_test else np.zeros((0, x1.shape[1]))
    if cfg.preprocess == "center":
        mu = np.concatenate([x1, x2]).mean(axis=0)
        x1, x2, xt = x1 - mu, x2 - mu, xt - mu
    return x1, x2, xt


def run(cfg: LinearBTConfig, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Run the experiment and write its files to ``out_dir``. Returns the results dictionary."""
    from stepwise.plots.linear_bt import plot_linear_bt

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    images = _images(cfg)  # every input error is raised here, before any compute
    key = jax.random.key(cfg.seed)
    k_data, k_w = jax.random.split(key)
    x1, x2, xt = _views(cfg, images, k_data)
    gamma = theory.cross_correlation(x1, x2)
    g, v = theory.eigh_desc(gamma)
    n_pos = int(np.sum(g > 0))
    if n_pos < cfg.d:
        raise ValueError(f"Gamma has only {n_pos} positive eigenvalues, so d = {cfg.d} modes cannot all be learned; use d <= {n_pos}")
    m = gamma.shape[0]
    w0 = cfg.init_scale / math.sqrt(g[0]) * np.asarray(jax.random.normal(k_w, (cfg.d, m)), dtype=np.float64)
    lr = cfg.lr_scale * theory.stability_limit(g[0])

    pred = theory.predict(gamma, w0, lr, eig=(g, v))
    last = int(np.argmax(pred.mode_steps))
    steps = cfg.steps or int(math.ceil(pred.mode_steps[last] + 6 * pred.widths[last]))
    traj = train_linear_bt(gamma, w0, lr, steps, basis=cfg.basis, progress=progress, eig=(g, v))

    measured = compare.crossing_times(traj.step, traj.eigenvalues, 0.5, interp="logit")
    predicted = pred.step_times
    rel = compare.relative_errors(predicted, measured)
    gated = theory.separated_modes(g, cfg.d, cfg.gate_ratio)

    # Loss plateaus at the midpoints between consecutive predicted steps, where the steps are distinct.
    sep = pred.separation()
    mids = 0.5 * (predicted[:-1] + predicted[1:])
    plateau_ok = sep >= cfg.plateau_separation
    plateau_expected = cfg.d - np.arange(1, cfg.d)
    plateau_loss = compare.values_at(traj.step, traj.loss, mids)

    w_final = traj.w_final
    angles = compare.principal_angles(w_final.T, v[:, : cfg.d])
    rank = compare.rank_trajectory(traj.eigenvalues, 0.5)

    checks = [
        compare.check(
            "step_time_rel_error_median",
            np.median(np.abs(rel[gated])) if gated.any() else np.nan,
            0.02,
            reason="Gram-Schmidt amplitudes + the exact per-mode GD map are exact up to mode-interaction terms "
            "that vanish with the initial scale; the issue's acceptance bound is 2%",
            description="median |predicted - measured| / measured half-rise step over gated modes",
            predicted=predicted[gated],
            measured=measured[gated],
        ),
        compare.check(
            "step_time_rel_error_max",
            np.max(np.abs(rel[gated])) if gated.any() else np.nan,
            0.05,
            reason="theory note 6.3: <= 5% for modes whose neighbours have gamma_{j+1}/gamma_j <= 0.93-0.95 "
            "(observed <= 1.5% on synthetic spectra)",
            description="largest |relative error| of the half-rise step over gated modes",
        ),
        compare.check(
            "gated_modes",
            int(gated.sum()),
            min(3, cfg.d),
            op=">=",
            reason="the step-time checks must test several modes to mean anything",
            description=f"modes whose neighbours satisfy gamma_(j+1)/gamma_j <= {cfg.gate_ratio}",
            measured=np.flatnonzero(gated) + 1,
        ),
        compare.check(
            "loss_plateau_max_abs_error",
            np.max(np.abs(plateau_loss - plateau_expected)[plateau_ok]) if plateau_ok.any() else np.nan,
            0.1,
            reason=f"between steps separated by >= {cfg.plateau_separation} rise-widths both neighbouring "
            "logistics are within ~1% of their plateau, so L = d - k to ~0.03 if the theory holds",
            description="max |L - (d - k)| at midpoints between predicted steps k and k+1 that are distinct",
            predicted=plateau_expected[plateau_ok],
            measured=plateau_loss[plateau_ok],
        ),
        compare.check(
            "final_whitening_error",
            math.sqrt(max(traj.loss[-1], 0.0)),
            1e-3,
            reason="theory note 6.7: the minimum reached has C = W Gamma W^T = I exactly",
            description="||C - I||_F at the end of training",
        ),
        compare.check(
            "final_rowspace_max_angle",
            float(np.max(angles)),
            1e-2,
            reason="theory note 6.7: small initialisation selects exactly the top-d eigenvectors of Gamma; "
            "leakage of mode d+1 is ~ lambda_d(0)^((1 - gamma_(d+1)/gamma_d)/2)",
            description="largest principal angle (rad) between the row space of W and span(v_1..v_d)",
        ),
        compare.check(
            "rank_max_increment",
            int(np.max(np.diff(rank))) if rank.size > 1 else 0,
            1,
            reason="theory note 6.6: the number of eigenvalues of C above 1/2 grows by exactly one per step",
            description="largest increase of rank(C >= 1/2) between consecutive steps (final rank "
            f"{int(rank[-1])} of {cfg.d})",
        ),
    ]
    if cfg.n_test:
        f_meas = xt @ w_final.T
        f_pred = theory.final_embedding(gamma, cfg.d, xt)
        checks.append(
            compare.check(
                "test_gram_rel_error",
                compare.gram_relative_error(f_meas, f_pred),
                1e-2,
                reason="theory note 6.7: on new inputs f(x) = Lambda^(-1/2) V_d^T x up to a rotation; the "
                "rotation-free Gram matrix must agree to 1e-2",
                description=f"relative Frobenius error of the {cfg.n_test}x{cfg.n_test} Gram matrix of held-out "
                "embeddings, trained vs predicted",
            )
        )

    # Cruder amplitude conventions, reported (not gated) so users can see why Gram-Schmidt matters.
    diagnostics = {}
    for method in ("projection", "isotropic"):
        a = theory.eigenbasis_amplitudes(g, v, w0, method)
        alt = np.sort(theory.map_crossing_steps(g[: cfg.d], a, lr))
        err = compare.relative_errors(alt, measured)
        diagnostics[f"step_time_rel_error_max_{method}"] = float(np.max(np.abs(err[gated]))) if gated.any() else None

    pred_curves = np.sort(pred.eigenvalue_curves(steps), axis=1)[:, ::-1]
    out_dir.mkdir(parents=True, exist_ok=True)
    io.save_npz_atomic(
        out_dir / "trajectory.npz",
        step=traj.step,
        time=traj.time,
        eigenvalues=traj.eigenvalues,
        loss=traj.loss,
        predicted_eigenvalues=pred_curves,
        predicted_loss=theory.predicted_loss(pred_curves),
        predicted_steps=predicted,
        measured_steps=measured,
        gated=gated,
        gammas=g[: cfg.d + 5],
        plateau_midpoints=mids,
        plateau_loss=plateau_loss,
        plateau_checked=plateau_ok,
        lr=np.float64(lr),
    )
    figure = plot_linear_bt(out_dir)
    summary = {
        "m": m,
        "lr": lr,
        "steps": steps,
        "gamma_top": g[: cfg.d + 1],
        "gamma_ratios": g[1 : cfg.d + 1] / g[: cfg.d],
        "amplitudes": pred.amplitudes,
        "predicted_steps": predicted,
        "measured_steps": measured,
        "rel_errors": rel,
        "gated": gated,
        "separation_ratios": sep,
        "principal_angles": angles,
        "diagnostics": diagnostics,
    }
    return io.write_results(
        out_dir,
        experiment=EXPERIMENT,
        config={**dataclasses.asdict(cfg), "crop_size": cfg.crop_size},
        checks=checks,
        wall_time_s=time.perf_counter() - t0,
        extra={"summary": summary, "figures": [figure.name], "data": ["trajectory.npz"]},
    )
