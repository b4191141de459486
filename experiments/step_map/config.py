"""Configuration of the step map: where steps appear, per published loss, over initialisation x learning rate x width.

Command:   make fig-step-map   (or `stepwise run step_map --out DIR`; `--smoke` for the 2 x 2 CI grid)
Runtime:   see README ("A map of where steps appear"; measured on the shared 2-core CPU). Every cell is one
           ``stepwise_deep`` training run (its CPU stand-in: an MLP on 8x8 digits), so the cost is the number of
           cells times the training steps; the default grid was sized for <= 15 min.
Verdict:   per loss, one theory check: some cell of the map shows >= 4 separated steps (Simon et al. 2023 E3: the
           three losses "all show very clear stepwise learning" with small initialisation and a small learning
           rate). The region of such cells, the best cell and, at standard initialisation (output layer at its usual
           scale), the separated eigenvalue steps against the flat loss plateaus (E4, a recollection [R]) are
           reported. Measured (default grid, seed 0; the README has the map): barlow_twins FAIL (best cell 3
           separated steps), simclr FAIL (best 3), vicreg PASS (best 6; 12 of 32 cells with >= 4). Default sweep
           683 s wall (562 s CPU) on the loaded 2-core CPU; smoke 27-38 s.

Each cell is :meth:`experiments.stepwise_deep.DeepConfig.for_loss` (the loss's CPU default: network, data, batch,
loss hyper-parameters, every-kernel ``init_scale``) with the swept fields replaced: the output layer's initial scale
(``head_scale``), the learning rate and the hidden width. The training time is the CPU default's, measured as the
theory does, in learning rate x steps (the step times of note 2.3 scale as 1 / lr): a cell with half the learning
rate trains twice as many steps, so a smaller learning rate is never penalised by having seen less of training.
"""

from __future__ import annotations

import dataclasses
import math

from experiments.stepwise_deep.config import LOSSES, PUBLISHED, DeepConfig
from stepwise.io import replace_config
from stepwise.errors import config_value_errors, raise_config_errors

#: The output layer's scale of standard initialisation (``head_scale`` 1: the layer as initialised by default).
STANDARD_HEAD_SCALE = 1.0


@dataclasses.dataclass(frozen=True)
class StepMapConfig:
    """A grid of ``stepwise_deep`` CPU runs per loss; each cell's steps detected by
    :func:`stepwise.compare.detect_steps`.

    Attributes:
      losses: the losses mapped (default: the published ones, :data:`experiments.stepwise_deep.config.PUBLISHED`).
      head_scales: initial scales of the output layer (``DeepConfig.head_scale``), increasing; must hold 1.0, the
        standard initialisation (theory note E4 is read off those cells).
      lrs: SGD learning rates, increasing.
      widths: hidden widths of the MLP (every hidden layer; ``depth`` layers), increasing: the architectural axis.
      depth: number of hidden layers (the CPU default has 2).
      duration: training time of every cell as a multiple of its loss's CPU default (lr x steps: Barlow Twins and
        SimCLR 0.02 x 3000, VICReg 0.02 x 1500); a cell trains ``duration x default lr x default steps / lr`` steps,
        rounded to a multiple of ``track_points``.
      track_points: tracking points per cell (the spectra every ``steps / track_points`` steps); the CPU default
        tracks 60 points for Barlow Twins and SimCLR.
      batch_size, n_train, n_eval: as in :class:`DeepConfig` (its defaults).
      min_steps: the separated steps a cell needs to count as stepwise (4: :func:`stepwise.compare.stepwise_checks`'
        criterion, theory note 6.10).
      seed: seeds every cell's model, batches and views (one seed per cell: the map's cost is its cell count).
    """

    losses: tuple[str, ...] = PUBLISHED
    head_scales: tuple[float, ...] = (1e-12, 1e-8, 1e-4, 1.0)
    lrs: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08)
    widths: tuple[int, ...] = (64, 256)
    depth: int = 2
    duration: float = 1.0
    track_points: int = 60
    batch_size: int = DeepConfig.train.batch_size
    n_train: int = DeepConfig.data.n_train
    n_eval: int = DeepConfig.data.n_eval
    min_steps: int = 4
    seed: int = 0

    def __post_init__(self):
        errors = config_value_errors(self)
        if not self.losses:
            errors.append("losses must name at least one loss (got ())")
        bad = [loss for loss in self.losses if loss not in LOSSES]
        if bad:
            errors.append(f"losses must be among {', '.join(LOSSES)} (got {', '.join(map(repr, bad))})")
        if len(set(self.losses)) != len(self.losses):
            errors.append(f"losses must not repeat (got {self.losses})")
        for name in ("head_scales", "lrs", "widths"):
            values = getattr(self, name)
            if not values:
                errors.append(f"{name} must hold at least one value (got ())")
            elif not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
                errors.append(f"every value of {name} must be finite and > 0 (got {values})")
            elif any(b <= a for a, b in zip(values, values[1:])):
                errors.append(f"{name} must be strictly increasing, each value once (got {values})")
        if self.head_scales and STANDARD_HEAD_SCALE not in self.head_scales:
            errors.append(f"head_scales must include {STANDARD_HEAD_SCALE:g}, the standard initialisation the "
                          f"E4 statistics are read from (got {self.head_scales})")
        if self.depth < 1:
            errors.append(f"depth must be >= 1 (got {self.depth})")
        if not self.duration > 0:
            errors.append(f"duration must be > 0 (got {self.duration})")
        # four points are the least a rise (10% and 90% crossings) and an onset before it can be placed on
        if self.track_points < 4:
            errors.append(f"track_points must be >= 4 (got {self.track_points})")
        if self.min_steps < 1:
            errors.append(f"min_steps must be >= 1 (got {self.min_steps})")
        if not errors:  # every cell must be a valid stepwise_deep run: refused here, before any compute
            try:
                for loss in self.losses:
                    self.standard_config(loss)
                    for h in self.head_scales:
                        for lr in self.lrs:
                            for w in self.widths:
                                self.cell_config(loss, h, lr, w)
            except ValueError as err:
                errors.append(f"a cell is not a valid stepwise_deep run: {err}")
        raise_config_errors(errors, "step_map")

    @property
    def n_cells(self) -> int:
        """Cells of the map (all losses)."""
        return len(self.losses) * len(self.head_scales) * len(self.lrs) * len(self.widths)

    def steps_for(self, loss: str, lr: float) -> int:
        """Training steps of a cell: the loss's CPU-default training time lr x steps (times ``duration``) at ``lr``,
        rounded to a multiple of ``track_points`` (at least one per tracking point)."""
        base = DeepConfig.for_loss(loss)
        per_point = max(1, round(self.duration * base.train.lr * base.train.steps / lr / self.track_points))
        return per_point * self.track_points

    def cell_config(self, loss: str, head_scale: float, lr: float, width: int) -> DeepConfig:
        """The ``stepwise_deep`` configuration of one cell (raises ValueError when it is not a valid run)."""
        steps = self.steps_for(loss, lr)
        return replace_config(
            DeepConfig.for_loss(loss), net={"head_scale": float(head_scale), "hidden": (int(width),) * self.depth},
            train={"lr": float(lr), "steps": steps, "track_every": steps // self.track_points,
                   "batch_size": self.batch_size, "seed": self.seed},
            data={"n_train": self.n_train, "n_eval": self.n_eval},
        )

    def standard_config(self, loss: str) -> DeepConfig:
        """The standard-initialisation run of theory note E4 for ``loss``: every kernel and the output layer at their
        usual scale, at the grid's learning rate and width nearest (in log) to the loss's CPU default. For a loss
        whose CPU default shrinks every kernel (SimCLR: ``init_scale`` 0.3) this is a run of its own; otherwise it
        is the map's cell at head scale 1."""
        base = DeepConfig.for_loss(loss)
        lr = min(self.lrs, key=lambda v: abs(math.log(v / base.train.lr)))
        width = min(self.widths, key=lambda v: abs(math.log(v / base.net.hidden[0])))
        return replace_config(self.cell_config(loss, STANDARD_HEAD_SCALE, lr, width), net={"init_scale": 1.0})

    def default_cell(self, loss: str) -> tuple[int, int, int] | None:
        """Indices (head scale, lr, width) of the loss's CPU default (:meth:`DeepConfig.for_loss`) on the map, or
        None when the grid does not hold it (e.g. the smoke grid, or a depth other than the default's)."""
        base = DeepConfig.for_loss(loss)
        hidden = base.net.hidden
        if len(set(hidden)) != 1 or len(hidden) != self.depth:
            return None
        try:
            return (self.head_scales.index(base.net.head_scale), self.lrs.index(base.train.lr),
                    self.widths.index(hidden[0]))
        except ValueError:
            return None

    @classmethod
    def smoke(cls) -> "StepMapConfig":
        """Seconds-long map for CI: a 2 x 2 grid (output layer 1e-12 and 1, lr 0.02 and 0.04) of a narrow MLP (width
        32), one twentieth of the CPU default's training time, 20 tracking points, batch 64 on 256 images."""
        return cls(head_scales=(1e-12, 1.0), lrs=(0.02, 0.04), widths=(32,), duration=0.05, track_points=20,
                   batch_size=64, n_train=256, n_eval=64)
