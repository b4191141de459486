"""Step detection for real networks on synthetic staircases with known answers."""

import numpy as np
import pytest

from stepwise.compare import detect_steps


def staircase(centres, t=np.linspace(0, 100, 2001), rate=1.0, heights=None):
    heights = np.ones(len(centres)) if heights is None else np.asarray(heights)
    curves = np.stack([h / (1 + np.exp(-rate * (t - c))) for c, h in zip(centres, heights)], axis=1)
    eig = np.sort(curves, axis=1)[:, ::-1]
    return t, eig, np.sum((1 - eig) ** 2, axis=1)


def test_separated_steps_are_counted_and_merged_ones_are_not():
    t, eig, loss = staircase([10, 30, 50, 70, 71])
    det = detect_steps(t, eig, loss)
    # Logistic rise width 10%->90% is ln 81 / rate = 4.39; gaps of 20 are ~4.6 widths, a gap of 1 is 0.23.
    np.testing.assert_allclose(det.widths, np.log(81), rtol=2e-2)
    np.testing.assert_allclose(det.separations[1:4], 20 / np.log(81), rtol=3e-2)
    np.testing.assert_array_equal(det.well_separated, [True, True, True, True, False])
    assert det.n_steps == 4 and det.strictly_ordered and det.unit_rank_increments
    # Every learned mode is a step or merged with its neighbour: mode 4 (onset 71) rose with mode 3 (onset 70).
    assert det.n_learned == 5 and det.separated == [0, 1, 2, 3] and det.merged == [(4, 3)]
    assert det.groups == [[0], [1], [2], [3, 4]] and det.separated_fraction == pytest.approx(0.8)
    # The first plateau (L(0) = 5, before any step) and the three between the 4 separated steps.
    np.testing.assert_allclose(det.plateau_levels, [5, 4, 3, 2], atol=0.02)
    assert det.n_plateaus == 4
    summary = det.summary()
    assert summary["merged_modes"] == [[4, 3]] and summary["step_groups"] == [[0], [1], [2], [3, 4]]


def test_plateau_criterion_flat_and_sloped():
    """A staircase loss has flat treads; the same steps on a steadily falling loss have none (the tread moves by
    more than a quarter of the next riser)."""
    t, eig, loss = staircase([10, 30, 50, 70])
    assert detect_steps(t, eig, loss).n_plateaus == 4
    sloped = 5.0 - 0.05 * t  # no risers: every tread moves by half the drop to the next midpoint level
    det = detect_steps(t, eig, sloped)
    assert det.n_plateaus == 0 and np.all(det.plateau_flatness > det.plateau_tolerance)
    assert detect_steps(t, eig, None).plateau_flatness.size == 0


def test_unlearned_modes_and_simultaneous_rises():
    from stepwise.compare import stepwise_checks

    t, eig, _ = staircase([10, 40], heights=[1.0, 1e-3])
    det = detect_steps(t, eig)
    assert det.learned.tolist() == [True, False] and det.n_steps == 1 and np.isnan(det.onsets[1])
    assert det.merged == [] and det.groups == [[0]] and det.separated_fraction == 1.0
    t, eig, loss = staircase([20, 20, 20])  # three modes at once: one step, rank jumps by 3
    det = detect_steps(t, eig, loss)
    assert det.n_steps == 1 and not det.unit_rank_increments
    assert det.merged == [(1, 0), (2, 1)] and det.groups == [[0, 1, 2]]
    verdicts = {c.name: c.passed for c in stepwise_checks(det, 1)}
    # One step is all the 1-step threshold asks; the fraction 1/3, the lone plateau and the rank jump fail.
    assert verdicts == {"steps_detected": True, "separated_fraction": False, "flat_plateaus": False,
                        "rank_max_increment": False, "onsets_strictly_ordered": False,
                        "learned_modes_accounted": True}
    empty = detect_steps(t, np.zeros_like(eig))  # nothing learned: fraction 0, no groups
    assert empty.n_learned == 0 and empty.separated_fraction == 0.0 and empty.groups == [] and empty.merged == []


def test_min_separation_threshold_and_errors():
    t, eig, _ = staircase([10, 16, 22], rate=1.0)  # gaps of 6 = 1.37 widths
    assert detect_steps(t, eig, min_separation=1.0).n_steps == 3
    assert detect_steps(t, eig, min_separation=2.0).n_steps == 1
    with pytest.raises(ValueError, match="eigenvalues must be"):
        detect_steps(t[:10], eig)


def test_stepwise_checks_kinds_and_onset_order_by_construction():
    """The order of onsets of a sorted spectrum holds by construction (a consistency check, not the paper's order
    claim): on random sorted spectra, however the columns cross, the detected onsets never decrease."""
    from stepwise.compare import stepwise_checks

    t, eig, loss = staircase([10, 30, 50, 70])
    checks = stepwise_checks(detect_steps(t, eig, loss), 3)
    kinds = {c.name: c.kind for c in checks}
    assert kinds == {"steps_detected": "theory", "separated_fraction": "theory", "flat_plateaus": "theory",
                     "rank_max_increment": "theory", "onsets_strictly_ordered": "consistency",
                     "learned_modes_accounted": "consistency"}
    assert all(c.passed for c in checks), [c.explain() for c in checks]
    rng = np.random.default_rng(0)
    for _ in range(50):
        t = np.arange(40.0)
        walks = np.exp(np.cumsum(rng.normal(0, 0.5, size=(40, 5)), axis=0))  # crossing, non-monotone paths
        det = detect_steps(t, np.sort(walks, axis=1)[:, ::-1], learned_fraction=0.0)
        finite = det.onsets[np.isfinite(det.onsets)]
        assert np.all(np.diff(finite) >= 0)
        # every learned mode is a separated step or merged with its neighbour, whatever the spectra do
        assert det.n_steps + len(det.merged) == det.n_learned
        assert [j for group in det.groups for j in group] == list(np.flatnonzero(det.learned))
    # Only a tie breaks strict order: two modes already above the onset level at the first tracking point.
    t, eig, _ = staircase([-20, -20, 30])
    assert not detect_steps(t, eig).strictly_ordered
