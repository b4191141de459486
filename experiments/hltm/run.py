"""Runner for the HLTM experiment (Tian et al. 2020; theory note tian2020, sections 2.5, 3.1, 5).

For every hid of the sweep, the seeds x polarity ranges are trained together (vmapped, one jitted SGD step per
iteration) with the sweep loss (InfoNCE); the main setting is also trained with the simple loss. Every run has
its own tree (a seed's tree is shared by all polarity ranges, |rho| rescaled), initialisation, training stream and
fixed evaluation set; the best |corr| between each latent node's units and its latent is recorded per level.
Beside the learning checks, the run checks the SB-HLTM sampler against the exact model and the covariance-operator
identities on an exact finite population of HLTM samples (binary root: rank(OP) <= n_L), and trains a one-layer
linear f = Wx on the leaves with L_simp (note checklist 8: its rows align with the leaf polarities rho_0alpha).

Writes to ``out_dir``: ``curves.npz`` (all correlation curves and training losses), ``hltm_training.png`` and
``hltm_sweep.png`` (drawn from that file), then ``results.json``, each atomically.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.hltm.config import HLTMConfig
from stepwise import io
from stepwise._compat import enable_x64
from stepwise.compare import tian2020 as checks_tian
from stepwise.data import hltm as hltm_data
from stepwise.models.tree import init_tree_net, tree_net
from stepwise.training.hltm import train_linear_simple, train_runs

EXPERIMENT = "hltm"


def _tree_keys(cfg: HLTMConfig) -> list[jax.Array]:
    base = jax.random.key(cfg.seed)
    return [jax.random.fold_in(base, s) for s in range(cfg.seeds)]


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _run_data(cfg: HLTMConfig, lows: tuple[float, ...]):
    """Per run (polarity range-major, then seed): tree, fixed evaluation set, training key, init key."""
    seed_keys = _tree_keys(cfg)
    trees = [hltm_data.make_hltm(cfg.depth, cfg.children, (lo, 1.0), key=jax.random.fold_in(k, 0))
             for lo in lows for k in seed_keys]
    eval_keys = jnp.stack([jax.random.fold_in(k, 2) for _ in lows for k in seed_keys])

    @jax.jit
    @jax.vmap
    def eval_set(tree, key):
        v = hltm_data.sample_views(tree, cfg.train.n_eval, key=key)
        return v.x, v.latents[:-1]

    x_eval, lat_eval = eval_set(_stack(trees), eval_keys)
    train_keys = jnp.stack([jax.random.fold_in(k, 3) for _ in lows for k in seed_keys])
    init_keys = jnp.stack([jax.random.fold_in(k, 1) for _ in lows for k in seed_keys])
    return {"tree": _stack(trees), "x_eval": x_eval, "lat_eval": lat_eval}, train_keys, init_keys


def _sample(data, key, batch_size):
    v = hltm_data.sample_views(data["tree"], batch_size, key=key)
    return v.x, v.x_pos, v.x_neg


def _apply(params, x):
    return tree_net(params, x)[0]


def _evaluate(params, data):
    return checks_tian.level_correlations(tree_net(params, data["x_eval"])[1], data["lat_eval"])


def _train(cfg: HLTMConfig, hid: int, runs, main_start: int | None):
    """Train the runs of :func:`_run_data` at one hid with the sweep loss; with ``main_start``, also the seeds of
    the main setting (runs ``main_start`` .. + seeds: same data, initialisation and stream) with the other loss.

    Returns (E,) steps, (E, R, depth) correlations, (steps, R) losses and the loop's seconds.
    """
    data, train_keys, init_keys = runs
    n = train_keys.shape[0]
    other = "simple" if cfg.sweep_loss == "infonce" else "infonce"
    if main_start is not None:
        pick = jnp.arange(main_start, main_start + cfg.seeds)
        data, train_keys, init_keys = jax.tree.map(lambda a: jnp.concatenate([a, a[pick]]),
                                                   (data, train_keys, init_keys))
    losses = [cfg.sweep_loss] * n + [other] * (train_keys.shape[0] - n)
    params = jax.jit(jax.vmap(lambda k: init_tree_net(jax.random.fold_in(k, hid), cfg.depth, cfg.children, hid,
                                                      bias=cfg.train.bias)))(init_keys)
    hist = train_runs(_apply, _sample, _evaluate, params, data, train_keys, loss=losses,
                      **{k: getattr(cfg.train, k) for k in ("tau", "lr", "batch_size", "steps", "eval_every")})
    return hist.step, hist.metrics, hist.train_loss, hist.train_time_s


def _covariance(cfg: HLTMConfig, tree: hltm_data.HLTM, key: jax.Array):
    """Covariance-operator checks (float64) on an exact finite population of HLTM samples: Z = 2 root values."""
    with enable_x64(True):
        k_views, k_net = jax.random.split(key)
        views, clean = hltm_data.root_population(tree, cfg.cov.views, key=k_views)
        widths = (tree.n_leaves, *cfg.cov.widths)
        weights = [jax.random.normal(k, (n_out, n_in), jnp.float64) / np.sqrt(n_in)
                   for k, n_in, n_out in zip(jax.random.split(k_net, len(widths) - 1), widths, widths[1:])]
        return checks_tian.covariance_checks(weights, views, clean=clean, tau=cfg.cov.tau)


def _linear_alignment(cfg: HLTMConfig, tree: hltm_data.HLTM, key: jax.Array):
    """Note checklist 8: SGD on L_simp for a linear f = Wx on the leaves, rows renormalised after each step."""
    rho = np.asarray(hltm_data.path_polarities(tree)[-1], np.float64)
    lr, batch = cfg.lin.lr / (0.5 * float(rho @ rho)), cfg.train.batch_size
    steps = math.ceil(cfg.lin.efolds / math.log1p(cfg.lin.lr))
    k_w, k_train, k_noise = jax.random.split(key, 3)
    w0 = jax.random.normal(k_w, (cfg.lin.rows, tree.n_leaves), jnp.float32)  # the dtype of the sampled leaves
    w0 = w0 / jnp.linalg.norm(w0, axis=1, keepdims=True)
    traj = train_linear_simple(tree, w0, jax.random.split(k_train, steps), lr=lr, batch_size=batch)
    fresh = hltm_data.sample_views(tree, cfg.n_sampler, key=k_noise)
    return checks_tian.linear_alignment_checks(traj, rho, np.asarray(fresh.x - fresh.x_pos),
                                               np.asarray(fresh.x - fresh.x_neg), lr=lr, batch_size=batch)


def run(cfg: HLTMConfig, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Run the experiment and write its files to ``out_dir``. Returns the results dictionary."""
    from stepwise.plots.hltm import plot_hltm_sweep, plot_hltm_training

    del progress  # the loop is short; nothing to show
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    lows, hids = tuple(cfg.polarity_lows), tuple(cfg.hids)
    i_low, i_hid = lows.index(cfg.main_low), hids.index(cfg.main_hid)

    # Runs are polarity range-major, then seed; at the main hid the main setting's seeds are appended once more
    # for the other loss, so every hid is one compiled step.
    n_sweep = len(lows) * cfg.seeds
    sweep, sweep_loss, train_time = [], [], {}
    runs = _run_data(cfg, lows)
    for hid in hids:
        step, corr, loss, secs = _train(cfg, hid, runs, i_low * cfg.seeds if hid == cfg.main_hid else None)
        sweep.append(corr[:, :n_sweep].reshape(-1, len(lows), cfg.seeds, cfg.depth))
        sweep_loss.append(loss[:, :n_sweep].reshape(-1, len(lows), cfg.seeds))
        train_time[f"hid{hid}"] = secs
        if hid == cfg.main_hid:
            main_other, other_loss = corr[:, n_sweep:], loss[:, n_sweep:]
    other = "simple" if cfg.sweep_loss == "infonce" else "infonce"
    sweep_arr = np.stack(sweep).transpose(0, 2, 1, 3, 4)  # (n_hid, n_low, E, S, depth)
    main = {cfg.sweep_loss: sweep_arr[i_hid, i_low], other: main_other}

    reference = checks_tian.reference_r(cfg.depth, cfg.children, cfg.main_low, cfg.main_hid)
    learn_checks, learn_summary = checks_tian.hltm_learning_checks(
        main, sweep_arr, lows, hids, **dataclasses.asdict(cfg.thresholds), reference=reference)

    main_tree = hltm_data.make_hltm(cfg.depth, cfg.children, (cfg.main_low, 1.0),
                                    key=jax.random.fold_in(_tree_keys(cfg)[0], 0))
    views = hltm_data.sample_views(main_tree, cfg.n_sampler, key=jax.random.key(cfg.seed + 1))
    sampler_checks, sampler_summary = checks_tian.hltm_sampler_checks(
        main_tree.polarities, hltm_data.path_polarities(main_tree), cfg.children, views)
    # The noisiest tree of the sweep: the residue of augmentation-dependent weights grows with the augmentation
    # spread, which vanishes as |rho| -> 1 (views of one root then coincide).
    noisy_tree = hltm_data.make_hltm(cfg.depth, cfg.children, (lows[0], 1.0),
                                     key=jax.random.fold_in(_tree_keys(cfg)[0], 0))
    cov_checks, cov_summary = _covariance(cfg, noisy_tree, jax.random.key(cfg.seed + 2))
    lin_checks, lin_summary = _linear_alignment(cfg, main_tree, jax.random.key(cfg.seed + 3))

    out_dir.mkdir(parents=True, exist_ok=True)
    io.save_npz_atomic(
        out_dir / "curves.npz",
        step=step,
        sweep=sweep_arr,
        sweep_train_loss=np.stack(sweep_loss),
        **{f"main_{k}": v for k, v in main.items()},
        main_losses=np.array(list(main)),
        other_train_loss=other_loss,
        polarity_lows=np.asarray(lows),
        hids=np.asarray(hids),
        main_index=np.array([i_hid, i_low]),
        sweep_loss=np.array(cfg.sweep_loss),
    )
    figures = [plot_hltm_training(out_dir), plot_hltm_sweep(out_dir)]
    summary = {
        **learn_summary,
        "levels": [f"d{cfg.depth - t}" + (" (root)" if t == 0 else "") for t in range(cfg.depth)],
        "sampler": {"n": sampler_summary["n"], "path_polarities": sampler_summary["path_polarities"]},
        "covariance": cov_summary,
        "linear_alignment": lin_summary,
        "reference_R": {f"lo={lo},hid={h}": {"init": v[0], "final": v[1]}
                        for (lo, h), v in checks_tian.REFERENCE_R.items()},
        "reference_differences": checks_tian.REFERENCE_DIFFERENCES,
        "train_time_s": train_time,
    }
    return io.write_results(
        out_dir,
        experiment=EXPERIMENT,
        config=dataclasses.asdict(cfg),
        checks=[*learn_checks, *sampler_checks, *cov_checks, *lin_checks],
        wall_time_s=time.perf_counter() - t0,
        extra={"summary": summary, "figures": [f.name for f in figures], "data": ["curves.npz"]},
    )
