"""Runner for the width-sweep experiment (Simon et al. 2023, NTK extension; theory note 3 and 6.9).

For each hidden width and each of ``n_seeds`` network seeds: a one-hidden-layer ReLU MLP (:class:`stepwise.models.MLP`)
in float64, centred so the initial function is ~0 (g = f(theta) - f(theta_0), started at theta_0 + delta, see the
config), trained by full-batch GD on ||C - I||_F^2 over the fixed pairs until past the last predicted step. Its
held-out embedding is compared, up to rotation, with the kernel prediction
:func:`stepwise.theory.kernel.predict_embeddings` of the infinite-width NTK of the same architecture
(:func:`stepwise.ntk.infinite_ntk`, one per width, shared by the seeds) and of its own empirical NTK at
initialisation. Every step of every net is also predicted from its own empirical NTK at initialisation (neural-tangents
through :mod:`stepwise.ntk`) by the kernel theory (:func:`stepwise.theory.kernel.predict`) and compared with the
measured half-rise of the eigenvalues of C (issue 12 item 5). The trend with width is judged on the mean over the
seeds. The infinite-width point is the kernel
machine on the widest architecture's stax NTK trained by GD (:func:`stepwise.training.train_kernel_bt`). Writes
``width_sweep.npz``, ``width_sweep.png`` (drawn from it) and ``results.json`` (last), each atomically.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from stepwise._compat import enable_x64
from experiments.width_sweep.config import WidthSweepConfig
from stepwise import compare, io
from stepwise.compare.width_sweep import linearised_checks, random_function_errors, step_time_statistics, sweep_checks
from experiments.width_sweep.nets import choose_d, stax_prediction, sweep_width
from stepwise.theory import kernel as theory
from stepwise.training.small_init import train_kernel_small_init

EXPERIMENT = "width_sweep"
FIGURE = "width_sweep.png"
DATA = "width_sweep.npz"


def net_seed(cfg: WidthSweepConfig, s: int, i: int) -> int:
    """The integer init seed of network seed ``s`` at width index ``i`` (s = 0: the single-seed run's seeds)."""
    if s == 0:
        return 1000 * cfg.seed + i
    return int(np.random.SeedSequence([cfg.seed, s, i]).generate_state(1)[0] >> 1)


def net_key(k_nets: jax.Array, s: int, i: int) -> jax.Array:
    """The key of network seed ``s``'s delta at width index ``i`` (s = 0: the single-seed run's keys)."""
    k = jax.random.fold_in(k_nets, i)
    return k if s == 0 else jax.random.fold_in(k, s)


def kernel_limit(cfg: WidthSweepConfig, k: np.ndarray, kt: np.ndarray, d: int, key: jax.Array) -> dict:
    """The infinite-width point: the kernel machine f = B k(x) on the stax NTK, trained by GD from small B."""
    g, a = theory.contrastive_eigh(k, ridge=cfg.ridge)
    traj = train_kernel_small_init(k, (g, a), d, key, init_scale=cfg.init_scale, lr_scale=cfg.lr_scale,
                                   extra_widths=cfg.extra_widths).traj
    f_test, p = kt @ traj.b_final.T, theory.predict_embeddings(k, kt, d, eig=(g, a))
    return {"gram": compare.gram_relative_error(f_test, p), "proj": compare.projector_distance(f_test, p),
            "final_loss": float(traj.loss[-1])}


def run(cfg: WidthSweepConfig, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Run the experiment and write its files to ``out_dir``. Returns the results dictionary."""
    from stepwise.plots.width_sweep import plot_width_sweep

    del progress  # every width is a few thousand fused GD updates; nothing to report in between
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    (x1, x2, xt), (k_nets, k_limit) = cfg.data.load(cfg.seed, 2)  # input errors are raised here, before any compute
    m = x1.shape[1]
    with enable_x64(True):
        xs = jnp.asarray(np.concatenate([x1, x2]).reshape(-1, 1, 1, m))  # (2n, ...) ordered (x_1..x_n, x'_1..x'_n)
        xts = jnp.asarray(xt.reshape(-1, 1, 1, m))
        d, ratios = choose_d(cfg, m, xs)
        cfg = dataclasses.replace(cfg, d=d)
        stax = [stax_prediction(cfg, w, xs, xts, cfg.d) for w in cfg.widths]
        last = len(cfg.widths) - 1
        runs = [[sweep_width(cfg, w, xs, xts, cfg.d, net_seed(cfg, s, i), net_key(k_nets, s, i), stax[i],
                             linearised=s == 0 and i == last)
                 for i, w in enumerate(cfg.widths)] for s in range(cfg.n_seeds)]
        limit = kernel_limit(cfg, stax[-1]["k"], stax[-1]["kt"], cfg.d, k_limit)
    null = np.stack([random_function_errors(st["kt"], st["predicted"], cfg.n_draws, cfg.seed) for st in stax])

    widths = np.asarray(cfg.widths, dtype=np.int64)
    per_seed = {name: np.asarray([[r[name] for r in seed_runs] for seed_runs in runs]) for name in
                ("gram_inf", "proj_inf", "gram_emp", "proj_emp", "ntk_rel_diff", "final_loss", "lr", "steps",
                 "pred_steps", "meas_steps", "step_rel_err", "pred_amplitudes", "pred_gammas")}
    mean = {name: v.mean(axis=0) for name, v in per_seed.items()}  # (W,) seed means
    step_stats = step_time_statistics(per_seed["pred_steps"], per_seed["meas_steps"])
    widest = runs[0][-1]
    checks = [*sweep_checks(cfg.widths, cfg.monotone_tolerance, per_seed, null, limit["gram"]),
              *linearised_checks(cfg.widths[-1], widest["pred_steps"], widest["meas_steps"], widest["meas_steps_lin"])]
    by_name = {c.name: c for c in checks}
    out_dir.mkdir(parents=True, exist_ok=True)
    first = runs[0]
    steps_max = int(per_seed["steps"][0].max()) + 1
    loss_curves = np.full((len(first), steps_max), np.nan)
    eig_curves = np.full((len(first), steps_max, cfg.d), np.nan)
    for i, r in enumerate(first):
        loss_curves[i, : r["losses"].size] = r["losses"]
        eig_curves[i, : r["eigenvalues"].shape[0]] = r["eigenvalues"]
    io.save_npz_atomic(
        out_dir / DATA, widths=widths,
        **{k: mean[k] for k in ("gram_inf", "proj_inf", "gram_emp", "proj_emp", "ntk_rel_diff", "final_loss")},
        **{f"{k}_seeds": per_seed[k] for k in ("gram_inf", "proj_inf", "gram_emp", "proj_emp")},
        lr=per_seed["lr"][0], limit_gram=np.float64(limit["gram"]), limit_proj=np.float64(limit["proj"]),
        loss_curves=loss_curves, random_gram=null,
        random_gram_threshold=np.float64(by_name["widest_gram_vs_random_function"].threshold),
        # (n_seeds, W, d) half-rise steps of the j-th largest eigenvalue of C: predicted from each net's own NTK at
        # initialisation, measured on the net; and the first seed's eigenvalues of C at every update (W, T, d).
        # The prediction's inputs (contrastive eigenvalues of the own NTK, Gram-Schmidt amplitudes, lr) per net, so
        # the predicted steps can be recomputed from this file with stepwise.theory.linear.map_crossing_steps.
        pred_steps=per_seed["pred_steps"], meas_steps=per_seed["meas_steps"], eig_curves=eig_curves,
        pred_gammas=per_seed["pred_gammas"], pred_amplitudes=per_seed["pred_amplitudes"], lr_seeds=per_seed["lr"],
        meas_steps_linearised=widest["meas_steps_lin"],  # (d,) the first widest net's linearisation
    )
    figure = plot_width_sweep(out_dir, out_dir / FIGURE)
    summary = {
        "two_n": int(xs.shape[0]), "m": m, "d": cfg.d, "gamma_ratios_widest_stax": ratios, "n_seeds": cfg.n_seeds,
        "per_width": [
            {"width": w, **{k: mean[k][i] for k in ("gram_inf", "proj_inf", "gram_emp", "proj_emp", "ntk_rel_diff",
                                                      "final_loss")},
             **{f"{k}_seeds": per_seed[k][:, i] for k in ("gram_inf", "proj_inf", "gram_emp", "final_loss", "lr",
                                                          "steps")},
             **{f"{k}_seeds": per_seed[k][:, i] for k in ("pred_steps", "meas_steps", "step_rel_err")},
             "step_err_median_seeds": step_stats["median"][:, i], "step_err_median": step_stats["mean_median"][i],
             "step_err_max": step_stats["max"][i],
             "random_gram_mean": float(null[i].mean()), "random_gram_std": float(null[i].std()),
             "gammas_inf": stax[i]["gammas"], "gammas_emp_seed0": first[i]["gammas_emp"],
             "init_seeds": [runs[s][i]["seed"] for s in range(cfg.n_seeds)]}
            for i, w in enumerate(cfg.widths)],
        "gram_loglog_slope": by_name["gram_error_loglog_slope"].value,
        "step_err_median": step_stats["mean_median"], "step_err_max": step_stats["max"],
        "meas_steps_linearised_widest_seed0": widest["meas_steps_lin"],
        "kernel_limit": limit,
        "figure": str(figure.name),
    }
    return io.write_results(
        out_dir, experiment=EXPERIMENT, config={**dataclasses.asdict(cfg), "crop_size": cfg.data.crop_size},
        checks=checks, wall_time_s=time.perf_counter() - t0,
        extra={"summary": summary, "figures": [FIGURE], "data": [DATA]},
    )
