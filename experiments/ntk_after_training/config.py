"""Configuration of the after-training NTK experiment (Simon et al. 2023, E6; theory note 6.11, 6.12 and 7.9).

Command:   make fig-ntk-after-training   (or `stepwise run ntk_after_training --out DIR`)
Runtime:   CPU defaults (the three MLPs of `stepwise_deep` on digits, two NTKs of 897 points each): see the README
           (measured on the 2-core CPU; the NTKs dominate).
           GPU scale (`stepwise run ntk_after_training --scale gpu`; :meth:`NtkAfterTrainingConfig.gpu`): the three
           `DeepConfig.gpu` networks at ResNet width 0.25 (3000 steps each, 96.5 GFLOP per step) and float32 NTKs
           over 300 points (8.5 TFLOP each, a lower bound: :func:`stepwise.scale.ntk_flops`). Width 1 does not fit:
           its Jacobian is 64 outputs x 11.8M parameters (3 GB per example), ~1.3e14 FLOP per 300-point NTK at the
           float32 rate (60 TFLOP/s) before the blocked computation's recomputation. Compute 0.92 PFLOP, 8 s at the
           assumed 25%; with the assumed 10 s of compilation for each of 9 programs (step, tracker, NTK per network)
           the estimate is 98 s on one H200: over the 90 s target only through that assumption (not yet run on one).
Verdict:   for each loss the learned subspace matches the after-training NTK's kernel prediction better than random
           functions of the same kernel; the three methods resemble each other more than that baseline.

What the paper leaves open (E6: [U]) is a field here: how many images and augmentations the kernel is computed on
(``n_pairs`` fixed augmented pairs of training images plus the tracked evaluation views), the kernel's centring, the
similarity metric (subspace similarity = mean cos^2 of the principal angles, :mod:`stepwise.compare.ntk_agreement`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from experiments.stepwise_deep.config import DeepConfig, Loss
from stepwise.errors import config_value_errors, raise_config_errors
from stepwise.io import replace_config

LOSSES: tuple[Loss, ...] = ("barlow_twins", "simclr", "vicreg")

# The GPU scale's networks (see the module docstring for how they were sized).
GPU_WIDTH = 0.25
GPU_STEPS = 3000


@dataclasses.dataclass(frozen=True)
class NtkAfterTrainingConfig:
    """The three `stepwise_deep` networks, their empirical NTKs, and the kernel theory's predictions.

    Attributes:
      losses: which `stepwise_deep` runs (each with its CPU default, :meth:`DeepConfig.for_loss`).
      steps: override of every network's training steps (None: each loss's default).
      n_pairs: fixed augmented training pairs the NTK is computed over (2 n_pairs points, plus the n_eval tracked
        evaluation views).
      center: centre the kernel in feature space (the kernel of a loss on centred embeddings; measured on the
        defaults: centring raises every similarity by 0.03-0.12).
      ntk_at_init: also compute the NTK at initialisation (reported next to the after-training one, not gated).
      backend: empirical-NTK backend (:func:`stepwise.ntk.empirical_ntk`).
      n_draws: random functions of the same kernel drawn for the baseline.
      seed: seeds the networks (as `stepwise_deep`), the NTK pairs and the baseline draws.
      smoke_networks: use :meth:`DeepConfig.smoke` networks (tests).
      dataset, data_dir: the image source (as `stepwise_deep`).
      scale: ``cpu`` (each network :meth:`DeepConfig.for_loss`) or ``gpu`` (:meth:`DeepConfig.gpu` on ``dataset`` /
        ``data_dir``, with the overrides below).
      width, batch_size, n_eval: overrides of every network's ResNet width, batch size and held-out images (None:
        the network's own); the NTK is computed over 2 n_pairs + n_eval points.
    """

    losses: tuple[Loss, ...] = LOSSES
    steps: int | None = None
    n_pairs: int = 300
    center: bool = True
    ntk_at_init: bool = True
    backend: Literal["jax", "neural_tangents", "auto"] = "jax"
    n_draws: int = 20
    seed: int = 0
    smoke_networks: bool = False
    dataset: Literal["digits", "patches", "cifar10", "stl10"] = "digits"
    data_dir: str | None = None
    scale: Literal["cpu", "gpu"] = "cpu"
    width: float | None = None
    batch_size: int | None = None
    n_eval: int | None = None

    def __post_init__(self):
        errors = config_value_errors(self)
        if len(self.losses) < 2 or len(set(self.losses)) != len(self.losses):
            errors.append(f"losses must be at least two distinct losses of {LOSSES} (got {self.losses})")
        if any(loss not in LOSSES for loss in self.losses):
            errors.append(f"unknown loss in {self.losses}; expected some of {LOSSES}")
        if self.steps is not None and self.steps < 2:
            errors.append(f"steps must be >= 2 (got {self.steps})")
        if self.n_pairs < 2:
            errors.append(f"n_pairs must be >= 2 (got {self.n_pairs})")
        if self.n_draws < 2:
            errors.append(f"n_draws must be >= 2 (got {self.n_draws})")
        if self.width is not None and not self.width > 0:
            errors.append(f"width must be > 0 or None (got {self.width})")
        if self.batch_size is not None and self.batch_size < 2:
            errors.append(f"batch_size must be >= 2 or None (got {self.batch_size})")
        if self.n_eval is not None and self.n_eval < 2:
            errors.append(f"n_eval must be >= 2 or None (got {self.n_eval})")
        if self.scale not in ("cpu", "gpu"):
            errors.append(f"scale must be 'cpu' or 'gpu' (got {self.scale!r})")
        if not errors:  # the networks' own configs validate the rest (and the pairs against n_train)
            for loss in self.losses:
                if self.n_pairs > self.deep_config(loss).data.n_train:
                    errors.append(f"n_pairs {self.n_pairs} exceeds the {loss} network's n_train")
        raise_config_errors(errors, "ntk_after_training")

    def deep_config(self, loss: Loss) -> DeepConfig:
        """The `stepwise_deep` configuration of one network."""
        if self.smoke_networks:
            cfg = DeepConfig.smoke(loss)
        elif self.scale == "gpu":
            cfg = DeepConfig.gpu(loss, dataset=self.dataset, data_dir=self.data_dir)
        else:
            cfg = DeepConfig.for_loss(loss)
        given = {name: getattr(self, name) for name in ("steps", "width", "batch_size", "n_eval")
                 if getattr(self, name) is not None}
        groups = {"train": {"seed": self.seed}, "data": {"dataset": self.dataset, "data_dir": self.data_dir},
                  "net": {}}
        for name, value in given.items():
            groups[{"steps": "train", "batch_size": "train", "width": "net", "n_eval": "data"}[name]][name] = value
        return replace_config(cfg, **groups)

    @classmethod
    def gpu(cls, *, dataset: str | None = None, data_dir: str | None = None) -> "NtkAfterTrainingConfig":
        """GPU scale, sized to finish in <= 90 s on one H200 (module docstring): the three :meth:`DeepConfig.gpu`
        networks (bf16, batch 256, 32x32 patches or a local STL-10 / CIFAR-10) at ResNet width 0.25 for
        :data:`GPU_STEPS` steps each, and float32 NTKs over 2 x 100 training views and 100 evaluation views."""
        from stepwise.data import detect_local_dataset

        if dataset is None:
            dataset = "patches" if data_dir is None else detect_local_dataset(data_dir)
        return cls(scale="gpu", dataset=dataset, data_dir=data_dir, width=GPU_WIDTH, steps=GPU_STEPS, n_pairs=100,
                   n_eval=100)

    @classmethod
    def smoke(cls) -> "NtkAfterTrainingConfig":
        """Seconds-long run for the tests: the smoke networks, few pairs and draws."""
        return cls(smoke_networks=True, steps=60, n_pairs=24, n_draws=4)
