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

from experiments.linear_bt.config import LinearBTConfig
from experiments.linear_bt.run import fixed_pair_images, fixed_pair_views
from experiments.speedup.config import SpeedupConfig
from experiments.speedup.deep import DeepPair, run_deep_pair
from experiments.speedup.linear import train_variant
from stepwise import compare, io
from stepwise.theory import linear
from stepwise.theory import speedup as theory
from stepwise.training import train_linear_bt

EXPERIMENT = "speedup"
DATA = "speedup.npz"
BOOSTED = ("boost", "input_boost")

# The per-mode GD map is exact for aligned initialisation; the prediction differs from the run only by the map's
# geometric jump (relative 1e-8 in lambda, i.e. ~1e-8 / (2 ln(1 + x)) steps) and float64 round-off: 1e-6 of a step
# time is a hundred times that for every rate these configs allow (x >= 1e-4).
MAP_RTOL = 1e-6
# Theory note 6.3: from a small random initialisation, Gram-Schmidt amplitudes predict every half-rise step within 5%
# for modes with a_j <= 1e-4 whose neighbours satisfy gamma_(j+1)/gamma_j <= 0.93.
RANDOM_RTOL, RANDOM_GATE_RATIO, RANDOM_MAX_AMPLITUDE = 0.05, 0.93, 1e-4
RANDOM_INIT_TAG = 1  # fold_in tag of the random W(0)'s key (the data and U use split(key(seed)))


def _linear_bt_config(cfg: SpeedupConfig) -> LinearBTConfig:
    return LinearBTConfig(dataset=cfg.dataset, n_pairs=cfg.n_pairs, crop=cfg.crop, d=cfg.d, preprocess=cfg.preprocess,
                          init_scale=cfg.init_scale, lr_scale=0.5, n_test=0, seed=cfg.seed, data_dir=cfg.data_dir)


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
    lcfg = _linear_bt_config(cfg)
    images = fixed_pair_images(lcfg)  # input errors are raised here, before any compute
    k_data, k_u = jax.random.split(jax.random.key(cfg.seed))
    x1, x2, _ = fixed_pair_views(lcfg, images, k_data)
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
        last = int(np.argmax(pred.mode_steps))
        steps = int(math.ceil(pred.last_step + cfg.settle_widths * pred.widths[last]))
        rates = theory.mode_rates(g, variant, cfg.effective_rank)
        runs[variant] = train_variant(g, rates, w0, pred.lr, steps, eps=eps, progress=progress)
        preds[variant] = pred
    return preds, runs


def _flow_ratio(plain: theory.SpeedupPrediction, other: theory.SpeedupPrediction) -> float:
    return float(np.max(plain.flow_steps) / np.max(other.flow_steps))


def linear_checks(cfg: SpeedupConfig, lin: dict) -> tuple[list, dict]:
    """Checks and summary of the linear part."""
    preds, runs = lin["predictions"], lin["runs"]
    measured = {k: compare.crossing_times(r.step, r.eigenvalues, 0.5, interp="logit") for k, r in runs.items()}
    checks, summary = [], {"variants": {}}
    for variant in theory.VARIANTS:
        p, m = preds[variant], measured[variant]
        rel = compare.relative_errors(p.step_times, m)
        checks.append(compare.check(
            f"step_time_rel_error_max_{variant}", float(np.max(np.abs(rel))), MAP_RTOL, kind="theory",
            reason="aligned initialisation decouples the modes exactly (stepwise.theory.speedup), so the d x m GD run "
            "and the per-mode GD map differ only by round-off and the map's 1e-8 geometric jump",
            description=f"{variant}: largest relative error of the {cfg.d} half-rise steps, d x m GD vs the exact "
            "per-mode map", predicted=p.step_times, measured=m))
        summary["variants"][variant] = {
            "lr": p.lr, "lr_limit": p.lr_limit, "steps": int(runs[variant].step.size - 1), "rates": p.rates,
            "predicted_steps": p.step_times, "measured_steps": m, "flow_steps": np.sort(p.flow_steps),
            "last_step_predicted": p.last_step, "last_step_measured": float(np.max(m)),
            "x_max_last_mode": float(p.x_max[int(np.argmax(p.mode_steps))]),
        }
    plain_last = float(np.max(measured["plain"]))
    x_plain = summary["variants"]["plain"]["x_max_last_mode"]
    for variant in theory.VARIANTS[1:]:
        p = preds[variant]
        ratio = plain_last / float(np.max(measured[variant]))
        ratio_map = preds["plain"].last_step / p.last_step
        ratio_flow = _flow_ratio(preds["plain"], p)
        summary["variants"][variant] |= {"speedup_measured": ratio, "speedup_map": ratio_map,
                                         "speedup_flow": ratio_flow}
        checks.append(compare.check(
            f"last_step_speedup_{variant}", abs(ratio / ratio_map - 1.0), MAP_RTOL, kind="theory",
            reason="the last step time t_d falls by the factor the exact per-mode GD maps predict; both runs are "
            "exact up to round-off (see the step-time checks)",
            description=f"|measured / predicted - 1| of t_d(plain) / t_d({variant}) = {ratio:.4g} (predicted "
            f"{ratio_map:.4g}), each at lr_scale = {cfg.lr_scale} of its own stability limit",
            predicted=ratio_map, measured=ratio))
        x_v = summary["variants"][variant]["x_max_last_mode"]
        err = abs(ratio / ratio_flow - 1.0)
        if x_v / 2 < 0.5:
            # |flow/GD - 1| <= x/2 for each run (x/2 is the first-order term; tests/test_theory_speedup.py checks the
            # bound), so the ratio of two runs lies within (x_plain/2 + x_v/2)/(1 - x_v/2) of the flow ratio.
            bound = (x_plain / 2 + x_v / 2) / (1 - x_v / 2)
            checks.append(compare.check(
                f"last_step_speedup_flow_{variant}", err, bound, kind="theory",
                reason="closed-form flow prediction; threshold = the GD discretisation error of the two runs' last "
                f"modes, (x_plain/2 + x/2)/(1 - x/2) with x = 4 lr g kappa(0) = {x_plain:.3g} (plain), {x_v:.3g}",
                description=f"|measured / closed form - 1| of the t_d reduction; closed form {ratio_flow:.4g} "
                "(input: gamma_1/gamma_d; boost: (1+eps) L / (eps L + ln 2(1-a)), L = logit range)",
                predicted=ratio_flow, measured=ratio))
        else:
            checks.append(compare.check(
                f"last_step_speedup_flow_{variant}", err, None, kind="reported",
                reason=f"the last mode's per-step logit rate x = {x_v:.3g} is not small, so the flow closed form is "
                "not a GD prediction at this learning rate (the exact map is gated instead)",
                description=f"|measured / closed form - 1| of the t_d reduction; closed form {ratio_flow:.4g}",
                predicted=ratio_flow, measured=ratio))
    whitening = {k: float(np.sqrt(r.loss[-1])) for k, r in runs.items()}
    checks.append(compare.check(
        "final_whitening_error_max", max(whitening.values()), 1e-3, kind="theory",
        reason="theory note 6.7 (criterion 1e-3): every variant has the same minimum C = I (K and M positive "
        "definite change the path, not the fixed points), reached after settle_widths rise widths",
        description="largest ||C - I||_F at the end of each variant's run", measured=whitening))
    ref, plain = lin["reference"], runs["plain"]
    diff = float(np.max(np.abs(ref.eigenvalues - plain.eigenvalues)))
    n = plain.step.size - 1
    tol = 100.0 * max(n, 1) * float(np.finfo(np.float64).eps)
    checks.append(compare.check(
        "plain_matches_train_linear_bt", diff, tol, kind="consistency",
        reason="the same update by two implementations (this experiment's preconditioned trainer with K = M = I, "
        "stepwise.training.train_linear_bt); round-off grows at most ~ steps x eps64 per unit eigenvalue, x100 margin",
        description=f"max |difference| of the eigenvalues of C over all {n} GD steps"))
    if "random" in lin:
        r_checks, summary["random_init"] = random_init_checks(cfg, lin)
        checks += r_checks
    summary |= {"gammas": lin["gamma_eigs"][: cfg.d + 2], "gamma_ratio_1_d": float(lin["gamma_eigs"][0] /
                lin["gamma_eigs"][cfg.d - 1]), "amplitudes": lin["a0"], "m": lin["m"], "whitening": whitening}
    return checks, summary | {"measured": measured}


def random_init_checks(cfg: SpeedupConfig, lin: dict) -> tuple[list, dict]:
    """From linear_bt's random initialisation: step times against Gram-Schmidt amplitudes + the exact maps."""
    g, rnd = lin["gamma_eigs"], lin["random"]
    preds, runs = rnd["predictions"], rnd["runs"]
    gated = linear.separated_modes(g, cfg.d, RANDOM_GATE_RATIO) & (rnd["a0"] <= RANDOM_MAX_AMPLITUDE)
    measured = {k: compare.crossing_times(r.step, r.eigenvalues, 0.5, interp="logit") for k, r in runs.items()}
    rel = {k: compare.relative_errors(preds[k].step_times, measured[k]) for k in runs}
    # the j-th event is gated when the mode that makes it is (the same sorting as linear_bt)
    order = {k: np.argsort(preds[k].mode_steps, kind="stable") for k in runs}
    worst = {k: float(np.max(np.abs(rel[k][gated[order[k]]]))) if gated.any() else float("nan") for k in runs}
    top = np.eye(g.size)[:, : cfg.d]  # span(v_1..v_d) in the eigenbasis the runs are recorded in
    angles = {k: float(np.max(compare.principal_angles(r.w_final.T, top))) for k, r in runs.items()}
    ratio = {k: float(np.max(measured["plain"]) / np.max(measured[k])) for k in runs}
    ratio_pred = {k: preds["plain"].last_step / preds[k].last_step for k in runs}
    checks = []
    for variant in ("plain", "boost"):
        checks.append(compare.check(
            f"random_init_step_time_rel_error_max_{variant}", worst[variant], RANDOM_RTOL, kind="theory",
            reason="theory note 6.3 (criterion 5% for modes with a_j <= 1e-4 and neighbours gamma_(j+1)/gamma_j <= "
            "0.93): Gram-Schmidt amplitudes are exact up to mode-interaction terms; the boost rescales C's "
            "eigendirections, which are the modes' directions once they have appeared",
            description=f"{variant} from a random init: largest |relative error| of the {int(gated.sum())} gated "
            "half-rise steps vs Gram-Schmidt amplitudes + exact per-mode GD maps",
            predicted=preds[variant].step_times, measured=measured[variant]))
    bound = (1 + RANDOM_RTOL) / (1 - RANDOM_RTOL) - 1
    checks.append(compare.check(
        "random_init_last_step_speedup_boost", abs(ratio["boost"] / ratio_pred["boost"] - 1), bound, kind="theory",
        reason="two step times each within theory note 6.3's 5% give a ratio within 1.05/0.95 - 1",
        description=f"|measured / predicted - 1| of t_d(plain) / t_d(boost) from a random init = {ratio['boost']:.4g} "
        f"(predicted {ratio_pred['boost']:.4g})", predicted=ratio_pred["boost"], measured=ratio["boost"]))
    for variant in ("input", "input_boost"):
        checks.append(compare.check(
            f"random_init_last_step_speedup_{variant}", abs(ratio[variant] / ratio_pred[variant] - 1), None,
            kind="reported",
            reason="Gram-Schmidt amplitudes assume the modes are learned one at a time; the input preconditioner "
            "gives the top-d modes one rate, so their steps overlap and interact, and no error term bounds the "
            f"prediction (largest step-time error {worst[variant]:.3g})",
            description=f"|measured / predicted - 1| of t_d(plain) / t_d({variant}) from a random init = "
            f"{ratio[variant]:.4g} (predicted {ratio_pred[variant]:.4g})",
            predicted=ratio_pred[variant], measured=ratio[variant]))
    checks.append(compare.check(
        "random_init_rowspace_angle_input", angles["input"], angles["plain"], kind="reported", op="<=",
        reason="the input preconditioner gives modes beyond r the plain relative rates gamma_k / gamma_1 < 1 and the "
        "top r rate 1, which widens the spectral gap that selects span(v_1..v_d); reference = plain's angle",
        description="largest principal angle (rad) between the final row space of W and span(v_1..v_d), input "
        "preconditioning (plain's in threshold)", measured=angles))
    summary = {"gated": gated, "amplitudes": rnd["a0"], "step_time_rel_error_max": worst, "rowspace_angle": angles,
               "speedup_measured": ratio, "speedup_predicted": ratio_pred,
               "predicted_steps": {k: p.step_times for k, p in preds.items()}, "measured_steps": measured}
    return checks, summary


def deep_checks(cfg: SpeedupConfig, pairs: list[DeepPair]) -> tuple[list, dict]:
    """Checks and summary of the deep part."""
    plain = np.array([p.last_step["plain"] for p in pairs])
    boost = np.array([p.last_step["boost"] for p in pairs])
    # final loss: the held-out loss averaged over the last tenth of the tracking points (one point is one SGD
    # iterate's value, which fluctuates with the batch noise near the minimum)
    final = {k: np.array([np.mean(p.loss[k][-max(1, p.loss[k].size // 10):]) for p in pairs])
             for k in ("plain", "boost")}
    pred = {k: np.array([p.predicted[k].last_step for p in pairs]) for k in ("plain", "boost")}
    ratio = plain / boost
    every = cfg.deep_track_every
    level = cfg.deep_loss_level
    checks = [
        compare.check(
            "deep_last_step_gain_min", float(np.min(plain - boost)), 2 * every, kind="theory", op=">=",
            reason=f"Simon section 5 / the boost's derivation: focusing the gradient on modes that have not appeared "
            f"shortens the last step; gated at the resolution of the measurement (the held-out loss is tracked every "
            f"{every} steps, one interval per crossing), on every seed",
            description=f"min over {len(pairs)} seeds of t_d(plain) - t_d(boost) in SGD steps, t_d = first step with "
            f"held-out loss <= {level}; speed-ups {np.round(ratio, 2).tolist()}",
            predicted=pred["plain"] - pred["boost"], measured=plain - boost),
        compare.check(
            "deep_final_loss_excess_max", float(np.max(final["boost"] - final["plain"])), 0.1, kind="theory",
            reason="equal final loss: the boost changes the path, not the minimum (kappa(1) = 1); 0.1 is the plateau "
            "resolution of theory note 6.5",
            description="max over seeds of final held-out loss (boost) - (plain), same number of SGD steps; final = "
            "mean over the last tenth of the tracking points",
            measured={k: v.tolist() for k, v in final.items()}),
        compare.check(
            "deep_last_step_speedup", float(np.mean(ratio)), float(np.mean(pred["plain"] / pred["boost"])),
            kind="reported", op=">=",
            reason="the head-kernel (lazy) prediction ignores the backbone's motion and SGD noise, so it has no error "
            "term to gate with; reference = that prediction",
            description="mean over seeds of t_d(plain) / t_d(boost) at equal learning rate",
            predicted=pred["plain"] / pred["boost"], measured=ratio),
        compare.check(
            "deep_plain_last_step_rel_error_lazy", float(np.max(np.abs(compare.relative_errors(pred["plain"], plain)))),
            None, kind="reported",
            reason="the linear theory of the head kernel at initialisation is a lazy-regime approximation of the "
            "network (the backbone moves once the head has grown); shown for scale",
            description="max over seeds of |relative error| of plain's t_d vs the head-kernel GD-map prediction",
            predicted=pred["plain"], measured=plain),
    ]
    sims = [compare.subspace_similarity(p.final_embeddings["plain"], p.final_embeddings["boost"]) for p in pairs]
    checks.append(compare.check(
        "deep_representation_similarity_min", float(np.min(sims)),
        compare.random_subspace_similarity(cfg.deep_n_eval, cfg.deep_d), kind="reported", op=">=",
        reason="the boost is meant to reach the same representation faster; the subspace similarity of the two "
        "networks' final held-out embeddings is shown against the random-subspace reference d / n_eval, not gated "
        "(two plain seeds differ too)",
        description="min over seeds of the subspace similarity of plain's and boost's final embeddings",
        measured=sims))
    summary = {
        "seeds": [p.seed for p in pairs], "steps": [p.steps for p in pairs], "lr": [p.lr for p in pairs],
        "gammas": [p.gammas for p in pairs], "gamma_min": [p.gamma_min for p in pairs],
        "last_step_plain": plain, "last_step_boost": boost, "speedup": ratio,
        "predicted_last_step_plain": pred["plain"], "predicted_last_step_boost": pred["boost"],
        "final_loss": {k: v.tolist() for k, v in final.items()}, "similarity": sims,
        "train_time_s": [p.train_time_s for p in pairs], "gamma_time_s": [p.gamma_time_s for p in pairs],
    }
    return checks, summary


def run(cfg: SpeedupConfig, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Run both parts and write the run directory. Returns the results dictionary."""
    from stepwise.plots.speedup import plot_speedup

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    lin = run_linear(cfg, progress=progress)
    t_linear = time.perf_counter() - t0
    checks, summary = linear_checks(cfg, lin)
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
    if cfg.deep:
        t1 = time.perf_counter()
        pairs = [run_deep_pair(cfg, seed, progress=progress) for seed in range(cfg.deep_seeds)]
        d_checks, d_summary = deep_checks(cfg, pairs)
        checks += d_checks
        result_summary |= {"deep": d_summary, "deep_time_s": time.perf_counter() - t1}
        arrays |= {"deep_seeds": np.array([p.seed for p in pairs]), "deep_level": np.float64(cfg.deep_loss_level),
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
