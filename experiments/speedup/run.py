"""Runner for the speed-up experiment (Simon et al. 2023, section 5): plain Barlow Twins vs gradient focused on small
eigendirections, in the linear model (closed forms) and on an MLP (measured).

Writes to ``out_dir`` (each file atomically, results.json last): ``speedup.npz`` (every run's eigenvalues and loss,
the predicted curves and step times, the MLP's held-out losses), ``speedup.png`` (drawn from that file) and
``results.json``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import numpy as np

from experiments.speedup.config import SpeedupConfig
from experiments.speedup.deep import run_deep_pair
from experiments.speedup.linear import train_variant
from stepwise import io
from stepwise.compare.speedup import deep_checks, linear_checks
from stepwise.theory import linear
from stepwise.theory import speedup as theory
from stepwise.training import train_linear_bt
from stepwise.training.small_init import settle_steps

EXPERIMENT = "speedup"
DATA = "speedup.npz"
BOOSTED = ("boost", "input_boost")

RANDOM_INIT_TAG = 1  # fold_in tag of the random W(0)'s key (the data and U use split(key(seed)))


def aligned_init(g: np.ndarray, d: int, init_scale: float, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """W(0) = U S(0) V_d^T in the eigenbasis of Gamma, (d, m): U random orthogonal, s_j(0) = init_scale/sqrt(gamma_1).

    Returns ``(w0_eigenbasis, a0)`` with a0 = gamma_j s_j(0)^2 = init_scale^2 gamma_j / gamma_1.
    """
    q, r = np.linalg.qr(np.asarray(jax.random.normal(key, (d, d)), dtype=np.float64))
    u = q * np.sign(np.diag(r))[None, :]
    s0 = init_scale / math.sqrt(g[0])
    w0 = np.zeros((d, g.size))
    w0[:, :d] = u * s0
    return w0, g[:d] * s0**2


def run_linear(cfg: SpeedupConfig, *, progress: bool = False) -> dict:
    """Train the four variants of the linear model; returns predictions, runs and arrays (no checks)."""
    images = cfg.data.images(cfg.seed)  # input errors are raised here, before any compute
    k_data, k_u = jax.random.split(jax.random.key(cfg.seed))
    x1, x2, _ = cfg.data.views(images, k_data)
    gamma = linear.cross_correlation(x1, x2)
    g, v = linear.eigh_desc(gamma)
    rank = cfg.effective_rank
    n_pos = int(np.sum(g > 0))
    if n_pos < rank:
        raise ValueError(f"Gamma has only {n_pos} positive eigenvalues; d = {cfg.d} and the preconditioner's rank "
                         f"{rank} need at least that many (use d, rank <= {n_pos})")
    w0, a0 = aligned_init(g, cfg.d, cfg.init_scale, k_u)
    preds, runs = _train_all(cfg, g, w0, a0, progress)
    reference = train_linear_bt(gamma, w0 @ v.T, preds["plain"].lr, runs["plain"].step.size - 1, basis="eigen",
                                eig=(g, v))
    out = {"gamma_eigs": g, "a0": a0, "m": int(g.size), "predictions": preds, "runs": runs, "reference": reference}
    if cfg.random_init:
        # linear_bt's initialisation: i.i.d. entries of std init_scale / sqrt(gamma_1); amplitudes by Gram-Schmidt
        w0r = cfg.init_scale / math.sqrt(g[0]) * np.asarray(
            jax.random.normal(jax.random.fold_in(jax.random.key(cfg.seed), RANDOM_INIT_TAG), (cfg.d, g.size)),
            dtype=np.float64)
        ar = linear.eigenbasis_amplitudes(g, v, w0r, "gram_schmidt")
        out["random"] = dict(zip(("predictions", "runs"), _train_all(cfg, g, w0r @ v, ar, progress)), a0=ar)
    return out


def _train_all(cfg: SpeedupConfig, g: np.ndarray, w0: np.ndarray, a0: np.ndarray, progress: bool):
    """Predict and train every variant from ``w0`` (eigenbasis of Gamma) with initial amplitudes ``a0``."""
    preds, runs = {}, {}
    for variant in theory.VARIANTS:
        eps = cfg.eps if variant in BOOSTED else None
        pred = theory.predict(g, a0, variant, lr_scale=cfg.lr_scale, eps=eps, rank=cfg.effective_rank)
        steps = settle_steps(pred, cfg.settle_widths)
        rates = theory.mode_rates(g, variant, cfg.effective_rank)
        runs[variant] = train_variant(g, rates, w0, pred.lr, steps, eps=eps, progress=progress)
        preds[variant] = pred
    return preds, runs


def run(cfg: SpeedupConfig, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Run both parts and write the run directory. Returns the results dictionary."""
    from stepwise.plots.speedup import plot_speedup

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    lin = run_linear(cfg, progress=progress)
    t_linear = time.perf_counter() - t0
    checks, summary = linear_checks(lin, d=cfg.d, lr_scale=cfg.lr_scale)
    measured = summary.pop("measured")
    arrays: dict = {"gammas": summary["gammas"], "amplitudes": lin["a0"], "variants": np.array(theory.VARIANTS),
                    "d": np.int64(cfg.d)}
    for variant in theory.VARIANTS:
        r, p = lin["runs"][variant], lin["predictions"][variant]
        curves = theory.gd_eigenvalues(p.rates, p.amplitudes, p.lr, r.step.size - 1, eps=p.eps)
        curves = np.sort(curves, axis=1)[:, ::-1]
        arrays |= {f"{variant}_step": r.step, f"{variant}_eigenvalues": r.eigenvalues, f"{variant}_loss": r.loss,
                   f"{variant}_predicted_eigenvalues": curves,
                   f"{variant}_predicted_loss": np.sum((1.0 - curves) ** 2, axis=1),
                   f"{variant}_predicted_steps": p.step_times, f"{variant}_measured_steps": measured[variant],
                   f"{variant}_flow_steps": np.sort(p.flow_steps), f"{variant}_lr": np.float64(p.lr)}
    if "random_init" in summary:
        rnd = summary["random_init"]
        for variant in theory.VARIANTS:
            arrays[f"random_{variant}_measured_steps"] = rnd["measured_steps"][variant]
            arrays[f"random_{variant}_predicted_steps"] = rnd["predicted_steps"][variant]
    result_summary: dict = {"linear": summary, "linear_time_s": t_linear}
    if cfg.deep.run:
        t1 = time.perf_counter()
        pairs = [run_deep_pair(cfg, seed, progress=progress) for seed in range(cfg.deep.seeds)]
        d_checks, d_summary = deep_checks(pairs, track_every=cfg.deep.track_every, loss_level=cfg.deep.loss_level,
                                          n_eval=cfg.deep.n_eval, d=cfg.deep.d)
        checks += d_checks
        result_summary |= {"deep": d_summary, "deep_time_s": time.perf_counter() - t1}
        arrays |= {"deep_seeds": np.array([p.seed for p in pairs]), "deep_level": np.float64(cfg.deep.loss_level),
                   "deep_last_step_plain": d_summary["last_step_plain"],
                   "deep_last_step_boost": d_summary["last_step_boost"],
                   "deep_predicted_plain": d_summary["predicted_last_step_plain"],
                   "deep_predicted_boost": d_summary["predicted_last_step_boost"]}
        for p in pairs:
            arrays[f"deep_s{p.seed}_step"] = p.step
            for k in ("plain", "boost"):
                arrays[f"deep_s{p.seed}_{k}_loss"] = p.loss[k]
                arrays[f"deep_s{p.seed}_{k}_eigenvalues"] = p.eigenvalues[k]
    out_dir.mkdir(parents=True, exist_ok=True)
    io.save_npz_atomic(out_dir / DATA, **arrays)
    figure = plot_speedup(out_dir)
    return io.write_results(
        out_dir, experiment=EXPERIMENT, config={**dataclasses.asdict(cfg), "effective_rank": cfg.effective_rank},
        checks=checks, wall_time_s=time.perf_counter() - t0,
        extra={"summary": result_summary, "figures": [figure.name], "data": [DATA]},
    )
