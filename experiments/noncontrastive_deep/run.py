"""Runner for the deep non-contrastive experiment (Tian, Chen & Ganguli 2021, Fig. 2 and Table 3; theory note
checklist B1-B4).

Trains BYOL with a linear predictor (``seeds`` runs), tracks F = E[f f^T] of the online projector outputs and W_p,
and checks alignment, symmetry and the spectrum; then the B4 ablation (``no_ema.seeds`` runs each without EMA, with
a symmetric and with a regular W_p, at ``no_ema.alpha_p``) and whether the symmetric one collapses, and the Fig. 6
rescue (``no_ema.seeds`` more symmetric runs without EMA at ``no_ema.rescue_alpha_p``). Writes to ``out_dir``, each file
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
    work, n = workloads(cfg.setup, cfg.seeds), cfg.no_ema.seeds
    for label, _, method in no_ema_runs(cfg).values() if n else ():
        work += workloads(cfg.setup, n, label=label, **method)
    return scale.make_plan(f"{EXPERIMENT}: BYOL, {describe(cfg.setup)}, {cfg.seeds} seed(s)"
                           + (f", B4 ablation and Fig. 6 rescue {n} seed(s)" if n else ""),
                           work, dtype=cfg.setup.net.dtype, programs=2 + 6 * bool(n), **device)


def no_ema_runs(cfg: NoncontrastiveDeepConfig) -> dict[str, tuple[str, str, dict]]:
    """The runs without EMA (the target is the online network under stop-gradient), ``no_ema.seeds`` of each: note
    B4's ablation, a symmetric (``base``) and a ``regular`` W_p at ``no_ema.alpha_p``, and the Fig. 6 ``rescue``,
    the symmetric W_p at ``no_ema.rescue_alpha_p``: key -> (plan label, checkpoint name,
    :class:`NoncontrastiveConfig` overrides)."""
    def method(symmetric: bool, alpha_p: float) -> dict:
        return {"method": "simsiam", "symmetrize": symmetric, "alpha_p": alpha_p}

    b4, fig6 = cfg.no_ema.alpha_p, cfg.no_ema.rescue_alpha_p
    return {"base": ("B4 symmetric", "b4-symmetric-seed{}", method(True, b4)),
            "regular": ("B4 regular", "b4-regular-seed{}", method(False, b4)),
            "rescue": ("Fig. 6 rescue", f"fig6-symmetric-alpha{fig6:g}-seed{{}}", method(True, fig6))}


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

    def seeds(n: int, name: str, keep=lambda r: r, **method) -> tuple[list, list[float]]:
        """``keep`` of seeds 0..n-1's runs of ``method`` (checkpoint names ``name.format(seed)``), their seconds."""
        out, seconds = [], []
        for seed in range(n):
            t = time.perf_counter()
            out.append(keep(train(cfg.setup, data, seed, progress=progress, checkpoints=checkpoints,
                                  name=name.format(seed), **method)))
            seconds.append(time.perf_counter() - t)
        return out, seconds

    runs, timings = seeds(cfg.seeds, "seed{}")
    no_ema = {k: seeds(cfg.no_ema.seeds, name, lambda r: tian2021.end_spectrum(r.corr), **method)
              for k, (_, name, method) in no_ema_runs(cfg).items()}
    spectra = {k: v[0] for k, v in no_ema.items()}  # F's spectrum at the end per seed
    aligned = [tian2021.alignment_trajectory(r.corr, r.wp) for r in runs]
    checks = tian2021.deep_checks(aligned, min_cos=cfg.min_cos, min_modes=cfg.min_modes,
                                  max_asymmetry=cfg.max_asymmetry)
    modes = {k: [tian2021.non_null_modes(s) for s in v] for k, v in spectra.items()}
    if cfg.no_ema.seeds:
        checks += tian2021.no_ema_checks(modes, b4_alpha_p=cfg.no_ema.alpha_p, fig6_alpha_p=cfg.no_ema.rescue_alpha_p,
                                         min_modes=cfg.min_modes)
    out_dir.mkdir(parents=True, exist_ok=True)
    io.save_npz_atomic(
        out_dir / DATA, step=runs[0].step,
        **{k: np.stack([getattr(r, k) for r in runs]) for k in ("corr", "wp", "train_loss", "eval_loss", "target_cos")},
        **{f.name: np.stack([getattr(a, f.name) for a in aligned]) for f in dataclasses.fields(tian2021.Alignment)},
        lr=np.float64(cfg.setup.train.lr), floor=np.float64(tian2021.ALIGN_FLOOR),
        **{f"{a}_spectrum_{b}": np.asarray(spectra[k], np.float64).reshape(cfg.no_ema.seeds, cfg.setup.d)
           for k, a, b in (("base", "b4", "symmetric"), ("regular", "b4", "regular"), ("rescue", "fig6", "symmetric"))},
        fig6_alpha_p=np.float64(cfg.no_ema.rescue_alpha_p), b4_alpha_p=np.float64(cfg.no_ema.alpha_p),
        min_modes=np.int64(cfg.min_modes),
    )
    figure = plot_noncontrastive_deep(out_dir, min_cos=cfg.min_cos)
    summary = {
        **tian2021.alignment_summary(aligned), "target_cos_end": [float(r.target_cos[-1]) for r in runs],
        **tian2021.no_ema_summary(spectra), "fig6_run_time_s": no_ema["rescue"][1],
        "train_time_s": [r.train_time_s for r in runs], "run_time_s": timings,
        "b4_run_time_s": no_ema["base"][1] + no_ema["regular"][1],
        "time_per_step_ms": [1e3 * (r.train_time_s - r.tracking_time_s) / cfg.setup.train.steps for r in runs],
    }
    return io.write_results(
        out_dir, experiment=EXPERIMENT, config=dataclasses.asdict(cfg), checks=checks, plan=plan,
        wall_time_s=time.perf_counter() - t0, extra={"summary": summary, "figures": [figure.name], "data": [DATA]},
    )
