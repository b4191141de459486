"""Precision policy (issue 11 item 5): every public function of stepwise.theory and stepwise.compare, called with
float64 input in a process without x64, computes and returns float64, equal to its x64 result.

``CASES`` maps every public function (``__all__`` of every module of both packages, found by walking them, so a new
function or module cannot be forgotten: :func:`test_every_public_function_is_wrapped_and_tabled`) to a builder of
float64 NumPy arguments. Each is called three times on the same arguments: with x64 on through the wrapper, with
x64 on without it (``__wrapped__``: the wrapper must not change x64 results) and with x64 off (``jax_enable_x64``
turned off for the call only; conftest enables it for the suite).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import pkgutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stepwise.compare
import stepwise.theory
from stepwise._compat import enable_x64
from stepwise._precision import is_float64
from stepwise.compare import checks as ck
from stepwise.compare import diagnose as dg
from stepwise.compare import exact as ex
from stepwise.compare import ntk_agreement as cn
from stepwise.compare import step_map as sm
from stepwise.compare import steps as st
from stepwise.compare import tian2020 as t20
from stepwise.compare import tian2021 as t21
from stepwise.compare import width_sweep as wsw
from stepwise.theory import covariance as cov
from stepwise.theory import grassmann as gr
from stepwise.theory import kernel as ke
from stepwise.theory import linear as li
from stepwise.theory import noncontrastive as nc
from stepwise.theory import speedup as sp

# Both calls run the same float64 program, so they agree to the last bit on one machine; 1e-10 relative (the
# issue's bound) is what the float32 bug breaks by four orders of magnitude and more (projector: 7e-7).
RTOL = 1e-10


@contextlib.contextmanager
def x64_off():
    """The process default, 64-bit types off (conftest turns them on for the suite), for the block only."""
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


@pytest.fixture
def no_x64():
    with x64_off():
        yield


# ----------------------------------------------------------------------------------------------------------------
# Inputs: small float64 NumPy problems, built once with x64 on (results of other functions included).


def _sym(rng, m):
    a = rng.normal(size=(m, m))
    return (a + a.T) / 2


def _psd(rng, m):
    a = rng.normal(size=(m, m))
    return a @ a.T / m


def _ncl_cfg():
    """The noncontrastive_linear smoke config with fewer save times (the A1-A9 checks read their settings from it)."""
    from experiments.noncontrastive_linear import NoncontrastiveLinearConfig

    return dataclasses.replace(NoncontrastiveLinearConfig.smoke(), n_save=21)


def _step_map_data(det):
    """A step map's arrays (as in ``step_map.npz``) of one loss over a 1 x 1 x 2 grid: one cell from ``det``, one
    diverged; the standard-initialisation run is the first cell."""
    cell = sm.cell_statistics(det)
    stats = {k: np.array([[[[cell[k], np.nan]]]], np.float64) for k in sm.STATISTICS}
    return {"losses": np.array(["vicreg"]), "head_scales": np.array([1.0]), "lrs": np.array([0.02]),
            "widths": np.array([8, 16]), **stats, "diverged": np.array([[[[False, True]]]]),
            **{f"standard_{k}": np.array([cell[k]], np.float64) for k in sm.STATISTICS},
            "standard_lr": np.array([0.02]), "standard_width": np.array([8])}


def _width_sweep_per_seed(d):
    """A width sweep's per-seed arrays (2 seeds x 3 widths; step times of d = 2 modes), as the runner collects them."""
    falling = d.t[1:7].reshape(2, 3)[:, ::-1]
    return {"gram_inf": falling, "proj_inf": 2.0 * falling, "gram_emp": 0.5 * falling, "final_loss": 1e-3 * falling,
            "pred_steps": np.stack([d.t[1:7], d.t[3:9]], axis=-1).reshape(2, 3, 2),
            "meas_steps": np.stack([d.t[2:8], d.t[4:10]], axis=-1).reshape(2, 3, 2)}


def _speedup_variants(g, a0):
    """Every variant of the speed-up experiment's linear model (m = 5 modes of Gamma, d = 3 learned): predictions at
    0.3 of each stability limit, and "runs" that are the exact per-mode GD maps (what the aligned d x m GD run equals
    up to round-off), the final W a fixed random (d, m) matrix."""
    preds, runs = {}, {}
    for i, variant in enumerate(sp.VARIANTS):
        eps = 0.1 if "boost" in variant else None
        p = sp.predict(g, a0, variant, lr_scale=0.3, eps=eps, rank=3)
        steps = int(np.ceil(p.last_step + 3 * np.max(p.widths)))
        eigs = -np.sort(-sp.gd_eigenvalues(p.rates, a0, p.lr, steps, eps=eps), axis=1)
        w_final = np.random.default_rng(i).normal(size=(a0.size, g.size))
        preds[variant] = p
        runs[variant] = types.SimpleNamespace(step=np.arange(steps + 1.0), eigenvalues=eigs,
                                              loss=li.predicted_loss(eigs), w_final=w_final)
    return preds, runs


def _speedup_deep_pairs(d):
    """Two seeds of the speed-up experiment's deep part (``DeepPair``): predictions of the linear variants, held-out
    losses falling over 41 tracking points (boost's crossing 0.5 earlier), final embeddings of 8 points in d = 3."""
    from experiments.speedup.deep import DeepPair

    pairs = []
    for seed in range(2):
        loss = {"plain": 1.0 - d.eigs[:, 2] + 0.01 * seed, "boost": 1.0 - d.eigs[:, 1]}
        pairs.append(DeepPair(
            seed=seed, steps=400, lr=0.01, gammas=d.g, gamma_min=float(d.g[-1]),
            predicted={k: d.speedup_preds[k] for k in ("plain", "boost")}, step=10.0 * d.t,
            loss=loss, eigenvalues={"plain": d.eigs, "boost": d.eigs}, final_embeddings={"plain": d.za, "boost": d.zb},
            last_step={k: float(10.0 * d.t[np.argmax(v <= 0.5)]) for k, v in loss.items()},
            train_time_s={"plain": 1.0, "boost": 1.0}, gamma_time_s=0.5))
    return pairs


def _logistic_run(t, rates, shifts):
    """(T, k) logistic rises, one per column, sorted decreasing: a stepwise eigenvalue record."""
    curves = 1.0 / (1.0 + np.exp(-np.outer(t, rates) + shifts))
    return -np.sort(-curves, axis=1)


@functools.cache
def data() -> types.SimpleNamespace:
    with enable_x64(True):  # whichever test asks first: NumPy float64 throughout, as a researcher would pass
        return _data()


def _data() -> types.SimpleNamespace:
    rng = np.random.default_rng(0)
    d = types.SimpleNamespace()
    # grassmann
    d.c = _sym(rng, 6)
    d.w0 = np.linalg.qr(rng.normal(size=(6, 2)))[0]
    d.w = rng.normal(size=(6, 2))
    d.p = d.w0 @ d.w0.T
    d.x, d.x_pos, d.x_neg = (rng.normal(size=(10, 6)) for _ in range(3))
    # kernel: an RBF kernel over n = 6 pairs (x_i, x'_i) and 4 held-out points
    x1 = rng.normal(size=(6, 3))
    d.xs = np.concatenate([x1, x1 + 0.2 * rng.normal(size=(6, 3))])
    d.xt = rng.normal(size=(4, 3))
    d.k = ke.rbf_kernel(d.xs, bandwidth=1.5)
    d.kt = ke.rbf_kernel(d.xt, d.xs, bandwidth=1.5)
    d.f0 = 1e-3 * rng.normal(size=(12, 2))
    d.eig = ke.contrastive_eigh(d.k)
    d.klr = 0.5 * li.stability_limit(d.eig[0][0])
    # linear
    v1 = rng.normal(size=(50, 5)) * np.array([2.0, 1.5, 1.0, 0.7, 0.4])
    d.v1, d.v2 = v1, v1 + 0.3 * rng.normal(size=(50, 5))
    d.gamma = li.cross_correlation(d.v1, d.v2)
    d.lw0 = 1e-3 * rng.normal(size=(3, 5))
    d.g, d.v = li.eigh_desc(d.gamma)
    d.llr = 0.5 * li.stability_limit(d.g[0])
    d.amps = li.initial_amplitudes(d.gamma, d.lw0)
    d.pred = li.predict(d.gamma, d.lw0, d.llr)
    d.rot = np.linalg.qr(rng.normal(size=(2, 2)))[0]
    # noncontrastive
    d.y = nc.Weights(rng.normal(size=(2, 3)), rng.normal(size=(2, 2)), rng.normal(size=(2, 3)))
    d.ncx, d.ncx_aug = _psd(rng, 3), 0.1 * np.eye(3)
    d.hyper = nc.Hyper(eta=0.01)
    d.f = _psd(rng, 2)
    d.wps = _sym(rng, 2)
    d.modes = nc.Modes(np.array([0.5, 0.2]), np.array([1.0, 0.5]), np.array([0.3, 0.1]))
    d.times = np.array([0.0, 0.5, 1.0])
    # covariance: a 3-2-2 bias-free ReLU net, Z = 3 instances with A = 2 views each
    d.weights = [rng.normal(size=(4, 3)), rng.normal(size=(2, 4))]
    d.views = rng.normal(size=(3, 2, 3))
    d.clean = rng.normal(size=(3, 3))
    d.kcon = cov.view_connections(d.weights, d.views, 1)
    d.kbar = np.asarray(d.kcon).mean(axis=1)
    d.alpha = _sym(rng, 3) ** 2
    d.op = np.asarray(cov.covariance_operator(d.kbar))
    d.r_pos, d.r_neg, d.r_neg_clean = rng.uniform(size=5), rng.uniform(size=(5, 3)), rng.uniform(size=(5, 3))
    # metrics, steps, exact
    d.t = np.linspace(0.0, 10.0, 41)
    d.eigs = _logistic_run(d.t, np.array([2.0, 1.5, 1.2]), np.array([3.0, 8.0, 11.0]))
    d.loss = np.sum((1.0 - d.eigs) ** 2, axis=1)
    d.a, d.b = rng.normal(size=(8, 2)), rng.normal(size=(8, 3))
    d.za, d.zb = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    d.detection = st.detect_steps(d.t, d.eigs, d.loss)
    d.diagnosis = dg.diagnose(d.t, d.eigs, d.k, d.k + 0.3 * _psd(rng, d.k.shape[0]))
    steps = 400
    d.gd_eigs = -np.sort(-d.pred.eigenvalue_curves(steps), axis=1)
    d.gd_loss = li.predicted_loss(d.gd_eigs)
    d.gd_steps = np.arange(steps + 1.0)
    # speedup: the linear model's variants from aligned and (the same numbers standing in) random initialisation
    d.speedup_preds, runs = _speedup_variants(d.g, d.amps)
    d.speedup_lin = {"gamma_eigs": d.g, "a0": d.amps, "m": d.g.size, "predictions": d.speedup_preds, "runs": runs,
                     "reference": runs["plain"], "random": {"predictions": d.speedup_preds, "runs": runs, "a0": d.amps}}
    # ntk: the RBF kernel of 2n = 12 training points followed by 6 evaluation points
    d.k_all = ke.rbf_kernel(np.concatenate([d.xs, rng.normal(size=(6, 3))]), bandwidth=1.5)
    d.z_eval = rng.normal(size=(6, 3))
    d.snapshots = d.z_eval[None] * np.linspace(0.1, 1.0, 5)[:, None, None] + 0.01 * rng.normal(size=(5, 6, 3))
    d.snap_t = np.arange(5.0)
    d.onsets = np.array([0.5, 2.5])
    d.agreement = cn.kernel_agreement(d.k_all, 12, d.z_eval, 2, n_draws=3)
    d.directions = cn.learned_directions(d.snap_t, d.snapshots, d.onsets)
    d.order = cn.step_order(d.directions, d.k_all, 12, d.onsets)
    d.rows = cn.kernel_rows(d.k_all, 12)
    # esser2023: synthetic records of the shapes the experiment saves
    lam = np.array([1.0, 0.6, 0.3, -0.2])
    tt = np.linspace(0.0, 6.0, 30)
    d.naive = {"t": tt, "sv": np.stack([np.exp(2 * lam[0] * tt), np.exp(2 * lam[1] * tt)], axis=1),
               "top_cos": 1 - np.exp(-tt), "lam": lam, "lr": np.float64(0.01), "window": np.array([1e-4, 0.5])}
    d.constrained = {
        "hs": np.array([1, 2]), "flow_error": 1e-12 * rng.uniform(size=(2, 30)),
        "flow_ortho": 1e-13 * rng.uniform(size=(2, 30)), "rgd_ortho": 1e-15 * rng.uniform(size=30),
        "qr_polar": 1e-14 * rng.uniform(size=30), "order_lrs": np.array([0.01, 0.02, 0.04]),
        "order_errors": np.array([0.011, 0.021, 0.043]), "t": tt, "sines": np.exp(-0.6 * tt),
        "sines_closed": np.exp(-0.6 * tt) * (1 + 1e-3 * rng.normal(size=30)), "lam": lam, "h": np.int64(2),
        "lr": np.float64(0.01), "window": np.array([1e-3, 0.5]), "final_loss": np.float64(-1.6 + 1e-9),
    }
    widths = np.array([16.0, 64.0, 256.0])
    d.width = {
        "widths": widths, "ssl_param": 0.5 + 0.01 * rng.uniform(size=(2, 3)),
        "ssl_ntk": np.sqrt(0.04 + 1.0 / widths) * (1 + 0.01 * rng.uniform(size=(2, 3))),
        "sup_param": widths ** -0.5 * (1 + 0.01 * rng.uniform(size=(2, 3))),
        "sup_ntk": 1.0 / widths * (1 + 0.01 * rng.uniform(size=(2, 3))),
        "net_vs_model": 1e-12 * rng.uniform(size=(2, 3)), "net_lr_scale": np.float64(0.05),
        "net_projector_error": 1e-3 * rng.uniform(size=(2, 3)), "net_final_sine": 1e-4 * rng.uniform(size=(2, 3)),
        "ssl_final_loss": -1.0 + 1e-6 * rng.uniform(size=(2, 3)), "ssl_limit_loss": -np.ones((2, 3)),
    }
    # tian2020: an SB-HLTM record of depth 2, binary tree, N = 200 (integer latents)
    n = 200
    d.edge_polarities = [np.array([0.9, 0.8]), np.array([0.9, 0.7, 0.8, 0.6])]
    d.path_polarities = [np.array([1.0]), d.edge_polarities[0],
                         np.repeat(d.edge_polarities[0], 2) * d.edge_polarities[1]]
    d.hltm_views = types.SimpleNamespace(**{
        name: tuple(rng.integers(0, 2, size=(n, 2**t)) for t in range(3))
        for name in ("latents", "latents_pos", "latents_neg")
    })
    d.pre = [rng.normal(size=(n, 1, 4)), rng.normal(size=(n, 2, 4))]
    d.latents = [d.hltm_views.latents[0], d.hltm_views.latents[1]]
    d.main = {"nce": rng.uniform(0.3, 0.9, size=(3, 2, 3))}
    d.sweep = rng.uniform(0.3, 0.9, size=(2, 2, 3, 2, 3))
    # tian2021: tracked F (PSD) and W_p over T = 4 points, d = 3, the last mode shrinking to ~0
    scales = np.array([[1.0, 0.5, 1e-1], [1.0, 0.5, 1e-2], [1.0, 0.6, 1e-4], [1.0, 0.6, 1e-6]])
    q = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    d.corr = np.stack([(q * s) @ q.T for s in scales])
    d.wp = d.corr + 0.3 * rng.normal(size=(4, 3, 3))
    d.alignment = t21.alignment_trajectory(d.corr, d.wp)
    # instances of the public result classes, for their methods and properties
    d.kpred = ke.predict(d.k, d.f0, d.klr)
    args, kwargs = CASES["stepwise.compare.exact.compare_exact_steps"](d)
    d.exact = ex.compare_exact_steps(*args, **kwargs)
    d.check = ck.check("a", np.float64(1 / 3), 0.5, kind="theory", reason="r", predicted=d.g, measured={"x": d.amps})
    return d


D = data  # builders take the namespace: CASES[name](D()) -> (args, kwargs)

CASES = {
    # ---- stepwise.theory.covariance
    "stepwise.theory.covariance.augmentation_variance": lambda d: ((d.kcon,), {}),
    "stepwise.theory.covariance.between_pair_weights": lambda d: ((d.weights, d.clean), {"tau": 0.7}),
    "stepwise.theory.covariance.connection": lambda d: ((d.weights, d.views.reshape(6, 3), 2), {}),
    "stepwise.theory.covariance.contrastive_weights": lambda d: (("infonce", d.r_pos, d.r_neg), {"tau": 0.5}),
    "stepwise.theory.covariance.covariance_operator": lambda d: ((d.kbar,), {}),
    "stepwise.theory.covariance.exact_cov_loss": lambda d: ((d.r_pos, d.r_neg, d.r_neg_clean), {"tau": 0.5}),
    "stepwise.theory.covariance.expected_loss": lambda d: ((d.weights, d.views), {"alpha": d.alpha}),
    "stepwise.theory.covariance.infonce_loss": lambda d: ((d.r_pos, d.r_neg), {"tau": 0.5}),
    "stepwise.theory.covariance.mean_connection": lambda d: ((d.weights, d.views, 1), {}),
    "stepwise.theory.covariance.mean_triplet_weight": lambda d: (
        (d.weights, d.views, lambda rp, rn: jax.nn.sigmoid(rp - rn)), {}),
    "stepwise.theory.covariance.pair_distance": lambda d: ((d.a, d.a[::-1]), {}),
    "stepwise.theory.covariance.population_gradient": lambda d: (
        (d.weights, d.views), {"weight_fn": lambda rp, rn: jax.nn.sigmoid(rp - rn)}),
    "stepwise.theory.covariance.predicted_update": lambda d: ((d.op, d.weights[0]), {}),
    "stepwise.theory.covariance.rank_bound": lambda d: ((3, 2, 12), {}),
    "stepwise.theory.covariance.relu_net": lambda d: ((d.weights, d.clean), {"linear_top": False}),
    "stepwise.theory.covariance.simple_loss": lambda d: ((d.r_pos, d.r_neg[:, :1]), {}),
    "stepwise.theory.covariance.soft_triplet_loss": lambda d: ((d.r_pos, d.r_neg[:, 0]), {"tau": 0.5, "margin": 0.1}),
    "stepwise.theory.covariance.total_variance": lambda d: ((d.kcon,), {}),
    "stepwise.theory.covariance.view_connections": lambda d: ((d.weights, d.views, 2), {}),
    "stepwise.theory.covariance.weighted_covariance_operator": lambda d: ((d.kbar, d.alpha), {}),
    # ---- stepwise.theory.grassmann
    "stepwise.theory.grassmann.collapse_rate": lambda d: ((d.c,), {}),
    "stepwise.theory.grassmann.constrained_field": lambda d: ((d.w, d.c), {}),
    "stepwise.theory.grassmann.eigh_desc": lambda d: ((d.c,), {}),
    "stepwise.theory.grassmann.integrate": lambda d: ((d.c, d.w0, d.times), {"solver": "tsit5", "rtol": 1e-10}),
    "stepwise.theory.grassmann.limit_loss": lambda d: ((d.c, 2), {}),
    "stepwise.theory.grassmann.loss": lambda d: ((d.w, d.c), {}),
    "stepwise.theory.grassmann.naive_field": lambda d: ((d.w, d.c), {}),
    "stepwise.theory.grassmann.naive_flow": lambda d: ((d.c, d.w, 0.7), {}),
    "stepwise.theory.grassmann.naive_singular_ratios": lambda d: ((d.c, d.w, 0.7), {}),
    "stepwise.theory.grassmann.principal_angle_rate": lambda d: ((d.c, 2), {}),
    "stepwise.theory.grassmann.principal_sines": lambda d: ((d.c, d.w0, 1.3), {}),
    "stepwise.theory.grassmann.projector": lambda d: ((d.c, d.w0, 1.3), {}),
    "stepwise.theory.grassmann.projector_trajectory": lambda d: ((d.c, d.w0, d.times), {}),
    "stepwise.theory.grassmann.riccati_field": lambda d: ((d.p, d.c), {}),
    "stepwise.theory.grassmann.ssl_loss": lambda d: ((d.w, d.x, d.x_pos, d.x_neg), {}),
    "stepwise.theory.grassmann.ssl_matrix": lambda d: ((d.x, d.x_pos, d.x_neg), {}),
    "stepwise.theory.grassmann.top_eigenspace": lambda d: ((d.c, 2), {}),
    # ---- stepwise.theory.kernel
    "stepwise.theory.kernel.center_kernel": lambda d: ((d.k, d.kt), {}),
    "stepwise.theory.kernel.contrastive_eigh": lambda d: ((d.k,), {}),
    "stepwise.theory.kernel.contrastive_eigenvalues": lambda d: ((d.k,), {"ridge": 1e-8}),
    "stepwise.theory.kernel.contrastive_kernel": lambda d: ((d.kt, d.kt[::-1]), {}),
    "stepwise.theory.kernel.initial_amplitudes": lambda d: ((d.k, d.f0), {}),
    "stepwise.theory.kernel.linear_kernel": lambda d: ((d.xs, d.xt), {}),
    "stepwise.theory.kernel.positive_modes": lambda d: ((d.eig[0],), {}),
    "stepwise.theory.kernel.predict": lambda d: ((d.k, d.f0, d.klr), {}),
    "stepwise.theory.kernel.predict_embeddings": lambda d: ((d.k, d.kt, 2), {}),
    "stepwise.theory.kernel.rbf_kernel": lambda d: ((d.xs, d.xt), {"bandwidth": 0.8}),
    "stepwise.theory.kernel.step_times": lambda d: ((d.k, d.f0, d.klr), {}),
    "stepwise.theory.kernel.swap_matrix": lambda d: ((3,), {}),
    # ---- stepwise.theory.linear
    "stepwise.theory.linear.aligned_eigenvalues": lambda d: ((d.g[:3], d.amps, d.t), {}),
    "stepwise.theory.linear.aligned_eigenvalues_gd": lambda d: ((d.g[:3], d.amps, d.llr, 50), {}),
    "stepwise.theory.linear.cross_correlation": lambda d: ((d.v1, d.v2), {}),
    "stepwise.theory.linear.eigenbasis_amplitudes": lambda d: ((d.g, d.v, d.lw0, "projection"), {}),
    "stepwise.theory.linear.eigh_desc": lambda d: ((d.gamma,), {}),
    "stepwise.theory.linear.final_embedding": lambda d: ((d.gamma, 2, d.v1), {}),
    "stepwise.theory.linear.final_weights": lambda d: ((d.gamma, 2, d.rot), {}),
    "stepwise.theory.linear.gradient": lambda d: ((d.lw0, d.gamma), {}),
    "stepwise.theory.linear.initial_amplitudes": lambda d: ((d.gamma, d.lw0), {}),
    "stepwise.theory.linear.loss": lambda d: ((d.lw0, d.gamma), {}),
    "stepwise.theory.linear.map_crossing_steps": lambda d: ((d.g[:3], d.amps, d.llr), {}),
    "stepwise.theory.linear.flow_crossing_times": lambda d: ((d.g[:3], d.amps), {"level": 0.3}),
    "stepwise.theory.linear.predict": lambda d: ((d.gamma, d.lw0, d.llr), {}),
    "stepwise.theory.linear.predicted_loss": lambda d: ((d.eigs,), {"d": 4}),
    "stepwise.theory.linear.separated_modes": lambda d: ((d.g, 3), {}),
    "stepwise.theory.linear.separation_ratios": lambda d: ((d.pred.mode_steps, d.pred.widths), {}),
    "stepwise.theory.linear.stability_limit": lambda d: ((d.g[0],), {}),
    "stepwise.theory.linear.step_times": lambda d: ((d.gamma, d.lw0, d.llr), {}),
    # ---- stepwise.theory.noncontrastive
    "stepwise.theory.noncontrastive.aligned_spectrum": lambda d: ((d.corr[0], d.wp[0]), {}),
    "stepwise.theory.noncontrastive.alignment_cosines": lambda d: ((d.corr[0], d.wp[0]), {}),
    "stepwise.theory.noncontrastive.alignment_operator": lambda d: ((d.f, d.wps, 0.9, d.hyper), {}),
    "stepwise.theory.noncontrastive.asymmetry": lambda d: ((d.wp,), {}),
    "stepwise.theory.noncontrastive.balance": lambda d: ((d.y.w, d.y.wp, 0.7), {"alpha_p": 2.0, "eta": 0.1}),
    "stepwise.theory.noncontrastive.collapse_threshold": lambda d: ((1.0, 0.5), {}),
    "stepwise.theory.noncontrastive.commutator": lambda d: ((d.f, d.wps), {}),
    "stepwise.theory.noncontrastive.fixed_points": lambda d: ((1.0, 0.5, 0.01), {}),
    "stepwise.theory.noncontrastive.integrate": lambda d: ((d.y, d.ncx, d.ncx_aug, d.times, d.hyper), {}),
    "stepwise.theory.noncontrastive.integrate_modes": lambda d: ((d.modes.p, d.modes.s, d.times, d.hyper), {}),
    "stepwise.theory.noncontrastive.isotropic": lambda d: ((3, 0.5), {}),
    "stepwise.theory.noncontrastive.isotropic_decay_rate": lambda d: ((0.5, 0.1), {"tau": 0.9}),
    "stepwise.theory.noncontrastive.loss": lambda d: ((d.y, d.ncx, d.ncx_aug, d.hyper), {}),
    "stepwise.theory.noncontrastive.mode_field": lambda d: ((d.modes, d.hyper), {}),
    "stepwise.theory.noncontrastive.mode_invariant": lambda d: (
        (d.modes.p, d.modes.s, d.modes.tau), {"alpha_p": 2.0, "eta": 0.1}),
    "stepwise.theory.noncontrastive.parabola_limit": lambda d: ((0.3, 1.0, 0.5, 0.01), {}),
    "stepwise.theory.noncontrastive.parabola_velocity": lambda d: (
        (d.modes.p,), {"tau": 1.0, "sigma2": 0.5, "eta": 0.01}),
    "stepwise.theory.noncontrastive.symmetric_flow": lambda d: ((d.wps, d.f, 0.9, d.hyper), {}),
    "stepwise.theory.noncontrastive.theorem2_operator": lambda d: (
        (d.y.wp, d.ncx, d.ncx_aug, nc.Hyper(method="fixed_tau", tau=0.8, stop_gradient=False)), {}),
    "stepwise.theory.noncontrastive.vector_field": lambda d: ((d.y, d.ncx, d.ncx_aug, d.hyper), {}),
    # ---- stepwise.theory.speedup
    "stepwise.theory.linear.aligned_map": lambda d: ((d.amps, 4 * 0.01 * d.g[:3]), {"eps": 0.1}),
    "stepwise.theory.speedup.boost_gain": lambda d: ((np.array([-0.1, 0.0, 0.3, 1.0]), 0.1), {}),
    "stepwise.theory.speedup.flow_crossing_times": lambda d: ((d.g[:3], d.amps), {"eps": 0.1}),
    "stepwise.theory.speedup.gd_eigenvalues": lambda d: ((d.g[:3], d.amps, d.llr, 30), {"eps": 0.1}),
    "stepwise.theory.speedup.input_preconditioner": lambda d: ((d.g, d.v, 3), {}),
    "stepwise.theory.speedup.map_crossing_steps": lambda d: ((d.g[:3], d.amps, d.llr), {"eps": 0.1}),
    "stepwise.theory.speedup.mode_rates": lambda d: ((d.g, "input", 3), {}),
    "stepwise.theory.speedup.predict": lambda d: (
        (d.g, d.amps, "input_boost"), {"lr_scale": 0.3, "eps": 0.1, "rank": 3}),
    "stepwise.theory.speedup.update_direction": lambda d: ((d.lw0, d.gamma), {"precond": np.eye(5), "eps": 0.1}),
    # ---- stepwise.compare.checks
    "stepwise.compare.checks.all_passed": lambda d: (([ck.check("a", 0.5, 1.0, kind="theory", reason="r")],), {}),
    "stepwise.compare.checks.check": lambda d: (
        ("a", np.float64(1 / 3), 0.5), {"kind": "theory", "reason": "r", "predicted": d.g, "measured": {"x": d.amps}}),
    "stepwise.compare.checks.kind_summary": lambda d: (([d.check],), {}),
    "stepwise.compare.checks.summary_line": lambda d: (([d.check],), {}),
    # ---- stepwise.compare.esser2023
    "stepwise.compare.esser2023.constrained_checks": lambda d: ((d.constrained,), {}),
    "stepwise.compare.esser2023.decay_rate": lambda d: ((d.t, np.exp(-0.3 * d.t)), {"lo": 0.1, "hi": 0.9}),
    "stepwise.compare.esser2023.discrete_rate": lambda d: ((0.5, 0.2, 0.01), {}),
    "stepwise.compare.esser2023.infinite_width_fraction": lambda d: ((d.width["widths"], d.width["ssl_ntk"][0]), {}),
    "stepwise.compare.esser2023.loglog_slope": lambda d: ((d.t[1:], d.t[1:] ** -0.7), {}),
    "stepwise.compare.esser2023.naive_checks": lambda d: ((d.naive,), {}),
    "stepwise.compare.esser2023.width_checks": lambda d: ((d.width,), {}),
    "stepwise.compare.esser2023.flow_vs_closed_form": lambda d: ((d.c, d.w0, d.times), {}),
    "stepwise.compare.esser2023.max_sine": lambda d: ((np.linalg.eigh(d.c)[1][:, :4], d.w0), {}),
    "stepwise.compare.esser2023.orthonormality_error": lambda d: ((d.w,), {}),
    "stepwise.compare.esser2023.reduced_ssl_matrix": lambda d: (((d.x, d.x_pos), d.w0), {}),
    "stepwise.compare.esser2023.relative_change": lambda d: ((d.w, d.w0), {}),
    "stepwise.compare.esser2023.span_projector": lambda d: ((d.w0,), {}),
    # ---- stepwise.compare.exact
    "stepwise.compare.exact.compare_exact_steps": lambda d: (
        (d.gd_steps, d.gd_eigs, d.gd_loss, d.pred, li.separated_modes(d.pred.gammas, 3)),
        {"plateau_separation": 2.0, "gate_ratio": 0.95, "amplitude_reason": "r"}),
    # ---- stepwise.compare.metrics
    "stepwise.compare.metrics.crossing_times": lambda d: ((d.t, d.eigs, 0.5, "logit"), {}),
    "stepwise.compare.metrics.gram_relative_error": lambda d: ((d.za, d.zb), {}),
    "stepwise.compare.metrics.max_rank_increment": lambda d: ((np.array([0, 1, 3, 3]),), {}),
    "stepwise.compare.metrics.onset_times": lambda d: ((d.t, d.eigs), {}),
    "stepwise.compare.metrics.principal_angles": lambda d: ((d.a, d.b), {}),
    "stepwise.compare.metrics.procrustes_error": lambda d: ((d.za, d.zb), {}),
    "stepwise.compare.metrics.projector_distance": lambda d: ((d.a, d.b[:, :2]), {}),
    "stepwise.compare.metrics.random_subspace_similarity": lambda d: ((10, 2, 3), {}),
    "stepwise.compare.metrics.rank_trajectory": lambda d: ((d.eigs, 0.5), {}),
    "stepwise.compare.metrics.relative_errors": lambda d: ((d.eigs[-1], d.eigs[-2]), {}),
    "stepwise.compare.metrics.subspace_similarity": lambda d: ((d.a, d.b), {}),
    "stepwise.compare.metrics.unit_rank_increments": lambda d: ((np.array([0, 1, 1, 2]),), {}),
    "stepwise.compare.metrics.values_at": lambda d: ((d.t, d.loss, np.array([0.3, 4.7])), {}),
    # ---- stepwise.compare.ntk_agreement
    "stepwise.compare.ntk_agreement.cross_similarity": lambda d: (({"a": d.za, "b": d.zb},), {"k": {"a": 2, "b": 3}}),
    "stepwise.compare.ntk_agreement.final_embedding_check": lambda d: ((d.agreement, "x"), {"kernel": "rbf"}),
    "stepwise.compare.ntk_agreement.kernel_agreement": lambda d: ((d.k_all, 12, d.z_eval, 2), {"n_draws": 3}),
    "stepwise.compare.ntk_agreement.kernel_ridge": lambda d: ((d.k, np.float32), {}),
    "stepwise.compare.ntk_agreement.kernel_rows": lambda d: ((d.k_all, 12), {}),
    "stepwise.compare.ntk_agreement.learned_directions": lambda d: ((d.snap_t, d.snapshots, d.onsets), {}),
    "stepwise.compare.ntk_agreement.learned_subspace": lambda d: ((d.z_eval, 2), {}),
    "stepwise.compare.ntk_agreement.random_function_similarity":
        lambda d: ((d.rows, 2, d.rows[:, ::-1], 3), {"n_draws": 3}),
    "stepwise.compare.ntk_agreement.step_order": lambda d: ((d.directions, d.k_all, 12, d.onsets), {}),
    "stepwise.compare.ntk_agreement.step_order_checks": lambda d: ((d.order,), {"kernel": "rbf"}),
    "stepwise.compare.ntk_agreement.reported_order_checks": lambda d: ((d.order, "x"), {"init": d.order}),
    "stepwise.compare.ntk_agreement.cross_method_margin_check": lambda d: (
        (np.array([0.8, 0.7, 0.9]), np.array([0.5, 0.6, 0.3])), {}),
    # ---- stepwise.compare.probe
    "stepwise.compare.probe.linear_probe_accuracy": lambda d: (
        (np.stack([d.xs[::-1], d.xs]), (d.xs[:, 0] > 0).astype(int)), {"seed": 1}),  # labels: sign of feature 0
    # ---- stepwise.compare.speedup
    "stepwise.compare.speedup.linear_checks": lambda d: ((d.speedup_lin,), {"d": 3, "lr_scale": 0.3}),
    "stepwise.compare.speedup.random_init_checks": lambda d: ((d.speedup_lin, 3), {}),
    "stepwise.compare.speedup.deep_checks": lambda d: (
        (_speedup_deep_pairs(d),), {"track_every": 10, "loss_level": 0.5, "n_eval": 8, "d": 3}),
    # ---- stepwise.compare.steps
    "stepwise.compare.steps.detect_steps": lambda d: ((d.t, d.eigs, d.loss), {}),
    # ---- stepwise.compare.hidden
    "stepwise.compare.hidden.backbone_embedding_similarity": lambda d: ((d.za, d.zb, 2), {}),
    "stepwise.compare.hidden.hidden_checks": lambda d: ((d.detection, d.eigs), {"similarity": (0.5, 0.25), "k": 2}),
    "stepwise.compare.hidden.participation_ratio": lambda d: ((d.eigs,), {}),
    # ---- stepwise.compare.diagnose
    "stepwise.compare.diagnose.diagnose": lambda d: ((d.t, d.eigs, d.k, 1.5 * d.k), {}),
    "stepwise.compare.diagnose.diagnosis_checks": lambda d: ((d.diagnosis,), {}),
    "stepwise.compare.diagnose.failure_causes": lambda d: (([d.check], d.diagnosis), {}),
    "stepwise.compare.diagnose.kernel_change": lambda d: ((d.k, 1.5 * d.k), {}),
    "stepwise.compare.diagnose.spectrum_change_at_end": lambda d: ((d.t, d.eigs), {}),
    "stepwise.compare.steps.stepwise_checks": lambda d: ((d.detection, 2), {}),
    # ---- stepwise.compare.tian2020
    "stepwise.compare.tian2020.best_unit_correlation": lambda d: ((d.pre[1], d.latents[1]), {}),
    "stepwise.compare.tian2020.covariance_checks": lambda d: ((d.weights, d.views), {"clean": d.clean, "tau": 0.7}),
    "stepwise.compare.tian2020.hltm_learning_checks": lambda d: (
        (d.main, d.sweep, [0.7, 0.8], [2, 10]),
        {"rise_min": 0.05, "trend_tol": 0.02, "trend_min": 0.02, "hardest_tol": 0.02,
         "reference": ((0.5, 0.6, 0.8), (0.6, 0.7, 0.8))}),
    "stepwise.compare.tian2020.hltm_sampler_checks": lambda d: (
        (d.edge_polarities, d.path_polarities, 2, d.hltm_views), {}),
    "stepwise.compare.tian2020.level_correlations": lambda d: ((d.pre, d.latents), {}),
    "stepwise.compare.tian2020.reference_r": lambda d: ((5, 2, 0.8, 10), {}),
    "stepwise.compare.tian2020.linear_alignment_checks": lambda d: (
        (np.stack([np.linalg.qr(np.random.default_rng(t).normal(size=(4, 3)))[0].T for t in range(6)]),
         np.array([0.9, 0.5, 0.7, 0.3]), d.hltm_views.latents[2][:100] - d.hltm_views.latents_pos[2][:100],
         d.hltm_views.latents[2][:100] - d.hltm_views.latents_neg[2][:100]), {"lr": 0.05, "batch_size": 16}),
    # ---- stepwise.compare.step_map
    "stepwise.compare.step_map.best_cell": lambda d: (
        ({k: v[0] for k, v in _step_map_data(d.detection).items() if k in sm.STATISTICS},), {}),
    "stepwise.compare.step_map.cell_statistics": lambda d: ((d.detection,), {}),
    "stepwise.compare.step_map.map_checks": lambda d: ((_step_map_data(d.detection),), {"min_steps": 2}),
    # ---- stepwise.compare.width_sweep
    "stepwise.compare.width_sweep.linearised_checks": lambda d: ((64, d.t[1:3], d.t[2:4], d.t[3:5]), {}),
    "stepwise.compare.width_sweep.monotone_violation": lambda d: ((d.t[1:5],), {}),
    "stepwise.compare.width_sweep.random_function_errors": lambda d: ((d.kt, d.kt[:, :2], 5, 0), {}),
    "stepwise.compare.width_sweep.random_function_threshold": lambda d: ((d.t[1:6],), {}),
    "stepwise.compare.width_sweep.step_time_statistics": lambda d: (
        (_width_sweep_per_seed(d)["pred_steps"], _width_sweep_per_seed(d)["meas_steps"]), {}),
    "stepwise.compare.width_sweep.step_time_checks": lambda d: (
        ((16, 64, 256), 0.0, wsw.step_time_statistics(_width_sweep_per_seed(d)["pred_steps"],
                                                        _width_sweep_per_seed(d)["meas_steps"]),
         _width_sweep_per_seed(d)["pred_steps"][:, -1], _width_sweep_per_seed(d)["meas_steps"][:, -1]), {}),
    "stepwise.compare.width_sweep.sweep_checks": lambda d: (
        ((16, 64, 256), 0.0, _width_sweep_per_seed(d), np.abs(d.t[1:16]).reshape(3, 5), 1e-3), {}),
    # ---- stepwise.compare.tian2021
    "stepwise.compare.tian2021.alignment_summary": lambda d: (([d.alignment, d.alignment],), {}),
    "stepwise.compare.tian2021.alignment_trajectory": lambda d: ((d.corr, d.wp), {}),
    "stepwise.compare.tian2021.b4_checks": lambda d: (({"symmetric": [1, 1], "regular": [3, 4]},), {"alpha_p": 1.0}),
    "stepwise.compare.tian2021.b7_checks": lambda d: (
        ({"default": np.array([0.61, 0.63]), "positive_c": np.array([0.5, 0.55])},
         {"default": [5, 6], "positive_c": [3, 4]}),
        {"c": 0.1, "eps": 0.1}),
    "stepwise.compare.tian2021.fig6_checks": lambda d: (({"base": [1, 1], "rescue": [3, 2]},),
                                                        {"alpha_p": 2.0, "base_alpha_p": 1.0}),
    "stepwise.compare.tian2021.end_spectrum": lambda d: ((d.corr,), {}),
    "stepwise.compare.tian2021.no_ema_checks": lambda d: (({"regular": [3, 4], "base": [1, 1], "rescue": [3, 2]},),
                                                          {"b4_alpha_p": 1.0, "fig6_alpha_p": 2.0}),
    "stepwise.compare.tian2021.no_ema_summary": lambda d: (({k: [d.alignment.s[-1]] for k in ("base", "regular",
                                                                                              "rescue")},), {}),
    "stepwise.compare.tian2021.non_null_modes": lambda d: ((d.alignment.s[-1],), {}),
    "stepwise.compare.tian2021.deep_checks": lambda d: (([d.alignment, d.alignment],), {"min_modes": 2}),
    "stepwise.compare.tian2021.directpred_checks": lambda d: (
        ({"directpred": np.array([0.61, 0.63]), "linear": np.array([0.6, 0.62])}, np.array([0.4, 0.41]),
         {"directpred": [3, 3], "linear": [2, 3]}), {"min_modes": 2}),
    "stepwise.compare.tian2021.loglog_slope": lambda d: ((d.alignment.s[-1], np.abs(d.alignment.p[-1])), {}),
    "stepwise.compare.tian2021.mean_spread": lambda d: ((d.sweep[0, 0, -1],), {}),
    "stepwise.compare.tian2021.random_predictor_null": lambda d: ((3, 2), {"draws": 20}),
    "stepwise.compare.tian2021.seed_margin": lambda d: ((d.sweep[0, 0, -1, 0] - 0.5,), {}),
    "stepwise.compare.tian2021.spectrum_split": lambda d: ((d.alignment.s,), {}),
    # the linear model (checklist A): the smoke config with 21 save times, fresh data and summary dicts
    "stepwise.compare.tian2021.a1_invariant_checks": lambda d: ((_ncl_cfg(), {}, {}), {}),
    "stepwise.compare.tian2021.a2_decay_checks": lambda d: ((_ncl_cfg(), {}, {}), {}),
    "stepwise.compare.tian2021.a3_alignment_checks": lambda d: ((_ncl_cfg(), {}, {}), {}),
    "stepwise.compare.tian2021.a4_mode_checks": lambda d: ((_ncl_cfg(), {}, {}), {}),
    "stepwise.compare.tian2021.a5_fixed_point_checks": lambda d: ((_ncl_cfg(), {}, {}), {}),
    "stepwise.compare.tian2021.a6_no_decay_checks": lambda d: ((_ncl_cfg(), {}, {}), {}),
    "stepwise.compare.tian2021.a7_matrix_checks": lambda d: ((_ncl_cfg(), {}, {}), {}),
    "stepwise.compare.tian2021.a8_ema_checks": lambda d: ((_ncl_cfg(), {}, {}), {}),
    "stepwise.compare.tian2021.a9_asymmetry_checks": lambda d: ((_ncl_cfg(), {}, {}), {}),
    "stepwise.compare.tian2021.fig9_commutator_checks": lambda d: ((_ncl_cfg(), {}, {}), {}),
    "stepwise.compare.tian2021.phase_portrait_data": lambda d: ((_ncl_cfg(), {}), {}),
}

# Public methods and properties of the public classes (results and hyperparameters): (instance, args) builders.
METHOD_CASES = {
    # ModePrediction's methods on a KernelPrediction; loss_curve calls them on a LinearPrediction
    "stepwise.theory.linear.ModePrediction.d": lambda d: (d.kpred, None),
    "stepwise.theory.linear.ModePrediction.eigenvalue_curves": lambda d: (d.kpred, (30,)),
    "stepwise.theory.linear.ModePrediction.separation": lambda d: (d.kpred, ()),
    "stepwise.theory.linear.LinearPrediction.loss_curve": lambda d: (d.pred, (30,)),
    "stepwise.theory.noncontrastive.Hyper.eta_pred": lambda d: (d.hyper, None),
    "stepwise.compare.checks.Check.explain": lambda d: (d.check, ()),
    "stepwise.compare.checks.Check.gated": lambda d: (d.check, None),
    "stepwise.compare.checks.Check.to_dict": lambda d: (d.check, ()),
    "stepwise.compare.exact.ExactComparison.arrays": lambda d: (d.exact, ()),
    "stepwise.compare.ntk_agreement.KernelAgreement.baseline_kernel_mean": lambda d: (d.agreement, None),
    "stepwise.compare.ntk_agreement.KernelAgreement.baseline_threshold": lambda d: (d.agreement, None),
    "stepwise.compare.ntk_agreement.KernelAgreement.summary": lambda d: (d.agreement, ()),
    "stepwise.compare.ntk_agreement.StepOrder.summary": lambda d: (d.order, ()),
    "stepwise.compare.steps.StepDetection.n_plateaus": lambda d: (d.detection, None),
    "stepwise.compare.steps.StepDetection.groups": lambda d: (d.detection, None),
    "stepwise.compare.steps.StepDetection.merged": lambda d: (d.detection, None),
    "stepwise.compare.steps.StepDetection.n_learned": lambda d: (d.detection, None),
    "stepwise.compare.steps.StepDetection.separated": lambda d: (d.detection, None),
    "stepwise.compare.steps.StepDetection.separated_fraction": lambda d: (d.detection, None),
    "stepwise.compare.steps.StepDetection.summary": lambda d: (d.detection, ()),
    "stepwise.compare.diagnose.Diagnosis.causes": lambda d: (d.diagnosis, ("step_order_kendall_tau",)),
    "stepwise.compare.diagnose.Diagnosis.kernel_moved": lambda d: (d.diagnosis, None),
    "stepwise.compare.diagnose.Diagnosis.still_learning": lambda d: (d.diagnosis, None),
    "stepwise.compare.diagnose.Diagnosis.summary": lambda d: (d.diagnosis, ()),
    "stepwise.compare.steps.StepDetection.n_steps": lambda d: (d.detection, None),
}


# ----------------------------------------------------------------------------------------------------------------
# Walking and comparing results (arrays, scalars, tuples/lists/dicts, dataclasses such as Check and the predictions).


def _children(x):
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return [getattr(x, f.name) for f in dataclasses.fields(x)]
    if isinstance(x, dict):
        return [x[k] for k in sorted(x, key=repr)]
    if isinstance(x, (tuple, list)):
        return list(x)
    return None


def _floating_leaves(x, path="out"):
    """(path, leaf) for every floating-point leaf (arrays and scalars)."""
    kids = _children(x)
    if kids is not None:
        for i, kid in enumerate(kids):
            yield from _floating_leaves(kid, f"{path}[{i}]")
    elif isinstance(x, (float, np.floating)) or (
            isinstance(x, (np.ndarray, jax.Array)) and jnp.issubdtype(x.dtype, jnp.inexact)):
        yield path, x


def _assert_same(got, ref, path="out"):
    kids_got, kids_ref = _children(got), _children(ref)
    if kids_ref is not None:
        assert kids_got is not None and type(got) is type(ref) and len(kids_got) == len(kids_ref), path
        if isinstance(ref, dict):
            assert sorted(got, key=repr) == sorted(ref, key=repr), path
        for i, (a, b) in enumerate(zip(kids_got, kids_ref)):
            _assert_same(a, b, f"{path}[{i}]")
        return
    if isinstance(ref, (str, bool, type(None), np.bool_)) or callable(ref):
        assert got == ref, f"{path}: {got!r} != {ref!r}"
        return
    a, b = np.asarray(got), np.asarray(ref)
    assert a.shape == b.shape, f"{path}: shape {a.shape} != {b.shape}"
    if not np.issubdtype(b.dtype, np.inexact):
        np.testing.assert_array_equal(a, b, err_msg=path)
        return
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{path}: NaN pattern")
    finite = np.isfinite(b)
    np.testing.assert_array_equal(a[~finite & ~np.isnan(b)], b[~finite & ~np.isnan(b)], err_msg=f"{path}: inf")
    if finite.any():
        scale = max(float(np.max(np.abs(b[finite]))), np.finfo(np.float64).tiny)
        err = float(np.max(np.abs(a[finite].astype(np.float64) - b[finite])))
        assert err <= RTOL * scale, f"{path}: max |x64 off - x64 on| = {err:.3g} > {RTOL:g} x {scale:.3g}"


def _assert_float64(out, mode):
    for path, leaf in _floating_leaves(out):
        dtype = np.dtype(type(leaf)) if isinstance(leaf, float) else np.dtype(leaf.dtype)
        assert dtype == np.float64, f"{mode}: {path} is {dtype}, not float64"
        if not jax.config.jax_enable_x64:  # a float64 jax.Array warns ("truncated to float32") on every use
            assert not isinstance(leaf, jax.Array), f"{mode}: {path} is a float64 jax.Array, not NumPy"


# ----------------------------------------------------------------------------------------------------------------
# Tests.


def _public_objects():
    """Every function, and every public method or property of every class, in the ``__all__`` (or the public names)
    of every module of stepwise.theory and stepwise.compare: ({name: function}, {name: method or property})."""
    functions, methods = {}, {}
    for package in (stepwise.theory, stepwise.compare):
        modules = [package] + [importlib.import_module(f"{package.__name__}.{info.name}")
                               for info in pkgutil.iter_modules(package.__path__)]
        for module in modules:
            names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
            for name in names:
                obj = getattr(module, name)
                if not (getattr(obj, "__module__", None) or "").startswith("stepwise"):
                    continue
                if inspect.isfunction(obj):
                    functions[f"{obj.__module__}.{obj.__name__}"] = obj
                elif inspect.isclass(obj):
                    for attr, member in vars(obj).items():
                        if not attr.startswith("_") and (inspect.isfunction(member) or isinstance(member, property)):
                            methods[f"{obj.__module__}.{obj.__qualname__}.{attr}"] = member
    return functions, methods


def _resolve(name):
    module, attr = name.rsplit(".", 1)
    return getattr(importlib.import_module(module), attr)


def test_every_public_function_is_wrapped_and_tabled():
    public, methods = _public_objects()
    assert len(public) >= 132 and len(methods) >= 17  # the counts at the time of writing; new ones add to them
    for table, found, what in ((CASES, public, "functions"), (METHOD_CASES, methods, "methods/properties")):
        missing = sorted(set(found) - set(table))
        assert not missing, f"public {what} without a precision case: {missing}"
        stale = sorted(set(table) - set(found))
        assert not stale, f"precision cases that are not public {what} (renamed or removed?): {stale}"
    # Module functions carry the wrapper; the methods compute in NumPy on their float64 fields (tested below).
    unwrapped = sorted(name for name, fn in public.items() if not is_float64(fn))
    assert not unwrapped, f"public functions not wrapped in stepwise._precision.float64: {unwrapped}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_without_x64_equals_x64(name):
    fn = _resolve(name)
    args, kwargs = CASES[name](D())
    assert jax.config.jax_enable_x64  # conftest: the process has x64 on
    ref = fn(*args, **kwargs)
    raw = fn.__wrapped__(*args, **kwargs)
    with x64_off():  # the process default, as a user's script without jax_enable_x64 runs
        out = fn(*args, **kwargs)
        _assert_float64(out, "x64 off")
    _assert_float64(ref, "x64 on")
    _assert_same(ref, raw, "wrapper vs unwrapped, x64 on")  # the wrapper changes nothing when x64 is on
    _assert_same(out, ref)


@pytest.mark.parametrize("name", sorted(METHOD_CASES))
def test_methods_float64_without_x64_equal_x64(name):
    obj, args = METHOD_CASES[name](D())

    def call():
        value = getattr(obj, name.rsplit(".", 1)[1])
        return value if args is None else value(*args)  # args None: a property

    ref = call()
    with x64_off():
        out = call()
        _assert_float64(out, "x64 off")
    _assert_float64(ref, "x64 on")
    _assert_same(out, ref)


def test_the_check_sees_the_float32_bug(no_x64):
    """Without the wrapper, projector silently computes in float32 with x64 off: what the test above catches."""
    d = D()
    got = gr.projector.__wrapped__(d.c, d.w0, 1.3)
    with enable_x64(True):
        ref = gr.projector(d.c, d.w0, 1.3)
    assert got.dtype == jnp.float32
    with pytest.raises(AssertionError, match="not float64"):
        _assert_float64(got, "unwrapped")
    with pytest.raises(AssertionError, match="x64 off - x64 on"):
        _assert_same(got, ref)


def test_outputs_without_x64_are_usable_numpy_and_inputs_keep_their_dtype(no_x64):
    """64-bit results come back as NumPy (a float64 jax.Array warns on every use with x64 off); integer inputs are
    not cast (latents stay int); an explicitly float32 input keeps its precision, as with x64 on."""
    d = D()
    eig = gr.eigh_desc(d.c)
    assert isinstance(eig, gr.Eig) and all(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in eig)
    assert isinstance(nc.vector_field(d.y, d.ncx, d.ncx_aug, d.hyper).wp, np.ndarray)
    latents = d.latents[1].astype(np.int32)
    corr = t20.best_unit_correlation(d.pre[1], latents)
    assert corr.dtype == np.float64 and latents.dtype == np.int32
    p32 = gr.projector(d.c.astype(np.float32), d.w0.astype(np.float32), np.float32(1.3))
    assert p32.dtype == np.float32


def test_traced_calls_follow_the_callers_trace(no_x64):
    """Under jit (and vmap, grad) the wrapper does not switch x64 inside a trace: the caller's setting decides."""
    d = D()
    w, c = jnp.asarray(d.w), jnp.asarray(d.c)  # float32: x64 is off
    jitted = jax.jit(gr.loss)(w, c)
    assert jitted.dtype == jnp.float32
    # float32 round-off of a sum of 12 products: <= 12 eps32 x sum of |terms| ~ 1e-6 of it; 1e-5 of it allowed.
    bound = 1e-5 * float(np.sum(np.abs(d.w * (d.c @ d.w))))
    np.testing.assert_allclose(jitted, gr.loss(d.w, d.c), rtol=0, atol=bound)


def test_compat_enable_x64_switches_both_ways_without_warnings():
    """stepwise._compat.enable_x64: jax.enable_x64 (JAX >= 0.8) or jax.experimental's (0.6-0.7); the suite turns
    warnings into errors, so a deprecated spelling would fail here."""
    with enable_x64(False):
        assert not jax.config.jax_enable_x64 and jnp.asarray(1.0).dtype == jnp.float32
        with enable_x64(True):
            assert jax.config.jax_enable_x64 and jnp.asarray(1.0).dtype == jnp.float64
        assert not jax.config.jax_enable_x64
