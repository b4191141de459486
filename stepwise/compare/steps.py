"""Step detection for real networks (theory note 6.10), where no closed form gives the step times.

Given tracked eigenvalues (T, k) sorted decreasing (column j = j-th largest) and the loss, a step is the rise of
one eigenvalue from ~0 to its plateau:

- a mode is *learned* when its final value reaches ``learned_fraction`` x the final top eigenvalue;
- its *onset* is the first crossing of ``onset_fraction`` x the final top eigenvalue (the same level for every
  mode, as in the note), its *half time* the first crossing of half its own final value, and its *rise width* the
  time from 10% to 90% of its own final value (all log-interpolated between tracking points);
- step j (j >= 2) is *well separated* when its onset comes at least ``min_separation`` rise-widths after the
  previous step's onset and strictly after it; step 1 counts when mode 1 is learned;
- the rank (number of eigenvalues above the onset level) must grow in unit increments;
- a loss *plateau* between steps j and j+1 is flat when the loss changes over the middle half of the gap by at
  most ``plateau_flatness`` x the drop step j + 1 causes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stepwise._precision import float64
from stepwise.compare.checks import Check, check
from stepwise.compare.metrics import crossing_times, rank_trajectory, unit_rank_increments, values_at

__all__ = ["StepDetection", "detect_steps", "stepwise_checks"]


@dataclasses.dataclass(frozen=True)
class StepDetection:
    """What :func:`detect_steps` found. Times are in the units of ``t``; arrays are per mode (column)."""

    learned: np.ndarray
    onsets: np.ndarray
    half_times: np.ndarray
    widths: np.ndarray
    separations: np.ndarray
    well_separated: np.ndarray
    rank: np.ndarray
    unit_rank_increments: bool
    strictly_ordered: bool
    plateau_flatness: np.ndarray
    plateau_levels: np.ndarray
    plateau_tolerance: float

    @property
    def n_steps(self) -> int:
        """Number of well-separated steps."""
        return int(np.sum(self.well_separated))

    @property
    def n_plateaus(self) -> int:
        """Number of flat loss plateaus between consecutive well-separated steps."""
        return int(np.sum(self.plateau_flatness <= self.plateau_tolerance))


@float64
def detect_steps(
    t: np.ndarray,
    eigenvalues: np.ndarray,
    loss: np.ndarray | None = None,
    *,
    onset_fraction: float = 0.1,
    learned_fraction: float = 0.1,
    min_separation: float = 1.0,
    plateau_flatness: float = 0.25,
) -> StepDetection:
    """Detect the stepwise rise of tracked eigenvalues (see the module docstring for the definitions).

    Args:
      t: (T,) increasing times (steps or lr x steps).
      eigenvalues: (T, k) eigenvalues sorted decreasing at each time.
      loss: (T,) loss at the same times, for the plateau statistics (optional).
      onset_fraction: onset level as a fraction of the final top eigenvalue.
      learned_fraction: a mode is learned if its final value is at least this fraction of the final top one.
      min_separation: required onset gap in units of the later mode's rise width.
      plateau_flatness: a plateau is flat if the loss moves by at most this fraction of the next drop.
    """
    t = np.asarray(t, dtype=np.float64)
    eig = np.asarray(eigenvalues, dtype=np.float64)
    if eig.ndim != 2 or eig.shape[0] != t.shape[0]:
        raise ValueError(f"eigenvalues must be (T, k) with T = len(t) = {t.shape[0]}; got {eig.shape}")
    final = np.maximum(eig[-1], 0.0)
    top = max(float(final[0]), np.finfo(np.float64).tiny)
    learned = final >= learned_fraction * top
    level = onset_fraction * top
    onsets = crossing_times(t, eig, level, interp="log")
    half = crossing_times(t, eig, 0.5 * final, interp="log")
    widths = crossing_times(t, eig, 0.9 * final, interp="log") - crossing_times(t, eig, 0.1 * final, interp="log")
    widths = np.where(learned, np.maximum(widths, np.finfo(np.float64).eps), np.nan)
    onsets = np.where(learned, onsets, np.nan)
    half = np.where(learned, half, np.nan)
    k = eig.shape[1]
    separations = np.full(k, np.nan)
    well = np.zeros(k, dtype=bool)
    well[0] = bool(learned[0]) and np.isfinite(onsets[0])
    for j in range(1, k):
        if learned[j] and np.isfinite(onsets[j]) and np.isfinite(onsets[j - 1]):
            separations[j] = (onsets[j] - onsets[j - 1]) / widths[j]
            well[j] = onsets[j] > onsets[j - 1] and separations[j] >= min_separation
    finite = onsets[np.isfinite(onsets)]
    ordered = bool(np.all(np.diff(finite) > 0))
    rank = rank_trajectory(eig, level)

    flat, levels = np.zeros(0), np.zeros(0)
    steps = np.flatnonzero(well)
    if loss is not None and steps.size >= 2:
        loss = np.asarray(loss, dtype=np.float64)
        h = half[steps]
        mids = 0.5 * (h[:-1] + h[1:])
        gaps = np.diff(h)
        levels = values_at(t, loss, mids)
        moved = np.abs(values_at(t, loss, mids + gaps / 4) - values_at(t, loss, mids - gaps / 4))
        after = np.append(levels[1:], loss[-1])
        drops = np.maximum(levels - after, np.finfo(np.float64).tiny)
        flat = moved / drops
    return StepDetection(
        learned=learned,
        onsets=onsets,
        half_times=half,
        widths=widths,
        separations=separations,
        well_separated=well,
        rank=rank,
        unit_rank_increments=unit_rank_increments(rank),
        strictly_ordered=ordered,
        plateau_flatness=flat,
        plateau_levels=levels,
        plateau_tolerance=plateau_flatness,
    )


@float64
def stepwise_checks(det: StepDetection, min_steps: int) -> list[Check]:
    """The qualitative stepwise checks of a real network (theory note 6.10), shared by ``stepwise_deep`` and
    ``stepwise verify``: enough well-separated steps and unit rank increments (theory), and strictly ordered onsets
    (consistency: true by construction for sorted spectra, so it tests the detection, not the paper)."""
    return [
        check(
            "steps_detected", det.n_steps, min_steps, op=">=", kind="theory",
            reason="theory note 6.10: with small initialisation the embedding-covariance eigenvalues rise one at a "
            "time; a step counts when its onset follows the previous one by at least one rise-width",
            description="number of well-separated steps in the output covariance spectrum",
            measured=det.onsets,
        ),
        check(
            "rank_max_increment", int(np.max(np.diff(det.rank))) if det.rank.size > 1 else 0, 1, kind="theory",
            reason="theory note 6.10: the number of learned eigenvalues grows in unit increments",
            description="largest increase between tracking points of the number of eigenvalues above the onset level",
        ),
        check(
            "onsets_strictly_ordered", int(det.strictly_ordered), 1, op=">=", kind="consistency",
            reason="holds by construction up to ties: the j-th largest eigenvalue never exceeds the (j-1)-th, so it "
            "cannot first reach the common onset level earlier (interpolation included); only a tie fails it (two "
            "modes crossing together, e.g. both above the level at the first tracking point). The theory's order "
            "claim, steps in decreasing gamma (note 6.4), is tested against an NTK's modes by step_order_kendall_tau",
            description="1 if the onsets of the learned eigenvalues are strictly increasing",
        ),
    ]
