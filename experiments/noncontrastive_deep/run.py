"""Runner for the deep non-contrastive experiment (Tian, Chen & Ganguli 2021, Fig. 2 and Table 3; theory note
checklist B1-B4).

Trains BYOL with a linear predictor (``seeds`` runs), tracks F = E[f f^T] of the online projector outputs and W_p,
and checks alignment, symmetry and the spectrum; then the B4 ablation (``b4_seeds`` runs each without EMA, with a
symmetric and with a regular W_p, at ``b4_alpha_p``) and whether the symmetric one collapses, and the Fig. 6
rescue (``b4_seeds`` more symmetric runs without EMA at ``fig6_alpha_p``). Writes to ``out_dir``, each file
atomically: ``alignment.npz`` (per seed: the tracked F and W_p, their aligned spectra s, p, the cosines, asymmetry,
losses; the B4 and Fig. 6 runs' spectra of F at the end, their alpha_p and min_modes), then the figure drawn from it
(``noncontrastive_deep.png``), then ``results.json`` last.

The helpers :func:`load_data`, :func:`network` and :func:`train` are shared with the DirectPred experiment.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import numpy as np

from experiments.noncontrastive_deep.config import NetSetup, NoncontrastiveDeepConfig
from stepwise import io, scale
from stepwise.compare import tian2021
from stepwise.data import Augmentation
from stepwise.models import PureModel
from stepwise.training import TrainConfig
from stepwise.training.noncontrastive import NoncontrastiveConfig, NoncontrastiveRun, train_noncontrastive
from stepwise.training.ssl import Checkpointing, checkpoint_kwargs

EXPERIMENT = "noncontrastive_deep"
DATA = "alignment.npz"


@dataclasses.dataclass(frozen=True)
class Data:
    """Pixel-standardised training and evaluation images (float32) and the evaluation labels."""

    train: np.ndarray
    evals: np.ndarray
    eval_labels: np.ndarray


def load_data(setup: NetSetup) -> Data:
    """A fixed subset of the dataset, every pixel standardised with the training images' statistics."""
    train, evals, eval_labels = setup.data.load(seed=0)
    return Data(train.astype(np.float32), evals.astype(np.float32), eval_labels)


def augmentation(setup: NetSetup) -> Augmentation:
    return setup.aug.augmentation(setup.data.crop_size)


def network(setup: NetSetup, input_shape: tuple[int, int, int], seed: int) -> PureModel:
    """The online network for ``seed``."""
    return setup.net.build(input_shape, seed=seed)


def _train_config(setup: NetSetup, n_snapshot: int, seed: int) -> TrainConfig:
    return dataclasses.replace(setup.train, n_snapshot=n_snapshot, seed=seed)


def _method_config(setup: NetSetup, method: dict) -> NoncontrastiveConfig:
    return NoncontrastiveConfig(**({"beta": setup.beta, "alpha_p": setup.alpha_p, "eta_p": setup.eta_p,
                                    "pred_hidden": setup.pred_hidden, "loss": setup.loss} | method))


def describe(setup: NetSetup) -> str:
    """One line: the network, data, batch and dtype of a setup."""
    net = setup.net
    view = augmentation(setup).output_shape(setup.data.shape)
    return (f"{net.model} ({net.size()}, projector {net.projector}) on {setup.data.dataset} "
            f"{view[0]}x{view[1]}x{view[2]}, batch {setup.train.batch_size}, {net.dtype}")


def workloads(setup: NetSetup, runs: int, *, label: str | None = None, **method) -> list[scale.Workload]:
    """The training step and tracking of ``runs`` runs of one method (``method``: :class:`NoncontrastiveConfig`
    overrides; ``label`` names it, by default its predictor), from XLA's cost analysis of the programs :func:`train`
    compiles (no data read, nothing compiled)."""
    shape, n_eval, steps = setup.data.shape, setup.data.n_eval, setup.train.steps
    aug = augmentation(setup)
    model = _template(setup, aug.output_shape(shape))
    step, track = scale.noncontrastive_costs(
        model.apply, model.features, model.params, aug, _train_config(setup, n_eval, 0),
        _method_config(setup, method), image_shape=shape, n_train=setup.data.n_train, n_eval=n_eval)
    points = -(-steps // setup.train.track_every) + 1
    name = method.get("direct", method.get("predictor", "linear"))
    name = label or ("linear" if name == "none" else name)
    return [scale.Workload(f"{name} train step", step, steps * runs, "step", steps),
            scale.Workload(f"{name} tracking", track, points * runs, "point", points)]


def plan(cfg: NoncontrastiveDeepConfig, **device) -> scale.ComputePlan:
    """FLOPs per step and per tracking point of BYOL, and the estimated time of ``cfg.seeds`` runs on the default
    device (or the one named by ``device_kind=...``, ``platform=...``; :func:`stepwise.scale.make_plan`)."""
    work = workloads(cfg.setup, cfg.seeds)
    for name, sym in B4_PREDICTORS.items():
        if cfg.b4_seeds:
            work += workloads(cfg.setup, cfg.b4_seeds, label=f"B4 {name}", **_b4_method(cfg, sym))
    if cfg.b4_seeds:
        work += workloads(cfg.setup, cfg.b4_seeds, label="Fig. 6 rescue", **_b4_method(cfg, True, cfg.fig6_alpha_p))
    return scale.make_plan(f"{EXPERIMENT}: BYOL, {describe(cfg.setup)}, {cfg.seeds} seed(s)"
                           + (f", B4 ablation and Fig. 6 rescue {cfg.b4_seeds} seed(s)" if cfg.b4_seeds else ""),
                           work, dtype=cfg.setup.net.dtype, programs=2 + 6 * bool(cfg.b4_seeds), **device)


#: The B4 ablation's predictors (no EMA): name -> symmetrised W_p.
B4_PREDICTORS = {"symmetric": True, "regular": False}


def _b4_method(cfg: NoncontrastiveDeepConfig, symmetric: bool, alpha_p: float | None = None) -> dict:
    """Note B4's runs: no EMA (the target is the online network under stop-gradient), alpha_p of the ablation (or
    ``alpha_p``: the Fig. 6 rescue)."""
    return {"method": "simsiam", "symmetrize": symmetric, "alpha_p": cfg.b4_alpha_p if alpha_p is None else alpha_p}


def train(setup: NetSetup, data: Data, seed: int, *, progress: bool = False, checkpoints: Checkpointing | None = None,
          name: str = "", **method) -> NoncontrastiveRun:
    """One run with seed ``seed`` (network initialisation, predictor, batches, views); with ``checkpoints``, its
    training loop checkpoints to (and resumes from) the file ``name``.

    ``method`` overrides :class:`NoncontrastiveConfig` fields (e.g. ``predictor="mlp"``, ``direct="directpred"``).
    The apply function of seed 0's network is used for every seed (the same graph; only the parameters differ),
    so runs of one configuration share their compiled programs.
    """
    aug = augmentation(setup)
    shape = aug.output_shape(data.train.shape[1:])
    template = _template(setup, shape)
    params = template.params if seed == 0 else network(setup, shape, seed).params
    tcfg = _train_config(setup, data.evals.shape[0], seed)
    nc = _method_config(setup, method)
    return train_noncontrastive(template.apply, template.features, params, data.train, aug, tcfg, nc,
                                eval_images=data.evals, progress=progress, **checkpoint_kwargs(checkpoints, name))


@functools.lru_cache(maxsize=8)
def _template(setup: NetSetup, shape: tuple[int, int, int]) -> PureModel:
    """Seed 0's network, whose apply / features functions serve every seed of ``setup``."""
    return network(setup, shape, 0)


def run(cfg: NoncontrastiveDeepConfig, out_dir: str | Path, *, progress: bool = False,
        checkpoints: Checkpointing | None = None, plan: scale.ComputePlan | None = None) -> dict:
    """Run the experiment and write its files to ``out_dir``. Returns the results dictionary (with ``plan``, computed
    before the run, next to the measured times). ``checkpoints``: each seed's training checkpoints
    (``checkpoint-seed<k>.msgpack``, ``checkpoint-b4-<symmetric|regular>-seed<k>.msgpack``,
    ``checkpoint-fig6-symmetric-alpha<alpha_p>-seed<k>.msgpack``)."""
    from stepwise.plots.noncontrastive_deep import plot_noncontrastive_deep

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    data = load_data(cfg.setup)  # input errors surface here, before any compute
    runs, timings = [], []
    for seed in range(cfg.seeds):
        t = time.perf_counter()
        runs.append(train(cfg.setup, data, seed, progress=progress, checkpoints=checkpoints, name=f"seed{seed}"))
        timings.append(time.perf_counter() - t)
    b4, b4_timings = {name: [] for name in B4_PREDICTORS}, []  # the B4 ablation: F's spectrum at the end per seed
    for name, sym in B4_PREDICTORS.items():
        for seed in range(cfg.b4_seeds):
            t = time.perf_counter()
            r = train(cfg.setup, data, seed, progress=progress, checkpoints=checkpoints, name=f"b4-{name}-seed{seed}",
                      **_b4_method(cfg, sym))
            b4[name].append(np.linalg.eigvalsh(r.corr[-1].astype(np.float64))[::-1])
            b4_timings.append(time.perf_counter() - t)
    fig6, fig6_timings = [], []  # the Fig. 6 rescue: symmetric, no EMA, at fig6_alpha_p, B4's seeds
    for seed in range(cfg.b4_seeds):
        t = time.perf_counter()
        r = train(cfg.setup, data, seed, progress=progress, checkpoints=checkpoints,
                  name=f"fig6-symmetric-alpha{cfg.fig6_alpha_p:g}-seed{seed}",
                  **_b4_method(cfg, True, cfg.fig6_alpha_p))
        fig6.append(np.linalg.eigvalsh(r.corr[-1].astype(np.float64))[::-1])
        fig6_timings.append(time.perf_counter() - t)
    aligned = [tian2021.alignment_trajectory(r.corr, r.wp) for r in runs]
    checks = tian2021.deep_checks(aligned, min_cos=cfg.min_cos, min_modes=cfg.min_modes,
                                  max_asymmetry=cfg.max_asymmetry)
    b4_modes = {name: [int(np.sum(s > tian2021.ALIGN_FLOOR * s[0])) for s in v] for name, v in b4.items()}
    fig6_modes = [int(np.sum(s > tian2021.ALIGN_FLOOR * s[0])) for s in fig6]
    if cfg.b4_seeds:
        checks += tian2021.b4_checks(b4_modes, alpha_p=cfg.b4_alpha_p)
        checks += tian2021.fig6_checks({"base": b4_modes["symmetric"], "rescue": fig6_modes},
                                       alpha_p=cfg.fig6_alpha_p, base_alpha_p=cfg.b4_alpha_p, min_modes=cfg.min_modes)
    out_dir.mkdir(parents=True, exist_ok=True)
    stack = lambda name, src: np.stack([getattr(x, name) for x in src])  # noqa: E731
    io.save_npz_atomic(
        out_dir / DATA, step=runs[0].step, corr=stack("corr", runs), wp=stack("wp", runs), s=stack("s", aligned),
        p=stack("p", aligned), cos=stack("cos", aligned), alive=stack("alive", aligned),
        asymmetry=stack("asymmetry", aligned), min_eig_ratio=stack("min_eig_ratio", aligned),
        train_loss=stack("train_loss", runs), eval_loss=stack("eval_loss", runs),
        target_cos=stack("target_cos", runs), lr=np.float64(cfg.setup.train.lr), floor=np.float64(tian2021.ALIGN_FLOOR),
        **{f"b4_spectrum_{name}": np.asarray(v, np.float64).reshape(cfg.b4_seeds, cfg.setup.d)
           for name, v in b4.items()},
        fig6_spectrum_symmetric=np.asarray(fig6, np.float64).reshape(cfg.b4_seeds, cfg.setup.d),
        fig6_alpha_p=np.float64(cfg.fig6_alpha_p), b4_alpha_p=np.float64(cfg.b4_alpha_p),
        min_modes=np.int64(cfg.min_modes),
    )
    figure = plot_noncontrastive_deep(out_dir, min_cos=cfg.min_cos)
    end = [a.alive[-1] for a in aligned]
    summary = {
        "alignment_cos_end": [a.cos[-1][m].tolist() for a, m in zip(aligned, end)],
        "alignment_cos_start": [a.cos[0][m].tolist() for a, m in zip(aligned, end)],
        "non_null_modes_end": [int(m.sum()) for m in end],
        "asymmetry_start": [float(a.asymmetry[0]) for a in aligned],
        "asymmetry_end": [float(a.asymmetry[-1]) for a in aligned],
        "b3_loglog_slope": [tian2021.loglog_slope(a.s[-1], a.p[-1], m) for a, m in zip(aligned, end)],
        "spectrum_split_decades_and_null_change": [tian2021.spectrum_split(a.s) for a in aligned],
        "target_cos_end": [float(r.target_cos[-1]) for r in runs],
        "b4_non_null_modes_end": b4_modes, "b4_participation_ratio_end": {
            name: [float(np.sum(s) ** 2 / np.sum(s**2)) for s in v] for name, v in b4.items()},
        "fig6_non_null_modes_end": fig6_modes, "fig6_run_time_s": fig6_timings,
        "fig6_second_mode_ratio_end": [float(s[1] / s[0]) for s in fig6],
        "train_time_s": [r.train_time_s for r in runs], "run_time_s": timings, "b4_run_time_s": b4_timings,
        "time_per_step_ms": [1e3 * (r.train_time_s - r.tracking_time_s) / cfg.setup.train.steps for r in runs],
    }
    extra = {"summary": summary, "figures": [figure.name], "data": [DATA]}
    if plan is not None:
        extra["plan"] = plan.to_dict()
    return io.write_results(
        out_dir, experiment=EXPERIMENT, config=dataclasses.asdict(cfg), checks=checks,
        wall_time_s=time.perf_counter() - t0, extra=extra,
    )
