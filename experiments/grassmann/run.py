"""Runner for the Grassmannian SSL experiment (Esser, Mukherjee & Ghoshdastidar 2023; theory note esser2023).

Three parts, each written to its own data file in ``out_dir`` before the figures are drawn from those files:

- ``naive.npz``: full-batch GD on L(W) = -tr(W^T C W) without constraint; singular values of W over time.
- ``constrained.npz``: the flow dW/dt = 2 (I - W W^T) C W by an adaptive ODE solver for several h, Riemannian GD
  (QR and polar retractions) and its first-order convergence, all against the closed-form projector; the principal
  sines to the top-h eigenspace.
- ``width.npz``: a two-layer ReLU network f(x) = a^T relu(b x / sqrt(d)) / sqrt(m) (NTK parametrisation, hidden
  layer b frozen so its features are computed once) trained on the output layer a, either with the SSL loss under
  a^T a = m I (Riemannian GD on W = a / sqrt(m)) or with supervised MSE (plain GD); relative change of a and of the
  empirical NTK (all parameters, :func:`stepwise.ntk.empirical_ntk`, jax backend) per width and seed; the SSL
  subspace against Riemannian GD on the linear Grassmann model of the network's own C and against its closed form.

Then ``grassmann.png`` and ``grassmann_width.png`` (from the data files) and ``results.json`` last.
"""

from __future__ import annotations

import dataclasses
import functools
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
from stepwise.data import Augmentation, load_images, make_pairs
from stepwise.ntk import empirical_ntk
from stepwise.theory import grassmann as theory
from stepwise.training.riemannian import qr_retraction, riemannian_gd

EXPERIMENT = "grassmann"
_RECORDS = 400  # samples kept per long trajectory
_ORDER_RECORDS = 10  # samples of each first-order run (max over them of the projector error)


# ----------------------------------------------------------------------------------------------------------------
# Data.


def _normalise(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Centre by the mean of the first two arrays (the views) and scale so that E||x||^2 = d for them."""
    both = np.concatenate(arrays[:2])
    mu = both.mean(axis=0)
    scale = math.sqrt(np.mean(np.sum((both - mu) ** 2, axis=1)) / both.shape[1])
    return tuple((a - mu) / scale for a in arrays)


def _rng(cfg: GrassmannConfig, *path: int) -> np.random.Generator:
    """A NumPy generator for one named stream (data, W0, network s at width m): seeded, no global state. NumPy
    rather than jax.random here because each eager jax.random call compiles once per shape (seconds per run)."""
    return np.random.default_rng([cfg.seed, *path])


def make_data(cfg: GrassmannConfig, n: int) -> dict[str, np.ndarray]:
    """n positive pairs (x, x+), shuffled negatives, the clean inputs and supervised targets (width_h outputs).

    ``digits``: two augmented views (random shift, pixel noise; :mod:`stepwise.data`) of n digits; targets are a
    fixed random orthonormal code of the class in R^h (unit variance per output). ``gaussian``:
    x ~ N(0, diag(decay^k)), x+ = x + noise_std N(0, I); targets from a fixed random linear teacher.
    """
    rng = _rng(cfg, 0)
    if cfg.dataset == "digits":
        ds = load_images("digits", n, seed=cfg.seed)
        views = Augmentation(shift=cfg.shift, noise_std=cfg.noise_std)
        x1, x2 = make_pairs(views, jax.random.key(cfg.seed), ds.images)
        flat = lambda a: np.asarray(a, np.float64).reshape(n, -1)
        x1, x2, x0 = flat(x1), flat(x2), flat(ds.images)
        code = np.linalg.qr(rng.normal(size=(10, 10)))[0][:, : cfg.width_h]
        y = code[ds.labels] * math.sqrt(10 / cfg.width_h)
    else:
        std = cfg.gaussian_decay ** (0.5 * np.arange(cfg.gaussian_dim))
        x0 = rng.normal(size=(n, cfg.gaussian_dim)) * std
        x1 = x0
        x2 = x0 + cfg.noise_std * rng.normal(size=x0.shape)
        teacher = rng.normal(size=(cfg.gaussian_dim, cfg.width_h))
        y = x0 @ teacher / np.sqrt(np.sum((std[:, None] * teacher) ** 2, axis=0))
    perm = rng.permutation(n)
    x1, x2, x0 = _normalise(x1, x2, x0)
    return {"x1": x1, "x2": x2, "xneg": x2[perm], "x0": x0, "y": np.asarray(y, np.float64)}


def ssl_c(cfg: GrassmannConfig, data: dict[str, np.ndarray]) -> np.ndarray:
    """C of the non-contrastive (or contrastive) loss, note section 1."""
    return np.asarray(theory.ssl_matrix(data["x1"], data["x2"], data["xneg"] if cfg.contrastive else None))


# ----------------------------------------------------------------------------------------------------------------
# Part A: unconstrained gradient descent.


@functools.partial(jax.jit, static_argnames=("n_records",))
def _naive_gd(w0, c, lr, record_every, n_records):
    """W <- W - lr grad L(W) (grad by autodiff of -tr(W^T C W)), recorded every ``record_every`` steps."""
    grad = jax.grad(theory.loss)

    def block(w, _):
        w = jax.lax.fori_loop(0, record_every, lambda _, v: v - lr * grad(v, c), w)
        return w, w

    return jnp.concatenate([w0[None], jax.lax.scan(block, w0, None, length=n_records)[1]])


def _schedule(t_end: float, lr: float) -> tuple[int, int]:
    """(record_every, n_records) with about _RECORDS samples covering t_end."""
    steps = max(1, math.ceil(t_end / lr))
    every = max(1, math.ceil(steps / _RECORDS))
    return every, math.ceil(steps / every)


def run_naive(cfg: GrassmannConfig, c: np.ndarray, eig: theory.Eig, w0: np.ndarray) -> dict[str, np.ndarray]:
    lam, vec = np.asarray(eig.values), np.asarray(eig.vectors)
    rate = 2 * (lam[0] - lam[1])
    every, n_rec = _schedule(cfg.naive_efolds / rate, cfg.lr)
    ws = np.asarray(_naive_gd(jnp.asarray(w0), jnp.asarray(c), cfg.lr, every, n_rec))
    u, s, _ = np.linalg.svd(ws, full_matrices=False)
    return {"t": cfg.lr * every * np.arange(n_rec + 1), "sv": s, "top_cos": np.abs(u[:, :, 0] @ vec[:, 0]),
            "lam": lam, "lr": np.float64(cfg.lr), "window": np.array(cfg.window),
            "sv_closed": np.asarray(jax.vmap(lambda t: theory.naive_singular_ratios(c, w0, t))(
                cfg.lr * every * np.arange(n_rec + 1)))}


# ----------------------------------------------------------------------------------------------------------------
# Part B: the constrained flow and Riemannian GD.


def _proj(w: np.ndarray) -> np.ndarray:
    return np.einsum("...mh,...nh->...mn", w, w)


def _ortho(w: np.ndarray) -> np.ndarray:
    """max |W^T W - I| per leading index."""
    h = w.shape[-1]
    return np.max(np.abs(np.einsum("...mh,...mk->...hk", w, w) - np.eye(h)), axis=(-2, -1))


def _max_sine(basis_perp: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Largest principal sine between span(W) (orthonormal) and a subspace, from an orthonormal basis of its
    complement: ||U_perp^T W||_2 (accurate for small angles, unlike an arccos of cosines)."""
    return np.linalg.norm(np.einsum("mk,...mh->...kh", basis_perp, w), ord=2, axis=(-2, -1))


def _orthonormal(rng: np.random.Generator, m: int, h: int) -> np.ndarray:
    """A uniformly random (Haar) point of the Stiefel manifold: QR of a Gaussian matrix, signs fixed."""
    return np.asarray(qr_retraction(jnp.asarray(rng.normal(size=(m, h)))))


def run_constrained(cfg: GrassmannConfig, c: np.ndarray, eig: theory.Eig) -> dict[str, np.ndarray]:
    lam, vec = np.asarray(eig.values), np.asarray(eig.vectors)
    m, h = c.shape[0], cfg.h

    # Adaptive ODE vs closed form for every h (checklist 4 and 6), t in [0, 5 / gap_h] (capped).
    flow_error, flow_ortho, flow_t = [], [], []
    for i, hh in enumerate(cfg.ode_hs):
        w0 = _orthonormal(_rng(cfg, 2, i), m, hh)
        gap = lam[hh - 1] - lam[hh] if hh < m else 1.0
        ts = np.linspace(0.0, min(5.0 / max(gap, 1e-12), 200.0), 41)
        ws, _ = theory.integrate(c, w0, ts)
        flow_error.append(np.linalg.norm(_proj(ws) - np.asarray(theory.projector_trajectory(c, w0, ts)),
                                         axis=(1, 2)))
        flow_ortho.append(_ortho(ws))
        flow_t.append(ts)

    # Riemannian GD, QR and polar, long enough for the principal sines to cross the fit window.
    w0 = _orthonormal(_rng(cfg, 3), m, h)
    rate = 2 * (lam[h - 1] - lam[h])
    every, n_rec = _schedule(cfg.constrained_efolds / rate, cfg.lr)
    runs = {r: np.asarray(riemannian_gd(theory.loss, jnp.asarray(w0), cfg.lr, every * n_rec, args=(jnp.asarray(c),),
                                        retraction=r, record_every=every)) for r in ("qr", "polar")}
    t = cfg.lr * every * np.arange(n_rec + 1)
    sines_closed = np.asarray(jax.vmap(lambda s: theory.principal_sines(c, w0, s)[0])(t))

    # First order in lr: max-over-time projector error against the closed form on [0, order_time].
    order_errors = []
    for lr in cfg.order_lrs:
        every = max(1, math.ceil(cfg.order_time / lr / _ORDER_RECORDS))  # the same record count: one compilation
        ws = np.asarray(riemannian_gd(theory.loss, jnp.asarray(w0), lr, every * _ORDER_RECORDS,
                                      args=(jnp.asarray(c),), record_every=every))
        closed = np.asarray(theory.projector_trajectory(c, w0, lr * every * np.arange(_ORDER_RECORDS + 1)))
        order_errors.append(np.max(np.linalg.norm(_proj(ws) - closed, axis=(1, 2))))

    # Diagnostic (checklist 3): the same steps without a retraction drift off W^T W = I.
    w = w0.copy()
    for _ in range(round(cfg.order_time / cfg.lr)):
        w = w + cfg.lr * np.asarray(theory.constrained_field(w, c))

    return {
        "hs": np.array(cfg.ode_hs), "flow_t": np.stack(flow_t), "flow_error": np.stack(flow_error),
        "flow_ortho": np.stack(flow_ortho), "t": t, "rgd_ortho": _ortho(runs["qr"]),
        "qr_polar": np.linalg.norm(_proj(runs["qr"]) - _proj(runs["polar"]), axis=(1, 2)),
        "sines": _max_sine(vec[:, h:], runs["qr"]), "sines_closed": sines_closed,
        "loss": -np.einsum("tmh,mn,tnh->t", runs["qr"], c, runs["qr"]), "final_loss": np.float64(
            float(theory.loss(runs["qr"][-1], c))), "order_lrs": np.array(cfg.order_lrs),
        "order_errors": np.array(order_errors), "projected_gd_drift": np.float64(_ortho(w)),
        "lam": lam, "h": np.int64(h), "lr": np.float64(cfg.lr), "window": np.array(cfg.window),
    }


# ----------------------------------------------------------------------------------------------------------------
# Part C: width. The network and its two trainings.


def two_layer(params: dict, x: jax.Array) -> jax.Array:
    """f(x) = a^T relu(b x / sqrt(d)) / sqrt(m), NTK parametrisation: (n, d) -> (n, h) with a (m, h), b (m, d)."""
    m, d = params["b"].shape
    return jax.nn.relu(x @ params["b"].T / math.sqrt(d)) @ params["a"] / math.sqrt(m)


def hidden_features(b: jax.Array, x: np.ndarray) -> np.ndarray:
    """phi(x) = relu(b x / sqrt(d)) / sqrt(m), the frozen hidden layer computed once: f(x) = a^T phi(x).

    With W = a / sqrt(m) the network's SSL loss is m L_lin(W) for the linear model on phi (C = C_phi, whose spectrum
    converges as m grows), and grad_a = sqrt(m) grad_W L_lin: a step lr on a (NTK parametrisation) is exactly a
    step lr on W for L_lin. The runner trains W that way.
    """
    m, d = b.shape
    return np.asarray(jax.nn.relu(jnp.asarray(x) @ b.T / math.sqrt(d)), np.float64) / math.sqrt(m)


def _mse(a, feats, y):
    """The network's MSE: feats @ a = a^T phi(x) = f(x)."""
    return 0.5 * jnp.mean(jnp.sum((feats @ a - y) ** 2, axis=-1))


@functools.partial(jax.jit, static_argnames=("steps",))
def _supervised_gd(a0, feats, y, lr, steps):
    """Plain GD on the network's MSE w.r.t. the output layer a (hidden layer frozen)."""
    grad = jax.grad(_mse)
    return jax.lax.fori_loop(0, steps, lambda _, a: a - lr * grad(a, feats, y), a0)


def _relative(new, old) -> float:
    return float(np.linalg.norm(np.asarray(new) - np.asarray(old)) / np.linalg.norm(np.asarray(old)))


def run_width_one(cfg: GrassmannConfig, data: dict[str, np.ndarray], m: int, seed: int) -> dict[str, float]:
    """One network of hidden width m: SSL with a^T a = m I and supervised MSE, both from the same a(0)."""
    n, d = data["x1"].shape
    h = cfg.width_h
    rng = _rng(cfg, 4, seed, m)
    b = jnp.asarray(rng.normal(size=(m, d)))
    w0 = _orthonormal(rng, m, h)  # a(0) = sqrt(m) W0: the constraint a^T a = m I holds from the start
    f1, f2, f0 = (hidden_features(b, data[k]) for k in ("x1", "x2", "x0"))
    fneg = hidden_features(b, data["xneg"]) if cfg.contrastive else None
    ssl_args = (f1, f2) if fneg is None else (f1, f2, fneg)

    # The network's C (= C_phi / m) lives in span(features, W0): reduce to that basis for the closed form.
    # (jnp: XLA's single-threaded LAPACK; NumPy's threaded BLAS stalls when other processes load the cores)
    basis = np.asarray(jnp.linalg.qr(jnp.asarray(np.concatenate(
        [f1.T, f2.T, *([fneg.T] if fneg is not None else []), w0], axis=1)))[0])
    c_red = np.asarray(theory.ssl_matrix(*(f @ basis for f in ssl_args)))
    c_red = 0.5 * (c_red + c_red.T)
    eig = theory.eigh_desc(c_red)
    lam1 = float(eig.values[0])
    lr = cfg.ssl_lr / (lam1 - float(eig.values[-1]))  # GD on the Grassmannian is stable for lr (l_1 - l_min) < 1
    # NTK parametrisation: step lr on a (the network's loss) is step lr on W for the linear loss on phi
    # (see hidden_features): the same iterates.
    ws = np.asarray(riemannian_gd(theory.ssl_loss, jnp.asarray(w0), lr, cfg.ssl_steps, args=ssl_args,
                                  record_every=cfg.ssl_record))
    t = lr * cfg.ssl_record * np.arange(ws.shape[0])
    w_red = np.einsum("mk,tmh->tkh", basis, ws)
    # The same Riemannian GD on the linear Grassmann model -tr(W^T C W) with the network's C, in the reduced basis:
    # a different loss, dimension and gradient path, the same iterates if the network is that model.
    model = np.asarray(riemannian_gd(theory.loss, jnp.asarray(basis.T @ w0), lr, cfg.ssl_steps,
                                     args=(jnp.asarray(c_red),), record_every=cfg.ssl_record))
    net_vs_model = float(np.max(np.linalg.norm(_proj(w_red) - _proj(model), axis=(1, 2))))
    closed = np.asarray(theory.projector_trajectory(c_red, basis.T @ w0, t))
    net_err = float(np.max(np.linalg.norm(_proj(w_red) - closed, axis=(1, 2))))
    final_sine = float(_max_sine(np.asarray(eig.vectors)[:, h:], w_red[-1]))

    # The MSE's Hessian in a is (phi^T phi / (m n)) (x) I; its top eigenvalue is that of the n x n Gram matrix.
    hess_max = float(jnp.linalg.eigvalsh(jnp.asarray(f0 @ f0.T / n))[-1])
    a0 = math.sqrt(m) * w0
    a_sup = np.asarray(_supervised_gd(jnp.asarray(a0), f0, data["y"], cfg.sup_lr / hess_max, cfg.sup_steps))

    xs = data["x0"][: cfg.ntk_points]
    ntk = lambda a: np.asarray(empirical_ntk(two_layer, {"a": jnp.asarray(a), "b": b}, xs, backend="jax"))
    k0, k_ssl, k_sup_t = ntk(a0), ntk(math.sqrt(m) * ws[-1]), ntk(a_sup)
    return {
        "ssl_param": _relative(ws[-1], w0), "ssl_ntk": _relative(k_ssl, k0),
        "sup_param": _relative(a_sup, a0), "sup_ntk": _relative(k_sup_t, k0),
        "net_vs_model": net_vs_model, "net_projector_error": net_err, "net_final_sine": final_sine,
        "ssl_final_loss": float(theory.ssl_loss(ws[-1], *ssl_args)), "ssl_limit_loss": -float(np.sum(
            np.asarray(eig.values)[:h])), "sup_final_mse": float(_mse(a_sup, f0, data["y"])),
        "net_lam1": lam1, "net_gap_rate": float(2 * (eig.values[h - 1] - eig.values[h])),
    }


def run_width(cfg: GrassmannConfig, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rows = [[run_width_one(cfg, data, m, s) for m in cfg.widths] for s in range(cfg.width_seeds)]
    out = {k: np.array([[r[k] for r in row] for row in rows]) for k in rows[0][0]}
    return {"widths": np.array(cfg.widths), "net_lr_scale": np.float64(cfg.ssl_lr), **out}


# ----------------------------------------------------------------------------------------------------------------
# The experiment.


def run(cfg: GrassmannConfig, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Run the experiment and write its files to ``out_dir``. Returns the results dictionary."""
    from stepwise.plots.grassmann import plot_grassmann, plot_width

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    with enable_x64(True):
        data = make_data(cfg, max(cfg.n_pairs, cfg.width_pairs))  # input errors are raised here
        c = ssl_c(cfg, {k: v[: cfg.n_pairs] for k, v in data.items()})
        m = c.shape[0]
        if max(cfg.h, *cfg.ode_hs) >= m:
            raise ValueError(f"h = {cfg.h} and ode_hs = {cfg.ode_hs} must be < m = {m} (the input dimension)")
        lam1 = float(theory.eigh_desc(c).values[0])
        if lam1 <= 0:
            raise ValueError(f"C has no positive eigenvalue (lambda_1 = {lam1:.3g}); time is measured in 1/lambda_1")
        c = c / lam1  # time in units of 1 / lambda_1
        eig = theory.eigh_desc(c)
        naive = run_naive(cfg, c, eig, _orthonormal(_rng(cfg, 1), m, cfg.h))
        constrained = run_constrained(cfg, c, eig)
        width = run_width(cfg, {k: v[: cfg.width_pairs] for k, v in data.items()})

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
