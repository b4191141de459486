"""Configuration of the speed-up experiment (Simon et al. 2023, section 5: focus the gradient on small eigendirections).

Command:   make fig-speedup      (or `stepwise run speedup --out DIR`; `--smoke` for the seconds-long version)
Runtime:   default 41-43 s wall on the shared 2-core CPU (load 4-8; linear part ~5 s, the MLP 3 seeds x 2 networks
           ~35 s); smoke 23 s; both in results.json (``wall_time_s``, ``summary.linear_time_s`` / ``deep_time_s``).
Verdict:   passes. Linear model: every variant's step times match its exact per-mode GD map (~3e-10) and t_d falls by
           the predicted factor (input 7.60x, boost 8.84x, both 63.9x on digits, d = 8); from a random init plain and
           boost stay within theory note 6.3's 5%. MLP: last step 572-637 -> 68-86 SGD steps (7.5-8.4x; head-kernel
           theory 8.2-8.6x), final held-out loss no higher.

Two parts share the config:

- the linear model of ``linear_bt`` (same data pipeline; d, init and learning rate here) from aligned initialisation
  W(0) = U S(0) V_d^T (theory note 2.2; U random orthogonal, s_j(0) = init_scale / sqrt(gamma_1), so
  lambda_j(0) = init_scale^2 gamma_j / gamma_1), trained by GD in float64 under the four update rules of
  :mod:`stepwise.theory.speedup` (plain, input, boost, input_boost), each at ``lr_scale`` x its own stability limit;
- the deep stand-in: ``stepwise_deep``'s MLP on digits with the centred theory-form Barlow Twins loss, trained plain
  and with the boost (a loss whose gradient is the per-mode rescaled one), ``deep.seeds`` seeds.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from stepwise.data import PairData
from stepwise.errors import bound_errors, config_value_errors, raise_config_errors


@dataclasses.dataclass(frozen=True)
class SpeedupDeep:
    """The deep stand-in: ``stepwise_deep``'s MLP (no projector) on digits, trained plain and boosted.

    Attributes:
      run: run the deep stand-in.
      hidden: hidden widths of the MLP.
      d: the MLP's embedding dimension.
      lr_scale: SGD learning rate of both networks as a fraction of 1 / (4 gamma_1), gamma_1 the top eigenvalue of
        the head kernel's Gamma at initialisation (measured at the start of each run).
      eps: the boost's eps for the MLP.
      head_scale: factor on the output layer's initial kernel (small initialisation).
      steps: SGD steps of each network (None: ``steps_factor`` x the head-kernel prediction of plain's last step,
        rounded up to a tracking point).
      steps_factor: see ``steps``.
      seeds: seeds 0..seeds-1 (model, batches, views); the gated deep statistics are over seeds.
      batch_size: pairs per SGD step.
      n_train: training images (digits).
      n_eval: held-out images whose fixed pair of views is tracked (loss, spectra).
      track_every: SGD steps between tracking points (the resolution of the last step's time).
      n_pairs: augmented training pairs over which the head kernel's Gamma is estimated at initialisation.
      loss_level: the last step's time on the MLP is the first step at which the held-out loss is at or below this
        level (0.5: half-way between the last plateau, 1, and the minimum, 0; theory note 2.5).
    """

    run: bool = True
    hidden: tuple[int, ...] = (128, 128)
    d: int = 4
    lr_scale: float = 0.1
    eps: float = 0.1
    head_scale: float = 1e-12
    steps: int | None = None
    steps_factor: float = 1.5
    seeds: int = 3
    batch_size: int = 256
    n_train: int = 1500
    n_eval: int = 297
    track_every: int = 10
    n_pairs: int = 512
    loss_level: float = 0.5

    def __post_init__(self):
        errors = config_value_errors(self) + bound_errors(self, ("eps", "> 0"), ("head_scale", "> 0"))
        if any(w < 1 for w in self.hidden):
            errors.append(f"every width in hidden must be >= 1 (got {self.hidden})")
        errors += bound_errors(
            self, ("d", ">= 2"), ("lr_scale", "in (0, 1)"), ("steps", ">= 1 or None"), ("steps_factor", ">= 1"),
            ("seeds", ">= 1"), ("track_every", ">= 1"), ("batch_size", ">= 2"), ("n_eval", ">= 2"), ("n_pairs", ">= 2"))
        if self.batch_size > self.n_train or self.n_pairs > self.n_train:
            errors.append(f"batch_size and n_pairs must not exceed n_train = {self.n_train}")
        errors += bound_errors(self, ("loss_level", "in (0, 1)", ", between the last plateau and the minimum"))
        raise_config_errors(errors, "speedup", "deep")


@dataclasses.dataclass(frozen=True)
class SpeedupConfig:
    """Plain Barlow Twins vs gradient focused on small eigendirections, in the linear model and on an MLP.

    Attributes:
      data: the linear model's fixed pairs (:class:`stepwise.data.PairData`, as ``linear_bt``; no held-out images).
      d: embedding dimension of the linear model; the last step is mode d's.
      init_scale: s_j(0) = init_scale / sqrt(gamma_1), so lambda_j(0) = init_scale^2 gamma_j / gamma_1.
      lr_scale: every variant's learning rate as a fraction of its own GD stability limit 1 / (4 max_k g_k).
      eps: the boost's eps: a mode that has not appeared gets (1 + eps) / eps times the plain gradient.
      rank: rank r of the input preconditioner (None: d).
      settle_widths: each variant runs until its last predicted step plus this many of its rise widths.
      random_init: also train every variant from ``linear_bt``'s small random initialisation (i.i.d. entries of std
        init_scale / sqrt(gamma_1)), predicted with Gram-Schmidt amplitudes (theory note 2.4).
      deep: the deep stand-in (:class:`SpeedupDeep`).
      seed: seeds the linear model's data, crops and U.
    """

    # Flags of the flat config of earlier releases whose names do not say where they went (stepwise.cli; until the
    # next release): --deep / --no-deep ran the MLP part; --n-pairs was the linear model's (the MLP's was
    # --deep-n-pairs).
    LEGACY_FLAGS: ClassVar[dict[str, str]] = {"deep": "deep.run", "n_pairs": "data.n_pairs"}

    data: PairData = PairData(dataset="digits", n_pairs=500, n_test=0)
    d: int = 8
    init_scale: float = 1e-6
    lr_scale: float = 0.02
    eps: float = 0.1
    rank: int | None = None
    settle_widths: float = 6.0
    random_init: bool = True
    deep: SpeedupDeep = SpeedupDeep()
    seed: int = 0

    def __post_init__(self):
        errors = config_value_errors(self)
        errors += bound_errors(self, ("d", ">= 1"))
        if self.rank is not None and self.rank < self.d:
            errors.append(f"rank must be >= d = {self.d} (the preconditioner must cover the learned modes; got "
                          f"{self.rank})")
        # init_scale: lambda_j(0) = init_scale^2 gamma_j / gamma_1 must start below the learned value 1 for a step.
        errors += bound_errors(
            self, ("init_scale", "in (0, 1)"),
            ("lr_scale", "in (0, 1)", ", a fraction of each variant's stability limit"),
            ("eps", "> 0"), ("settle_widths", ">= 0"))
        raise_config_errors(errors, "speedup")

    @property
    def effective_rank(self) -> int:
        return self.d if self.rank is None else self.rank

    @classmethod
    def smoke(cls) -> "SpeedupConfig":
        """Seconds-long: few pairs and small crops for the linear model; a one-hidden-layer MLP, one seed."""
        return cls(data=PairData(dataset="digits", n_pairs=80, crop=5, n_test=0), d=4,
                   deep=SpeedupDeep(hidden=(64,), d=3, seeds=1, batch_size=64, n_train=256, n_eval=64, n_pairs=128,
                                    track_every=5, head_scale=1e-6, lr_scale=0.15))
