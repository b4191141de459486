"""Runner for the deep stepwise experiment: train a network with one SSL loss and detect its steps.

Writes to ``out_dir`` (each file atomically, results.json last): ``spectrum.npz`` (``step`` (T,), ``eigenvalues``
(T, d) = embedding covariance at the output, sorted decreasing; plus the cross-correlation and backbone spectra,
the losses, the embedding snapshots and the linear-probe accuracies), ``stepwise_deep.png`` and ``results.json``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from experiments.stepwise_deep.config import PUBLISHED, DeepConfig
from stepwise import compare, io, scale
from stepwise.compare import hidden
from stepwise.compare.probe import linear_probe_accuracy
from stepwise.data import Augmentation
from stepwise.losses import get_loss
from stepwise.training import TrainConfig, train_ssl
from stepwise.training.ssl import Checkpointing, checkpoint_kwargs

EXPERIMENT = "stepwise_deep"


def _train_config(cfg: DeepConfig) -> TrainConfig:
    """``cfg.train`` keeping every evaluation embedding (the probe labels them all)."""
    return dataclasses.replace(cfg.train, n_snapshot=cfg.data.n_eval)


def describe(cfg: DeepConfig) -> str:
    """One line: the network, data, batch and dtype of a configuration."""
    net = cfg.net
    view = cfg.augmentation().output_shape(cfg.data.shape)
    return (f"{net.model} ({net.size()}, projector {net.projector or 'none'}) on {cfg.data.dataset} "
            f"{view[0]}x{view[1]}x{view[2]}, batch {cfg.train.batch_size}, {net.dtype}")


def model_label(cfg: DeepConfig) -> str:
    """The network's short name: ``mlp``, ``cnn``, or ``resnet<depth>`` (2 + 8 x blocks per stage: 18, or 10 for the
    CPU stand-in) with its width and GroupNorm."""
    if cfg.net.model != "resnet18":
        return cfg.net.model
    return f"resnet{2 + 8 * cfg.net.resnet_blocks} (GroupNorm, width {cfg.net.width:g})"


def costs(cfg: DeepConfig) -> tuple[float, float]:
    """FLOPs of one training step and of one tracking point of ``cfg``'s run (XLA's cost analysis; no data is read,
    nothing is compiled). Raises ValueError for a configuration that does not fit (e.g. a crop larger than the
    images)."""
    shape = cfg.data.shape
    aug = cfg.augmentation()
    model = cfg.build_model(aug.output_shape(shape))
    return scale.ssl_costs(model.apply, model.features if cfg.net.projector else None, model.params, _loss(cfg), aug,
                           _train_config(cfg), image_shape=shape, n_train=cfg.data.n_train, n_eval=cfg.data.n_eval)


def workloads(cfg: DeepConfig, *, runs: int = 1) -> list[scale.Workload]:
    """The training step and the tracking of ``runs`` runs of ``cfg``."""
    step, track = costs(cfg)
    steps = cfg.train.steps
    points = -(-steps // cfg.train.track_every) + 1
    return [scale.Workload("train step", step, steps * runs, "step", steps),
            scale.Workload("tracking", track, points * runs, "point", points)]


def plan(cfg: DeepConfig, **device) -> scale.ComputePlan:
    """FLOPs per step and per tracking point, and the estimated time of the run on the default device (or the one
    named by ``device_kind=...``, ``platform=...``; see :func:`stepwise.scale.make_plan`)."""
    return scale.make_plan(f"{EXPERIMENT}/{cfg.loss}: {describe(cfg)}", workloads(cfg), dtype=cfg.net.dtype,
                           programs=2, **device)


def _loss(cfg: DeepConfig):
    """The loss ``cfg.loss`` of :mod:`stepwise.losses` with the config's hyper-parameters (each name is that loss)."""
    w = cfg.vicreg_weights
    hparams = {
        "barlow_twins": {"lambda_offdiag": cfg.bt_lambda},
        "simclr": {"temperature": cfg.temperature},
        "vicreg": {"sim_weight": w[0], "var_weight": w[1], "cov_weight": w[2]},
        "barlow_twins_theory": {"center": cfg.theory_center},
        "infonce_floored": {"temperature": cfg.temperature, "norm_floor": cfg.norm_floor},
    }[cfg.loss]
    return get_loss(cfg.loss, **hparams)


def hidden_checks(cfg: DeepConfig, det_feat: compare.StepDetection, cov_feat: np.ndarray) -> list[compare.Check]:
    """Simon et al. E5 (hidden representations), reported and not gated (:func:`stepwise.compare.hidden.hidden_checks`:
    steps in the backbone-output covariance and its effective dimension). Empty without a projector (the backbone
    output is then the embedding itself)."""
    return hidden.hidden_checks(det_feat, cov_feat) if cfg.net.projector else []


@dataclasses.dataclass(frozen=True)
class TrainedNetwork:
    """One trained network of this experiment and what it was trained on (shared with ``ntk_after_training``).

    Attributes:
      model: the :class:`stepwise.models.PureModel` at initialisation (``model.params``: the initial parameters).
      result: the :class:`stepwise.training.SSLRun` (final parameters, tracked spectra, evaluation snapshots).
      train, evals: (n_train, H, W, C) training and (n_eval, H, W, C) evaluation images (normalised, float32).
      eval_labels: (n_eval,) labels of the evaluation images.
      aug: the augmentation producing the views.
    """

    model: object
    result: object
    train: np.ndarray
    evals: np.ndarray
    eval_labels: np.ndarray
    aug: Augmentation


def train_network(cfg: DeepConfig, *, checkpoints: Checkpointing | None = None, name: str = "",
                  progress: bool = False) -> TrainedNetwork:
    """Build the data, model, loss and augmentation of ``cfg`` and train (input errors raise before any compute);
    with ``checkpoints``, the training loop checkpoints to (and resumes from) its file ``name``."""
    train, evals, eval_labels = cfg.load_data()
    aug = cfg.augmentation()
    view_shape = aug.output_shape(train.shape[1:])
    model = cfg.build_model(view_shape)
    tcfg = _train_config(cfg)
    train, evals = train.astype(np.float32), evals.astype(np.float32)
    res = train_ssl(
        model.apply, model.features if cfg.net.projector else None, model.params, _loss(cfg), train, aug, tcfg,
        eval_images=evals, progress=progress, **checkpoint_kwargs(checkpoints, name),
    )
    return TrainedNetwork(model=model, result=res, train=train, evals=evals, eval_labels=eval_labels, aug=aug)


def run(cfg: DeepConfig, out_dir: str | Path, *, progress: bool = False, checkpoints: Checkpointing | None = None,
        plan: scale.ComputePlan | None = None) -> dict:
    """Train, track, detect steps and write the run directory. Returns the results dictionary.

    ``plan`` (:func:`plan`, computed before the run) is written to results.json next to the measured times.
    ``checkpoints``: where and how often training checkpoints (``checkpoint.msgpack``), and whether it resumes."""
    from stepwise.plots.deep import plot_stepwise_deep

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    net = train_network(cfg, checkpoints=checkpoints, progress=progress)
    res, eval_labels = net.result, net.eval_labels
    t = res.step.astype(np.float64)
    det = compare.detect_steps(t, res.cov_out, res.eval_loss)
    det_feat = compare.detect_steps(t, res.cov_feat, None)
    probe = linear_probe_accuracy(res.snapshots, eval_labels, seed=cfg.train.seed)
    checks = compare.stepwise_checks(det, cfg.min_steps, min_separated_fraction=cfg.min_separated_fraction,
                                     min_plateaus=cfg.min_plateaus) + hidden_checks(cfg, det_feat, res.cov_feat)
    out_dir.mkdir(parents=True, exist_ok=True)
    io.save_npz_atomic(
        out_dir / "spectrum.npz",
        step=res.step, eigenvalues=res.cov_out, cross_correlation=res.bt_out, backbone_eigenvalues=res.cov_feat,
        backbone_cross_correlation=res.bt_feat, eval_loss=res.eval_loss, train_loss=res.train_loss,
        snapshots=res.snapshots, probe_accuracy=probe, onsets=det.onsets, widths=det.widths,
        well_separated=det.well_separated, rank=det.rank, lr=np.float64(cfg.train.lr),
    )
    figure = plot_stepwise_deep(out_dir, title=f"{cfg.loss} - {model_label(cfg)} on {cfg.data.dataset}")
    summary = {
        "loss_form": "published" if cfg.loss in PUBLISHED else "theory",
        "n_steps": det.n_steps, "onsets": det.onsets, "widths": det.widths, "separations": det.separations,
        "n_plateaus": det.n_plateaus, **det.summary(),
        "backbone_steps": det_feat.n_steps, "probe_accuracy_final": probe[-1], "probe_accuracy_initial": probe[0],
        "train_time_s": res.train_time_s, "tracking_fraction": res.tracking_fraction,
        "time_per_step_ms": 1e3 * (res.train_time_s - res.tracking_time_s) / max(cfg.train.steps, 1),
    }
    if plan is not None:  # the step's compilation is inside the timed loop: a lower bound for short runs
        summary["achieved_flop_per_s"] = (plan.step_flops * cfg.train.steps
                                          / max(res.train_time_s - res.tracking_time_s, 1e-9))
    return io.write_results(
        out_dir, experiment=f"{EXPERIMENT}/{cfg.loss}", config=dataclasses.asdict(cfg), checks=checks,
        wall_time_s=time.perf_counter() - t0, plan=plan,
        extra={"summary": summary, "figures": [figure.name], "data": ["spectrum.npz"]},
    )
