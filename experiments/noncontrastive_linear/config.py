"""Configuration of the linear non-contrastive experiment (Tian, Chen & Ganguli 2021; theory note tian2021, A1-A9).

Command:   make fig-noncontrastive-linear   (or `stepwise run noncontrastive_linear --out DIR`)
Runtime:   about 25 s of CPU (54 s wall on a 2-core machine shared with other jobs), most of it compiling the two
           diffrax solvers; results.json records the wall time. smoke(): about 15 s, also mostly compilation.
Verdict:   31 checks: 27 theory, 3 consistency, 1 reported; every gated one passes. Theory (the paper's results
           against the integrated Lemma 1; thresholds are the note's or numerical zeros of the float64 solver at rtol
           1e-10): Theorem 1's invariant to 1e-6 relative, Theorem 2's decay bound, Theorem 3's identity and commutator
           bound and alignment, the per-mode integral and the aligned reduction, the basins around p_- and collapse
           above the threshold (the note's 1e-4), non-collapse above the parabola at eta = 0, the full matrix model's
           limit (aligned, symmetric W_p, tau -> 1, modes at p_+ or 0, at least one survivor), cos(W_a, W) >= 0.9
           (Fig. 7), the vanishing asymmetric part of W_p (Fig. 8), and Fig. 9 at tau = 2: Theorem 3's bound in the
           stable setting (eta = 0.5, K > 0 by construction), its Gronwall form ||L(t)|| <= ||L(0)|| exp(-2 int
           lambda_min K) in both settings (eta = 0.5 and eta = 0), and at aligned fixed points of the eta = 0 flow a
           perturbed W_p's commutator growing (k_i + k_j < 0) or decaying as Eqn 8 linearised predicts (default:
           x56.12 measured vs x56.12 predicted, relative error 7e-7). Reported: the eta = 0 random start's transient
           commutator growth (x3.7 default, x1.8 smoke; it re-aligns later: "can blow up" is not a strict
           prediction). Consistency (true by construction; they test the code): lambda_min(H) >= sigma2 + eta for any
           W_p, Theorem 3's hypothesis lambda_min K > 0 for the chosen eta, and the fixed-point formula against the
           note's 5-decimal table of the same formula.

Values the paper does not state (note section 7.11) are fields here and go to results.json: the dimensions,
sigma2 of Figs. 3/5/8, the initial scales, the horizons and the seeds. The matrix-model settings of A7 are the
note's derived reference (n1 = 16, n2 = 8, sigma2 = 0.5, eta = 0.04, alpha_p = 1, beta = 0.4, W_a(0) = 0,
init scale 0.1/sqrt(n)); Fig. 7's (sigma = 0.03, eta in {0, 0.01, 0.1}, 10 runs) for A8.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from stepwise.errors import bound_errors, config_value_errors, raise_config_errors


def _decay_errors(name: str, values: tuple[float, ...]) -> list[str]:
    """A tuple of weight decays: non-empty, every value finite and >= 0."""
    if not values or any(not (math.isfinite(v) and v >= 0) for v in values):
        return [f"{name} must be a non-empty tuple of finite values >= 0 (got {values})"]
    return []


@dataclasses.dataclass(frozen=True)
class EmaRuns:
    """A8 (Fig. 7): the matrix model with an EMA target (W_a(0) = 0) at a small augmentation, cos(W_a, W) over time.

    Attributes:
      sigma: augmentation standard deviation (X = I, X' = sigma^2 I; the paper's 0.03).
      etas, betas: weight decays and EMA rates; every pair is run.
      seeds: runs (initialisations) per pair.
      time: horizon.
    """

    sigma: float = 0.03
    etas: tuple[float, ...] = (0.0, 0.01, 0.1)
    betas: tuple[float, ...] = (0.4, 1.0)
    seeds: int = 5
    time: float = 300.0

    def __post_init__(self):
        errors = config_value_errors(self) + bound_errors(self, ("sigma", ">= 0"), ("seeds", ">= 1"), ("time", "> 0"))
        if any(not 0 < b <= 1 for b in self.betas) or not self.betas:
            errors.append(f"betas must be a non-empty tuple of values in (0, 1] (got {self.betas})")
        raise_config_errors(errors + _decay_errors("etas", self.etas), "noncontrastive_linear", "ema")


@dataclasses.dataclass(frozen=True)
class AsymmetryRuns:
    """A9 (Fig. 8): the asymmetric part of W_p at constant tau from C = 0, over ``t_long``.

    Attributes:
      etas: weight decays (> 0: the asymmetric part decays through weight decay).
      tau: the constant tau.
    """

    etas: tuple[float, ...] = (0.001, 0.01, 0.05)
    tau: float = 1.0

    def __post_init__(self):
        errors = config_value_errors(self) + _decay_errors("etas", self.etas) + bound_errors(self, ("tau", "> 0"))
        if any(e == 0 for e in self.etas):
            errors.append("etas must be > 0 (the asymmetric part decays through weight decay)")
        raise_config_errors(errors, "noncontrastive_linear", "asym")


@dataclasses.dataclass(frozen=True)
class AlignRuns:
    """A3 (Theorem 3): the symmetrised W_p flow at constant tau, over ``t_align``.

    Attributes:
      eta, tau: weight decay and the constant tau (1.5 eta > tau^2 / (4 (1 + sigma2)) makes K positive definite
        along any trajectory, the theorem's hypothesis; checked as ``a3_lambda0``).
    """

    eta: float = 0.12
    tau: float = 1.0

    def __post_init__(self):
        errors = config_value_errors(self) + bound_errors(self, ("eta", ">= 0"), ("tau", "> 0"))
        raise_config_errors(errors, "noncontrastive_linear", "align")


@dataclasses.dataclass(frozen=True)
class Fig9Runs:
    """Fig. 9 (constant tau, symmetrised predictor): Theorem 3's bound where K > 0 and the commutator where K < 0.

    Attributes:
      tau, stable_eta: the large tau of both settings and the weight decay of the stable one (1.5 eta >
        tau^2 / (4 (1 + sigma2)) makes K positive definite along any trajectory; below tau^2 / (4 (1 + sigma2)) so
        that modes can survive: :class:`NoncontrastiveLinearConfig` checks the window, which needs its sigma2); the
        unstable setting has eta = 0.
      time: horizon of the two random-start runs.
      stable_scale, unstable_scale: init scales of the stable and the unstable random start (the same random
        direction; a small start keeps p_j in (0, tau/(1+sigma2)) with small s_j, where K < 0).
      perturbation, linear_time: size of the random symmetric perturbation of W_p at the aligned fixed points
        (eta = 0) and the horizon of those runs.
    """

    tau: float = 2.0
    stable_eta: float = 0.5
    time: float = 30.0
    stable_scale: float = 1.0
    unstable_scale: float = 0.1
    perturbation: float = 1e-6
    linear_time: float = 10.0

    def __post_init__(self):
        errors = config_value_errors(self) + bound_errors(
            self, ("tau", "> 0"), ("time", "> 0"), ("linear_time", "> 0"), ("stable_scale", "> 0"),
            ("unstable_scale", "> 0"), ("perturbation", "in (0, 1e-3]", " (a linearisation)"))
        raise_config_errors(errors, "noncontrastive_linear", "fig9")


@dataclasses.dataclass(frozen=True)
class NoncontrastiveLinearConfig:
    """The linear BYOL/SimSiam model of Tian et al. 2021 integrated by diffrax and checked against the theory.

    Attributes:
      n1, n2: input and representation dimensions (W is n2 x n1, W_p is n2 x n2); n2 <= n1.
      sigma2: isotropic augmentation variance (X = I, X' = sigma2 I) for A2, A3, A7, A9 and the per-mode runs.
      eta, alpha_p, beta: weight decay, predictor learning-rate ratio and EMA rate of the full BYOL run (A7) and
        of the aligned run; eta must be below the collapse threshold 1 / (4 (1 + sigma2)).
      init_scale: W(0), W_p(0) entries ~ N(0, init_scale^2 / n) for A7 (the note: 0.1).
      seeds: A7 runs (independent initialisations).
      t_invariant, t_decay, t_align, t_long, t_modes: horizons of A1, A2, A3, A7/A9 and the per-mode runs (top
        level, not in the check families' sub-configs: A7 and A9 share t_long, and the per-mode runs serve A4-A6 and
        the phase portrait).
      n_save: save times per trajectory (every matrix run uses the same count, so one solver compilation).
      ema: A8 (Fig. 7), :class:`EmaRuns`.
      asym: A9 (Fig. 8), :class:`AsymmetryRuns`.
      align: A3, :class:`AlignRuns`.
      portrait_etas: weight decays of the phase-portrait figure (tau = 1, alpha_p = 1, sigma2 as above).
      fig9: Fig. 9, :class:`Fig9Runs`.
      solver, rtol, atol: diffrax solver and step-size control (of every integration).
      seed: base seed of every initialisation.

    The sub-configs' flags are dotted (``--fig9.tau``); the flat ones of earlier releases (``--fig9-tau``) map onto
    them until the next release.
    """

    n1: int = 16
    n2: int = 8
    sigma2: float = 0.5
    eta: float = 0.04
    alpha_p: float = 1.0
    beta: float = 0.4
    init_scale: float = 0.1
    seeds: int = 3
    t_invariant: float = 50.0
    t_decay: float = 10.0
    t_align: float = 60.0
    t_long: float = 2000.0
    t_modes: float = 5000.0
    n_save: int = 201
    ema: EmaRuns = EmaRuns()
    asym: AsymmetryRuns = AsymmetryRuns()
    align: AlignRuns = AlignRuns()
    portrait_etas: tuple[float, ...] = (0.0, 0.01, 0.04, 0.2)
    fig9: Fig9Runs = Fig9Runs()
    solver: Literal["tsit5", "dopri5", "dopri8"] = "tsit5"
    rtol: float = 1e-10
    atol: float = 1e-12
    seed: int = 0

    def __post_init__(self):
        errors = config_value_errors(self)
        if self.n1 < 1 or not 1 <= self.n2 <= self.n1:
            errors.append(f"need 1 <= n2 <= n1 (got n1 = {self.n1}, n2 = {self.n2})")
        errors += bound_errors(
            self, ("sigma2", ">= 0"), ("eta", ">= 0"), ("alpha_p", "> 0"), ("beta", "in (0, 1]", " (the EMA rate)"),
            ("init_scale", "> 0"), ("seeds", ">= 1"), ("n_save", ">= 3"),
            *((name, "> 0") for name in ("t_invariant", "t_decay", "t_align", "t_long", "t_modes")),
            ("rtol", "> 0"), ("atol", "> 0"))
        if self.sigma2 >= 0 and self.eta >= 1.0 / (4.0 * (1.0 + self.sigma2)):
            errors.append(f"eta = {self.eta} is at or above the collapse threshold 1/(4(1+sigma2)) = "
                          f"{1.0 / (4.0 * (1.0 + self.sigma2)):.6g}: every mode of the A7 run would collapse")
        errors += _decay_errors("portrait_etas", self.portrait_etas)
        if self.sigma2 >= 0:
            crit = self.fig9.tau**2 / (4.0 * (1.0 + self.sigma2))
            if not crit / 1.5 < self.fig9.stable_eta < crit:
                errors.append(f"fig9.stable_eta must lie in (tau^2/(6(1+sigma2)), tau^2/(4(1+sigma2))) = "
                              f"({crit / 1.5:.6g}, {crit:.6g}) so that K > 0 by construction and modes can survive "
                              f"(got {self.fig9.stable_eta})")
        if self.n2 < 2:
            errors.append("Fig. 9's aligned fixed points need n2 >= 2 (a surviving and a collapsed mode)")
        raise_config_errors(errors, "noncontrastive_linear")

    @classmethod
    def smoke(cls) -> "NoncontrastiveLinearConfig":
        """A seconds-long run used by the tests (plus ~10 s of solver compilation): small n, few runs."""
        return cls(n1=6, n2=4, seeds=1, t_long=800.0, n_save=101,
                   ema=EmaRuns(seeds=2, etas=(0.0, 0.1), betas=(0.4,), time=100.0),
                   asym=AsymmetryRuns(etas=(0.01, 0.05)), portrait_etas=(0.0, 0.04, 0.2))
