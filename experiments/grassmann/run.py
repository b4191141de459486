"""Runner for the Grassmannian SSL experiment (Esser, Mukherjee & Ghoshdastidar 2023; theory note esser2023).

Three parts, each written to its own data file in ``out_dir`` before the figures are drawn from those files:
``naive.npz`` (full-batch GD on L(W) = -tr(W^T C W) without constraint: singular values of W over time),
``constrained.npz`` (the flow dW/dt = 2 (I - W W^T) C W by an adaptive ODE solver for several h, Riemannian GD with
QR and polar retractions and its first-order convergence, all against the closed-form projector; the principal
sines to the top-h eigenspace) and ``width.npz`` (the two-layer ReLU network of :mod:`stepwise.models.two_layer`,
hidden layer frozen, its output layer trained with the SSL loss under a^T a = m I by Riemannian GD or with MSE by
plain GD; relative change of a and of the empirical NTK per width and seed; the SSL subspace against Riemannian
GD on the linear Grassmann model of the network's own C and against its closed form). Then ``grassmann.png`` and
``grassmann_width.png`` (from the data files) and ``results.json`` last; the checks are
:mod:`stepwise.compare.esser2023`'s.
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
from experiments.grassmann.config import GrassmannConfig
from stepwise import io
from stepwise.compare import esser2023 as checks_lib
from stepwise.compare.esser2023 import (flow_vs_closed_form, max_sine, orthonormality_error, reduced_ssl_matrix,
                                        relative_change, span_projector)
from stepwise.data import positive_pairs
from stepwise.ntk import empirical_ntk
from stepwise.theory import grassmann as theory
from stepwise.models.two_layer import hidden_features, two_layer, two_layer_mse
from stepwise.training.riemannian import euclidean_gd, random_orthonormal, record_schedule, riemannian_gd

EXPERIMENT = "grassmann"
_RECORDS = 400  # samples kept per long trajectory
_ORDER_RECORDS = 10  # samples of each first-order run (max over them of the projector error)


def _rng(cfg: GrassmannConfig, *path: int) -> np.random.Generator:
    """A NumPy generator for one named stream (W0, network s at width m; NumPy: eager jax.random compiles)."""
    return np.random.default_rng([cfg.seed, *path])


def run_naive(cfg: GrassmannConfig, c: np.ndarray, eig: theory.Eig, w0: np.ndarray) -> dict[str, np.ndarray]:
    lam, vec = np.asarray(eig.values), np.asarray(eig.vectors)
    rate = 2 * (lam[0] - lam[1])
    every, n_rec = record_schedule(cfg.naive_efolds / rate, cfg.lr, _RECORDS)
    ws = np.asarray(euclidean_gd(theory.loss, w0, cfg.lr, every * n_rec, args=(jnp.asarray(c),), record_every=every))
    u, s, _ = np.linalg.svd(ws, full_matrices=False)
    t = cfg.lr * every * np.arange(n_rec + 1)
    return {"t": t, "sv": s, "top_cos": np.abs(u[:, :, 0] @ vec[:, 0]), "lam": lam, "lr": np.float64(cfg.lr),
            "window": np.array(cfg.window),
            "sv_closed": np.asarray(jax.vmap(lambda t: theory.naive_singular_ratios(c, w0, t))(t))}


def run_constrained(cfg: GrassmannConfig, c: np.ndarray, eig: theory.Eig) -> dict[str, np.ndarray]:
    lam, vec = np.asarray(eig.values), np.asarray(eig.vectors)
    m, h = c.shape[0], cfg.h

    # Adaptive ODE vs closed form for every h (checklist 4 and 6), t in [0, 5 / gap_h] (capped).
    flow_t, flow = [], []
    for i, hh in enumerate(cfg.ode_hs):
        gap = lam[hh - 1] - lam[hh] if hh < m else 1.0
        flow_t.append(np.linspace(0.0, min(5.0 / max(gap, 1e-12), 200.0), 41))
        flow.append(flow_vs_closed_form(c, random_orthonormal(_rng(cfg, 2, i), m, hh), flow_t[-1]))

    # Riemannian GD, QR and polar, long enough for the principal sines to cross the fit window.
    w0 = random_orthonormal(_rng(cfg, 3), m, h)
    rate = 2 * (lam[h - 1] - lam[h])
    every, n_rec = record_schedule(cfg.constrained_efolds / rate, cfg.lr, _RECORDS)
    runs = {r: np.asarray(riemannian_gd(theory.loss, jnp.asarray(w0), cfg.lr, every * n_rec, args=(jnp.asarray(c),),
                                        retraction=r, record_every=every)) for r in ("qr", "polar")}
    t = cfg.lr * every * np.arange(n_rec + 1)
    sines_closed = np.asarray(jax.vmap(lambda s: theory.principal_sines(c, w0, s)[0])(t))

    # First order in lr: max-over-time projector error against the closed form on [0, order.time].
    order_errors = []
    for lr in cfg.order.lrs:
        every = max(1, math.ceil(cfg.order.time / lr / _ORDER_RECORDS))  # the same record count: one compilation
        ws = np.asarray(riemannian_gd(theory.loss, jnp.asarray(w0), lr, every * _ORDER_RECORDS,
                                      args=(jnp.asarray(c),), record_every=every))
        closed = np.asarray(theory.projector_trajectory(c, w0, lr * every * np.arange(_ORDER_RECORDS + 1)))
        order_errors.append(np.max(np.linalg.norm(span_projector(ws) - closed, axis=(1, 2))))

    # Diagnostic (checklist 3): the same steps without a retraction drift off W^T W = I.
    w = w0.copy()
    for _ in range(round(cfg.order.time / cfg.lr)):
        w = w + cfg.lr * np.asarray(theory.constrained_field(w, c))

    return {
        "hs": np.array(cfg.ode_hs), "flow_t": np.stack(flow_t), "flow_error": np.stack([e for e, _ in flow]),
        "flow_ortho": np.stack([o for _, o in flow]), "t": t, "rgd_ortho": orthonormality_error(runs["qr"]),
        "qr_polar": np.linalg.norm(span_projector(runs["qr"]) - span_projector(runs["polar"]), axis=(1, 2)),
        "sines": max_sine(vec[:, h:], runs["qr"]), "sines_closed": sines_closed,
        "loss": -np.einsum("tmh,mn,tnh->t", runs["qr"], c, runs["qr"]), "final_loss": np.float64(
            float(theory.loss(runs["qr"][-1], c))), "order_lrs": np.array(cfg.order.lrs),
        "order_errors": np.array(order_errors), "projected_gd_drift": np.float64(orthonormality_error(w)),
        "lam": lam, "h": np.int64(h), "lr": np.float64(cfg.lr), "window": np.array(cfg.window),
    }


def run_width_one(cfg: GrassmannConfig, data: dict[str, np.ndarray], m: int, seed: int) -> dict[str, float]:
    """One network of hidden width m: SSL with a^T a = m I and supervised MSE, both from the same a(0)."""
    n, d = data["x1"].shape
    h = cfg.width.h
    rng = _rng(cfg, 4, seed, m)
    b = jnp.asarray(rng.normal(size=(m, d)))
    w0 = random_orthonormal(rng, m, h)  # a(0) = sqrt(m) W0: the constraint a^T a = m I holds from the start
    f1, f2, f0 = (hidden_features(b, data[k]) for k in ("x1", "x2", "x0"))
    fneg = hidden_features(b, data["xneg"]) if cfg.contrastive else None
    ssl_args = (f1, f2) if fneg is None else (f1, f2, fneg)

    basis, c_red = reduced_ssl_matrix(ssl_args, w0)  # the network's C in span(features, W0), for the closed form
    eig = theory.eigh_desc(c_red)
    lam1 = float(eig.values[0])
    lr = cfg.ssl.lr / (lam1 - float(eig.values[-1]))  # GD on the Grassmannian is stable for lr (l_1 - l_min) < 1
    # NTK parametrisation: step lr on a is step lr on W for the linear loss on phi (hidden_features): same iterates.
    ws = np.asarray(riemannian_gd(theory.ssl_loss, jnp.asarray(w0), lr, cfg.ssl.steps, args=ssl_args,
                                  record_every=cfg.ssl.record))
    t = lr * cfg.ssl.record * np.arange(ws.shape[0])
    w_red = np.einsum("mk,tmh->tkh", basis, ws)
    # The same Riemannian GD on the linear Grassmann model -tr(W^T C W) with the network's C, in the reduced basis:
    # a different loss, dimension and gradient path, the same iterates if the network is that model.
    model = np.asarray(riemannian_gd(theory.loss, jnp.asarray(basis.T @ w0), lr, cfg.ssl.steps,
                                     args=(jnp.asarray(c_red),), record_every=cfg.ssl.record))
    net_vs_model = float(np.max(np.linalg.norm(span_projector(w_red) - span_projector(model), axis=(1, 2))))
    closed = np.asarray(theory.projector_trajectory(c_red, basis.T @ w0, t))
    net_err = float(np.max(np.linalg.norm(span_projector(w_red) - closed, axis=(1, 2))))
    final_sine = float(max_sine(np.asarray(eig.vectors)[:, h:], w_red[-1]))

    # The MSE's Hessian in a is (phi^T phi / (m n)) (x) I; its top eigenvalue is that of the n x n Gram matrix.
    hess_max = float(jnp.linalg.eigvalsh(jnp.asarray(f0 @ f0.T / n))[-1])
    a0 = math.sqrt(m) * w0
    a_sup = np.asarray(euclidean_gd(two_layer_mse, a0, cfg.sup.lr / hess_max, cfg.sup.steps, args=(f0, data["y"]),
                                    record_every=cfg.sup.steps)[-1])

    xs = data["x0"][: cfg.width.ntk_points]
    ntk = lambda a: np.asarray(empirical_ntk(two_layer, {"a": jnp.asarray(a), "b": b}, xs, backend="jax"))
    k0, k_ssl, k_sup_t = ntk(a0), ntk(math.sqrt(m) * ws[-1]), ntk(a_sup)
    return {
        "ssl_param": relative_change(ws[-1], w0), "ssl_ntk": relative_change(k_ssl, k0),
        "sup_param": relative_change(a_sup, a0), "sup_ntk": relative_change(k_sup_t, k0),
        "net_vs_model": net_vs_model, "net_projector_error": net_err, "net_final_sine": final_sine,
        "ssl_final_loss": float(theory.ssl_loss(ws[-1], *ssl_args)), "ssl_limit_loss": -float(np.sum(
            np.asarray(eig.values)[:h])), "sup_final_mse": float(two_layer_mse(a_sup, f0, data["y"])),
        "net_lam1": lam1, "net_gap_rate": float(2 * (eig.values[h - 1] - eig.values[h])),
    }


def run(cfg: GrassmannConfig, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Run the experiment and write its files to ``out_dir``. Returns the results dictionary."""
    from stepwise.plots.grassmann import plot_grassmann, plot_width

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    with enable_x64(True):
        data = positive_pairs(cfg.dataset, max(cfg.n_pairs, cfg.width.pairs), seed=cfg.seed, targets=cfg.width.h,
                              shift=cfg.shift, noise_std=cfg.noise_std, gaussian_dim=cfg.gaussian.dim,
                              gaussian_decay=cfg.gaussian.decay)  # input errors are raised here
        pairs = {k: v[: cfg.n_pairs] for k, v in data.items()}  # C of the SSL loss, note section 1
        c = np.asarray(theory.ssl_matrix(pairs["x1"], pairs["x2"], pairs["xneg"] if cfg.contrastive else None))
        m = c.shape[0]
        if max(cfg.h, *cfg.ode_hs) >= m:
            raise ValueError(f"h = {cfg.h} and ode_hs = {cfg.ode_hs} must be < m = {m} (the input dimension)")
        lam1 = float(theory.eigh_desc(c).values[0])
        if lam1 <= 0:
            raise ValueError(f"C has no positive eigenvalue (lambda_1 = {lam1:.3g}); time is measured in 1/lambda_1")
        c = c / lam1  # time in units of 1 / lambda_1
        eig = theory.eigh_desc(c)
        naive = run_naive(cfg, c, eig, random_orthonormal(_rng(cfg, 1), m, cfg.h))
        constrained = run_constrained(cfg, c, eig)
        net_data = {k: v[: cfg.width.pairs] for k, v in data.items()}
        rows = [[run_width_one(cfg, net_data, m, s) for m in cfg.width.widths] for s in range(cfg.width.seeds)]
    width = {"widths": np.array(cfg.width.widths), "net_lr_scale": np.float64(cfg.ssl.lr),
             **{k: np.array([[r[k] for r in row] for row in rows]) for k in rows[0][0]}}

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, arrays in (("naive", naive), ("constrained", constrained), ("width", width)):
        io.save_npz_atomic(out_dir / f"{name}.npz", **arrays)
    figures = [plot_grassmann(out_dir), plot_width(out_dir)]

    all_checks, summary = [], {"lambda_1_raw": lam1, "m": m, "lam": np.asarray(eig.values)[: max(cfg.ode_hs) + 2],
                               "projected_gd_drift": float(constrained["projected_gd_drift"])}
    for name, fn in (("naive", checks_lib.naive_checks), ("constrained", checks_lib.constrained_checks),
                     ("width", checks_lib.width_checks)):
        part, info = fn(io.load_npz(out_dir / f"{name}.npz"))
        all_checks += part
        summary[name] = info
    return io.write_results(
        out_dir, experiment=EXPERIMENT, config=dataclasses.asdict(cfg), checks=all_checks,
        wall_time_s=time.perf_counter() - t0,
        extra={"summary": summary, "figures": [f.name for f in figures],
               "data": ["naive.npz", "constrained.npz", "width.npz"]},
    )
