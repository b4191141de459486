"""Runner for the DirectPred experiment (Tian, Chen & Ganguli 2021, Section 6; theory note B5-B6).

BYOL with three predictors on the same setup and seeds: DirectPred (W_p set from the running F_hat), an SGD-trained
linear predictor and a two-layer predictor; linear-probe accuracy of the backbone features of held-out images at
every tracking point; then DirectPred's eps sweep and note B7's variant with a positive constant c (Table 7).
Writes to ``out_dir``, each atomically: ``directpred.npz`` (probe accuracies per method and seed over training, the
sweep's final accuracies, F's spectra at the end, B7's probe accuracies and spectra), then the figure drawn from it
(``directpred.png``), then ``results.json`` last.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from experiments.directpred.config import METHODS, DirectPredConfig
from experiments.noncontrastive_deep.run import describe, load_data, train, workloads
from stepwise import io, scale
from stepwise.compare import tian2021
from stepwise.compare.probe import linear_probe_accuracy
from stepwise.training.ssl import Checkpointing

EXPERIMENT = "directpred"
DATA = "directpred.npz"


def _method(cfg: DirectPredConfig, name: str, eps: float | None = None) -> dict:
    """The :class:`NoncontrastiveConfig` overrides of a method."""
    if name == "directpred":
        return {"direct": "directpred", "rho": cfg.rho, "eps": cfg.eps if eps is None else eps, "freq": cfg.freq,
                "formula": cfg.formula}
    if name == "lstsq":
        return {"direct": "lstsq", "rho": cfg.rho, "eps": cfg.lstsq_reg, "freq": cfg.freq}
    return {"predictor": name}


def runs_per_method(cfg: DirectPredConfig) -> dict[str, int]:
    """How many training runs each method gets: ``seeds``, plus for DirectPred the sweep's runs at the other eps."""
    return {"directpred": cfg.seeds + (len(cfg.sweep) - 1) * cfg.eps_sweep.seeds + cfg.b7.seeds, "linear": cfg.seeds,
            "mlp": cfg.seeds, "lstsq": cfg.seeds}


def plan(cfg: DirectPredConfig, **device) -> scale.ComputePlan:
    """FLOPs per step and per tracking point of each predictor's BYOL, and the estimated time of every run on the
    default device (or the one named by ``device_kind=...``, ``platform=...``; :func:`stepwise.scale.make_plan`)."""
    work = []
    for name, runs in runs_per_method(cfg).items():
        work += workloads(cfg.setup, runs, **_method(cfg, name))
    return scale.make_plan(f"{EXPERIMENT}: {describe(cfg.setup)}, runs {runs_per_method(cfg)}", work,
                           dtype=cfg.setup.net.dtype, programs=2 * len(METHODS) + 2 * bool(cfg.b7.seeds), **device)


def run(cfg: DirectPredConfig, out_dir: str | Path, *, progress: bool = False,
        checkpoints: Checkpointing | None = None, plan: scale.ComputePlan | None = None) -> dict:
    """Run the experiment and write its files to ``out_dir``. Returns the results dictionary (with ``plan``, computed
    before the run, next to the measured times). ``checkpoints``: every training run's checkpoints
    (``checkpoint-<method>-seed<k>.msgpack``, ``checkpoint-directpred-eps<eps>-seed<k>.msgpack``,
    ``checkpoint-directpred-b7c<c>-seed<k>.msgpack``)."""
    from stepwise.plots.directpred import plot_directpred

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    data = load_data(cfg.setup)  # input errors surface here, before any compute
    probe = {m: [] for m in METHODS}
    spectra = {m: [] for m in METHODS}
    seconds: dict[str, float] = {}
    sweep = {eps: [] for eps in cfg.sweep}
    step = None
    for name in METHODS:
        t = time.perf_counter()
        for seed in range(cfg.seeds):
            r = train(cfg.setup, data, seed, progress=progress, checkpoints=checkpoints, name=f"{name}-seed{seed}",
                      **_method(cfg, name))
            acc = linear_probe_accuracy(r.snapshots, data.eval_labels, seed=seed)
            probe[name].append(acc)
            spectra[name].append(tian2021.end_spectrum(r.corr))
            step = r.step
            if name == "directpred" and seed < cfg.eps_sweep.seeds:
                sweep[cfg.eps].append(acc[-1])
        seconds[name] = time.perf_counter() - t
    t = time.perf_counter()
    for eps in cfg.sweep:
        for seed in range(len(sweep[eps]), cfg.eps_sweep.seeds):
            r = train(cfg.setup, data, seed, progress=progress, checkpoints=checkpoints,
                      name=f"directpred-eps{eps:g}-seed{seed}", **_method(cfg, "directpred", eps))
            sweep[eps].append(linear_probe_accuracy(r.snapshots, data.eval_labels, seed=seed)[-1])
    seconds["eps_sweep"] = time.perf_counter() - t
    t = time.perf_counter()
    b7_probe, b7_spectra = [], []  # note B7: Table 7's positive c (eps 0), paired with DirectPred's first seeds
    for seed in range(cfg.b7.seeds):
        r = train(cfg.setup, data, seed, progress=progress, checkpoints=checkpoints,
                  name=f"directpred-b7c{cfg.b7.c:g}-seed{seed}", **_method(cfg, "directpred", 0.0), c=cfg.b7.c)
        b7_probe.append(linear_probe_accuracy(r.snapshots, data.eval_labels, seed=seed))
        b7_spectra.append(tian2021.end_spectrum(r.corr))
    seconds["b7"] = time.perf_counter() - t

    acc = {m: np.stack(v) for m, v in probe.items()}  # (seeds, T)
    final = {m: a[:, -1] for m, a in acc.items()}
    initial = acc["linear"][:, 0]  # the untrained network (the predictor does not enter the features)
    n_modes = {m: [tian2021.non_null_modes(s) for s in v] for m, v in spectra.items()}
    checks = tian2021.directpred_checks(final, initial, n_modes, min_modes=cfg.min_modes,
                                        sweep={e: sweep[e] for e in cfg.sweep})
    b7 = {}
    if cfg.b7.seeds:
        b7 = {"probe_b7": np.stack(b7_probe), "spectrum_b7": np.stack(b7_spectra), "b7_c": np.float64(cfg.b7.c)}
        b7_modes = [tian2021.non_null_modes(s) for s in b7_spectra]
        checks += tian2021.b7_checks(
            {"default": final["directpred"][: cfg.b7.seeds], "positive_c": b7["probe_b7"][:, -1]},
            {"default": n_modes["directpred"][: cfg.b7.seeds], "positive_c": b7_modes}, c=cfg.b7.c, eps=cfg.eps)
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep_eps = np.array(cfg.sweep)
    io.save_npz_atomic(
        out_dir / DATA, step=step, lr=np.float64(cfg.setup.train.lr), methods=np.array(METHODS),
        **{f"probe_{m}": acc[m] for m in METHODS}, **{f"spectrum_{m}": np.stack(spectra[m]) for m in METHODS},
        sweep_eps=sweep_eps, sweep_final=np.stack([np.asarray(sweep[e]) for e in cfg.sweep]),
        eps=np.float64(cfg.eps), rho=np.float64(cfg.rho), **b7,
    )
    figure = plot_directpred(out_dir)
    summary = {
        "probe_final_mean_std": {m: [float(x) for x in tian2021.mean_spread(final[m])] for m in METHODS},
        "probe_initial_mean_std": [float(x) for x in tian2021.mean_spread(initial)],
        "eps_sweep_final_mean_std": {
            f"{e:g}": [float(x) for x in tian2021.mean_spread(np.asarray(sweep[e]))] for e in cfg.sweep},
        "non_null_modes_end": n_modes,
        "b7_final_mean_std": [float(x) for x in tian2021.mean_spread(b7["probe_b7"][:, -1])] if b7 else None,
        "b7_non_null_modes_end": [tian2021.non_null_modes(s) for s in b7_spectra],
        "seconds": seconds,
    }
    return io.write_results(
        out_dir, experiment=EXPERIMENT, config=dataclasses.asdict(cfg), checks=checks, plan=plan,
        wall_time_s=time.perf_counter() - t0, extra={"summary": summary, "figures": [figure.name], "data": [DATA]},
    )
