"""Step detection for real networks (theory note 6.10), where no closed form gives the step times.

Given tracked eigenvalues (T, k) sorted decreasing (column j = j-th largest) and the loss, a step is the rise of
one eigenvalue from ~0 to its plateau:

- a mode is *learned* when its final value reaches ``learned_fraction`` x the final top eigenvalue;
- its *onset* is the first crossing of ``onset_fraction`` x the final top eigenvalue (the same level for every
  mode, as in the note), its *half time* the first crossing of half its own final value, and its *rise width* the
  time from 10% to 90% of its own final value (all log-interpolated between tracking points);
- learned mode j (j >= 2) is a *separated step* when its onset comes at least ``min_separation`` rise-widths
  after the onset of mode j - 1 and strictly after it; mode 1 is one when it is learned. Every other learned mode
  is *merged* with its neighbour j - 1 (it rose within one rise-width of it): :attr:`StepDetection.merged` lists
  those pairs and :attr:`StepDetection.groups` the learned modes grouped by the separated step they rose with, so
  every learned mode is accounted for, as a step of its own or as part of its neighbour's;
- the rank (number of eigenvalues above the onset level) must grow in unit increments;
- *loss plateaus*: the stretch before the first separated step (the theory's first plateau, L(0) ~ d: note 2.5)
  and each stretch between consecutive separated steps, measured between their half times (t[0] for the
  start). A plateau is *flat* when the loss changes over the middle half of the stretch by at most
  ``plateau_flatness`` (0.25) x the drop to the next plateau's midpoint level (after the last step: the loss as
  far after that step as the last midpoint is before it, at most the end of the run): a staircase's tread moves
  by less than a quarter of its riser. A run with s separated steps has s candidate plateaus.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stepwise._precision import float64
from stepwise.compare.checks import Check, check
from stepwise.compare.metrics import (crossing_times, max_rank_increment, rank_trajectory, unit_rank_increments,
                                       values_at)

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
        """Number of separated steps (well-separated modes)."""
        return int(np.sum(self.well_separated))

    @property
    def n_learned(self) -> int:
        """Number of learned modes."""
        return int(np.sum(self.learned))

    @property
    def separated_fraction(self) -> float:
        """Separated steps / learned modes (0 when nothing was learned)."""
        return self.n_steps / self.n_learned if self.n_learned else 0.0

    @property
    def separated(self) -> list[int]:
        """Indices (0-based, decreasing eigenvalue order) of the modes that are separated steps."""
        return [int(j) for j in np.flatnonzero(self.well_separated)]

    @property
    def merged(self) -> list[tuple[int, int]]:
        """``(j, j - 1)`` for every learned mode j that is not a separated step: it rose with its neighbour."""
        return [(int(j), int(j) - 1) for j in np.flatnonzero(self.learned & ~self.well_separated)]

    @property
    def groups(self) -> list[list[int]]:
        """The learned modes grouped by step: each separated mode followed by the modes merged into it."""
        out: list[list[int]] = []
        for j in np.flatnonzero(self.learned):
            if self.well_separated[j] or not out:
                out.append([int(j)])
            else:
                out[-1].append(int(j))
        return out

    @property
    def n_plateaus(self) -> int:
        """Number of flat loss plateaus (before the first separated step and between consecutive ones)."""
        return int(np.sum(self.plateau_flatness <= self.plateau_tolerance))

    def summary(self) -> dict:
        """What was seen, for results.json: every learned mode as a separated step or merged with its neighbour."""
        return {
            "n_learned": self.n_learned, "n_separated": self.n_steps, "separated_fraction": self.separated_fraction,
            "separated_modes": self.separated, "merged_modes": [list(p) for p in self.merged],
            "step_groups": self.groups, "n_flat_plateaus": self.n_plateaus,
            "plateau_flatness": self.plateau_flatness, "plateau_levels": self.plateau_levels,
        }


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

    Returns:
      the :class:`StepDetection` (per-mode arrays of length k; plateau arrays with one entry per separated step).
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
    if loss is not None and steps.size >= 1:
        loss = np.asarray(loss, dtype=np.float64)
        h = np.concatenate([t[:1], half[steps]])  # plateau i lies between h[i] and h[i + 1]
        mids = 0.5 * (h[:-1] + h[1:])
        gaps = np.diff(h)
        levels = values_at(t, loss, mids)
        moved = np.abs(values_at(t, loss, mids + gaps / 4) - values_at(t, loss, mids - gaps / 4))
        # the next plateau's midpoint level; after the last step, the loss as far after it as the last midpoint is
        # before it (the next tread's midpoint, mirrored), clipped to the end of the run
        after = np.append(levels[1:], values_at(t, loss, np.minimum(mids[-1:] + gaps[-1:], t[-1])))
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
def stepwise_checks(det: StepDetection, min_steps: int, *, min_separated_fraction: float = 0.5,
                    min_plateaus: int = 3) -> list[Check]:
    """The qualitative stepwise checks of a real network (theory note 6.10), shared by ``stepwise_deep``,
    ``stepwise verify`` and the tests (which assert ``check.passed`` on the same objects).

    Gated (theory): enough separated steps (``min_steps``); a separated fraction of the learned modes of at least
    ``min_separated_fraction``; at least ``min_plateaus`` flat loss plateaus (criterion in the module docstring);
    unit rank increments. Gated (consistency, true by construction, so they test the detection): strictly ordered
    onsets, and every learned mode accounted for as a separated step or merged with its neighbour.

    Thresholds and reasons: ``min_steps`` 4 and ``min_plateaus`` 3 are the note's criteria (6.10: "the loss shows
    >= 3 distinct plateaus"; four separated steps give the first plateau and three between steps); 0.5 for the
    fraction because the theory makes every learned mode its own step (fraction 1), and only nearly degenerate
    eigenvalues (gamma_{j+1} / gamma_j near 1, note 2.7) are predicted to merge: requiring that at least half of the
    learned modes be steps of their own means separated steps, not collective rises, describe most of what the
    network learned. Smaller runs (CI smoke) pass smaller ``min_steps`` / ``min_plateaus`` and say why.
    """
    return [
        check(
            "steps_detected", det.n_steps, min_steps, op=">=", kind="theory",
            reason="theory note 6.10: with small initialisation the embedding-covariance eigenvalues rise one at a "
            "time; a step counts when its onset follows the previous one by at least one rise-width",
            description="number of separated steps in the output covariance spectrum (learned modes: "
            f"{det.n_learned}; merged with their neighbour: {[list(p) for p in det.merged]})",
            measured=det.onsets,
        ),
        check(
            "separated_fraction", det.separated_fraction, min_separated_fraction, op=">=", kind="theory",
            reason="theory note 6.10 / 2.7: every learned mode is its own step, only nearly degenerate eigenvalues "
            "merge; at least half the learned modes separate, so separated steps describe most of the learning",
            description=f"separated steps / learned modes ({det.n_steps} / {det.n_learned}); step groups "
            f"{det.groups}",
            measured=det.separations,
        ),
        check(
            "flat_plateaus", det.n_plateaus, min_plateaus, op=">=", kind="theory",
            reason="theory note 6.10: the loss shows >= 3 distinct plateaus; a plateau (before the first separated "
            f"step or between two) is flat when the loss moves over its middle half by <= {det.plateau_tolerance:g} "
            "x the drop to the next plateau",
            description="number of flat loss plateaus (flatness = movement / next drop, per plateau, in measured)",
            measured=det.plateau_flatness,
        ),
        check(
            "rank_max_increment", max_rank_increment(det.rank), 1, kind="theory",
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
        check(
            "learned_modes_accounted", det.n_steps + len(det.merged), det.n_learned, op="==", kind="consistency",
            reason="by construction every learned mode is a separated step or merged with its neighbour; tests the "
            "detection's bookkeeping",
            description="separated steps + merged modes (must equal the learned modes)",
        ),
    ]
