"""Checks of a recorded full-batch GD run against an exact stepwise prediction (linear or kernel theory).

Both :mod:`stepwise.theory.linear` and :mod:`stepwise.theory.kernel` predict, per mode, the GD half-rise step
(``mode_steps``, sorted into ``step_times``) and the 10%-90% rise width; the run records the sorted eigenvalues of C
and the loss ||C - I||_F^2 at every step. The same statistics judge both experiments (theory note 6.3-6.7).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Protocol

import numpy as np

from stepwise._precision import float64
from stepwise.compare.checks import Check, check
from stepwise.compare.metrics import crossing_times, max_rank_increment, rank_trajectory, relative_errors, values_at

__all__ = ["ExactComparison", "compare_exact_steps"]


class StepPrediction(Protocol):
    step_times: np.ndarray
    mode_steps: np.ndarray
    widths: np.ndarray

    def separation(self) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class ExactComparison:
    """Measured against predicted steps of one run, and the checks computed from them.

    Attributes:
      predicted, measured: (d,) half-rise steps (the j-th event), predicted and measured (logit-interpolated).
      rel_errors: (d,) (predicted - measured) / measured.
      gated: (d,) modes whose step times are judged (both neighbours separated).
      separation: (d - 1,) predicted separation ratios (gap / rise width).
      plateau_midpoints, plateau_loss, plateau_checked, plateau_expected: (d - 1,) the loss between steps k, k+1.
      rank: (T,) number of eigenvalues of C above 1/2.
      checks: the named checks.
    """

    predicted: np.ndarray
    measured: np.ndarray
    rel_errors: np.ndarray
    gated: np.ndarray
    separation: np.ndarray
    plateau_midpoints: np.ndarray
    plateau_loss: np.ndarray
    plateau_checked: np.ndarray
    plateau_expected: np.ndarray
    rank: np.ndarray
    checks: list[Check]

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-step arrays the figure (:func:`stepwise.plots.linear_bt.plot_linear_bt`) reads."""
        return {
            "predicted_steps": self.predicted,
            "measured_steps": self.measured,
            "gated": self.gated,
            "plateau_midpoints": self.plateau_midpoints,
            "plateau_loss": self.plateau_loss,
            "plateau_checked": self.plateau_checked,
        }


def _over(statistic: Callable[[np.ndarray], float], values: np.ndarray, judged: np.ndarray) -> float:
    """``statistic`` of the judged ``values``; nan when none is judged (no gated mode, no separated plateau)."""
    return statistic(values[judged]) if judged.any() else np.nan


@float64
def compare_exact_steps(
    step: np.ndarray,
    eigenvalues: np.ndarray,
    loss: np.ndarray,
    pred: StepPrediction,
    gated: np.ndarray,
    *,
    plateau_separation: float,
    gate_ratio: float,
    amplitude_reason: str,
) -> ExactComparison:
    """Step-time, plateau, whitening and rank checks of a GD run (steps 0..T-1) against ``pred``.

    Args:
      step: (T,) update counts; eigenvalues: (T, d) sorted eigenvalues of C; loss: (T,) ||C - I||_F^2.
      pred: the theory's prediction (step_times, mode_steps, widths, separation()).
      gated: (d,) which modes' step times are judged (e.g. :func:`stepwise.theory.linear.separated_modes`).
      plateau_separation: plateaus are judged only between steps at least this many rise-widths apart.
      gate_ratio: the neighbour ratio used for ``gated`` (for the description).
      amplitude_reason: why the predicted step times should be exact for this model (the check's reason).
    """
    d = eigenvalues.shape[1]
    measured = crossing_times(step, eigenvalues, 0.5, interp="logit")
    predicted = pred.step_times
    rel = relative_errors(predicted, measured)
    sep = pred.separation()
    mids = 0.5 * (predicted[:-1] + predicted[1:])
    plateau_ok = sep >= plateau_separation
    plateau_expected = d - np.arange(1, d)
    plateau_loss = values_at(step, loss, mids)
    rank = rank_trajectory(eigenvalues, 0.5)
    checks = [
        check(
            "step_time_rel_error_median",
            _over(np.median, np.abs(rel), gated),
            0.02,
            kind="theory",
            reason=amplitude_reason + "; the theory note's numerics (2.4, synthetic spectra) put every mode within "
            "0.1-1.5% of this prediction, so a typical gated mode must be within 2%",
            description="median |predicted - measured| / measured half-rise step over gated modes",
            predicted=predicted[gated],
            measured=measured[gated],
        ),
        check(
            "step_time_rel_error_max",
            _over(np.max, np.abs(rel), gated),
            0.05,
            kind="theory",
            reason="theory note 6.3: <= 5% for every mode whose neighbours have gamma_{j+1}/gamma_j <= 0.93-0.95 "
            "(the note's numerics on synthetic spectra: <= 1.5%)",
            description="largest |relative error| of the half-rise step over gated modes",
        ),
        check(
            "gated_modes",
            int(gated.sum()),
            min(3, d),
            op=">=",
            kind="consistency",
            reason="a precondition, not a prediction: which modes are judged is fixed by Gamma's spectrum before "
            "training (both neighbour ratios <= the gate ratio); with fewer than 3 the step-time verdict would rest "
            "on one or two modes",
            description=f"modes whose neighbours satisfy gamma_(j+1)/gamma_j <= {gate_ratio}",
            measured=np.flatnonzero(gated) + 1,
        ),
        check(
            "loss_plateau_max_abs_error",
            _over(np.max, np.abs(plateau_loss - plateau_expected), plateau_ok),
            0.1,
            kind="theory",
            reason=f"theory note 6.5 (criterion 0.1): between steps separated by >= {plateau_separation} rise-widths "
            "both neighbouring logistics are within ~1% of their plateau, so L = d - k to ~0.03 if the theory holds",
            description="max |L - (d - k)| at midpoints between predicted steps k and k+1 that are distinct",
            predicted=plateau_expected[plateau_ok],
            measured=plateau_loss[plateau_ok],
        ),
        check(
            "final_whitening_error",
            math.sqrt(max(float(loss[-1]), 0.0)),
            1e-3,
            kind="theory",
            reason="theory note 2.6 / 6.7 (criterion 1e-3): the minimum GD reaches from small initialisation has "
            "C = I exactly",
            description="||C - I||_F at the end of training",
        ),
        check(
            "rank_max_increment",
            max_rank_increment(rank),
            1,
            kind="theory",
            reason="theory note 6.6: the number of eigenvalues of C above 1/2 grows by exactly one per step",
            description=f"largest increase of rank(C >= 1/2) between consecutive steps (final rank {int(rank[-1])} "
            f"of {d})",
        ),
    ]
    return ExactComparison(
        predicted=predicted,
        measured=measured,
        rel_errors=rel,
        gated=gated,
        separation=sep,
        plateau_midpoints=mids,
        plateau_loss=plateau_loss,
        plateau_checked=plateau_ok,
        plateau_expected=plateau_expected,
        rank=rank,
        checks=checks,
    )
