"""The networks of the width sweep (Simon et al. 2023, NTK extension): one-hidden-layer ReLU MLPs in float64, the
infinite-width NTK prediction of each architecture and one trained, centred net per (width, seed) with its distances
to the predictions of that NTK and of its own empirical NTK at initialisation, and its step times against the kernel
theory on the latter (:func:`sweep_width`)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from experiments.width_sweep.config import WidthSweepConfig
from stepwise import compare
from stepwise.models import build_model, pure_model
from stepwise.ntk import empirical_ntk, infinite_ntk, resolve_backend
from stepwise.theory import kernel as theory
from stepwise.theory import linear
from stepwise.training.centred import centred_delta, train_centred, train_linearised
from stepwise.training.small_init import settle_steps


def _split(k_all, two_n: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, train) and (test, train) blocks of one kernel over the training then test points."""
    k_all = np.asarray(k_all, dtype=np.float64)
    return k_all[:two_n, :two_n], k_all[two_n:, :two_n]


def choose_d(cfg: WidthSweepConfig, m: int, xs) -> tuple[int, np.ndarray]:
    """``cfg.d``, or the d in [2, d_max] with the smallest gamma_(d+1)/gamma_d of the widest stax NTK; and the
    ratios."""
    module = build_model("mlp", (1, 1, m), hidden=(cfg.widths[-1],), embed_dim=cfg.d_max)
    k = np.asarray(infinite_ntk(module, xs), dtype=np.float64)
    g = theory.contrastive_eigenvalues(0.5 * (k + k.T), ridge=cfg.ridge)
    ratios = g[1 : cfg.d_max + 1] / g[: cfg.d_max]
    if cfg.d is not None:
        return cfg.d, ratios
    return 2 + int(np.argmin(ratios[1:])), ratios


def ntk_options() -> dict[str, str]:
    """How the nets' own NTKs are computed: neural-tangents where it works on this JAX (backend "auto"; results.json
    records which ran), by Jacobian contraction. Its implementation "auto" would compile both neural-tangents
    implementations for XLA's cost analysis of every net (measured on 2 cores, 300 points: 2.6-18 s per kernel
    against 0.6-4 s)."""
    return {"backend": "auto", "implementation": "jacobian_contraction" if resolve_backend("auto") == "neural_tangents"
            else "auto"}


def stax_prediction(cfg: WidthSweepConfig, width: int, xs, xts, d: int) -> dict:
    """The infinite-width NTK of the width-``width`` architecture (stax; no random draw, so shared by every network
    seed), its contrastive eigenvalues and its kernel-PCA prediction of the held-out embedding."""
    module = build_model("mlp", (1, 1, xs.shape[-1]), hidden=(width,), embed_dim=d)
    k_inf, kt_inf = _split(infinite_ntk(module, jnp.concatenate([xs, xts])), xs.shape[0])
    k_inf = 0.5 * (k_inf + k_inf.T)
    g_inf, a_inf = theory.contrastive_eigh(k_inf, ridge=cfg.ridge)
    return {"k": k_inf, "kt": kt_inf, "gammas": g_inf[: d + 2],
            "predicted": theory.predict_embeddings(k_inf, kt_inf, d, eig=(g_inf, a_inf))}


def sweep_width(cfg: WidthSweepConfig, width: int, xs, xts, d: int, seed: int, k_delta: jax.Array,
                stax: dict, *, linearised: bool = False) -> dict:
    """Train one network of width ``width``; return its held-out embedding and its distances to the predictions
    of the stax NTK (``stax``, :func:`stax_prediction`) and of its own empirical NTK at initialisation.

    With ``linearised``, also train the net's linearisation at theta_0 (g = J(theta_0) (theta - theta_0), the same
    delta and lr) and return its measured half-rise steps (``meas_steps_lin``): a model whose NTK is exactly the one
    at initialisation, output blocks included, which tells the kernel's change during training apart from what the
    output-averaged kernel of the theory leaves out."""
    m = xs.shape[-1]
    # The init seed is a plain integer: a jax.random.randint draw differs with and without x64 (int32 vs int64).
    module = build_model("mlp", (1, 1, m), hidden=(width,), embed_dim=d, seed=seed)
    model = pure_model(module)
    theta0 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), model.params)
    k_inf = stax["k"]
    k_emp, kt_emp = _split(empirical_ntk(model.apply, theta0, jnp.concatenate([xs, xts]), **ntk_options()),
                           xs.shape[0])
    k_emp = 0.5 * (k_emp + k_emp.T)
    g_emp, a_emp = theory.contrastive_eigh(k_emp, ridge=cfg.ridge)

    delta = centred_delta(model.apply, theta0, xs, k_delta, cfg.init_scale / math.sqrt(g_emp[0]))
    f0_train = np.asarray(model.apply(jax.tree.map(jnp.add, theta0, delta), xs) - model.apply(theta0, xs))

    lr = cfg.lr_scale * linear.stability_limit(g_emp[0])
    pred = theory.predict(k_emp, f0_train, lr, ridge=cfg.ridge, eig=(g_emp, a_emp))
    steps = settle_steps(pred, cfg.extra_widths)
    if steps > cfg.max_steps:
        raise ValueError(f"width {width}: the kernel theory puts the last of d = {d} steps after "
                         f"{np.max(pred.mode_steps):.3g} updates, beyond max_steps = {cfg.max_steps}")
    theta, losses, eigs = train_centred(model.apply, theta0, delta, xs, lr, steps)
    # Measured steps: the update count at which the j-th largest eigenvalue of C reaches 1/2 (half its final value
    # 1, which final_loss_max gates), logit-interpolated as in kernel_bt; predicted: the kernel theory on the net's
    # own NTK at initialisation (the same K, F(0) and lr the training used), by the exact per-mode GD map.
    measured = compare.crossing_times(np.arange(steps + 1, dtype=np.float64), eigs, 0.5, interp="logit")
    step_rel = compare.relative_errors(pred.step_times, measured)
    lin = {}
    if linearised:
        eigs_lin = train_linearised(model.apply, theta0, delta, xs, lr, steps)
        lin["meas_steps_lin"] = compare.crossing_times(np.arange(steps + 1, dtype=np.float64), eigs_lin, 0.5,
                                                       interp="logit")
    f_test = np.asarray(model.apply(theta, xts) - model.apply(theta0, xts))
    p_inf = stax["predicted"]
    p_emp = theory.predict_embeddings(k_emp, kt_emp, d, eig=(g_emp, a_emp))
    return {
        "width": width, "seed": seed, "lr": lr, "steps": steps, "losses": losses,
        "gammas_emp": g_emp[: d + 2], "test_embeddings": f_test,
        "gram_inf": compare.gram_relative_error(f_test, p_inf),
        "proj_inf": compare.projector_distance(f_test, p_inf),
        "gram_emp": compare.gram_relative_error(f_test, p_emp),
        "proj_emp": compare.projector_distance(f_test, p_emp),
        "ntk_rel_diff": float(np.linalg.norm(k_emp - k_inf) / np.linalg.norm(k_inf)),
        "final_loss": float(losses[-1]),
        "pred_steps": pred.step_times, "meas_steps": measured, "step_rel_err": step_rel,
        "pred_amplitudes": pred.amplitudes, "pred_gammas": g_emp[:d],
        "eigenvalues": eigs, **lin,
    }
