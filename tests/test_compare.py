"""Comparison statistics against hand-made cases and naive references."""

import json
import math

import numpy as np
import pytest

from stepwise import compare


def logistic(t, rate, t_half):
    return 1.0 / (1.0 + np.exp(-rate * (t - t_half)))


def test_crossing_times_logit_interpolation_is_exact_for_logistic_curves():
    t = np.arange(0.0, 100.0, 3.0)  # coarse sampling
    t_half = np.array([17.3, 42.0, 71.9])
    series = np.stack([logistic(t, 0.4, th) for th in t_half], axis=1)
    np.testing.assert_allclose(compare.crossing_times(t, series, 0.5, interp="logit"), t_half, atol=1e-10)
    lin = compare.crossing_times(t, series, 0.5, interp="linear")
    assert np.all(np.abs(lin - t_half) < 3.0)  # within one sample, but not exact
    assert np.max(np.abs(lin - t_half)) > 1e-3


def test_crossing_times_edge_cases():
    t = np.arange(5.0)
    series = np.array([[0.6, 0.0], [0.7, 0.1], [0.8, 0.2], [0.9, 0.3], [1.0, 0.4]])
    out = compare.crossing_times(t, series, 0.5)
    assert out[0] == 0.0 and math.isnan(out[1])
    np.testing.assert_allclose(compare.crossing_times(t, np.arange(5.0) * 2, 3.0), [1.5])
    with pytest.raises(ValueError, match="samples"):
        compare.crossing_times(t, series[:3], 0.5)


def test_onset_times_use_fraction_of_final_top_eigenvalue():
    t = np.linspace(0, 10, 1001)
    eigs = np.stack([2 * logistic(t, 3, 2.0), 2 * logistic(t, 3, 5.0)], axis=1)
    onsets = compare.onset_times(t, eigs, fraction=0.5, interp="linear")
    np.testing.assert_allclose(onsets, [2.0, 5.0], atol=1e-3)


def _subspace_pair(rng, n, k, angles):
    q, _ = np.linalg.qr(rng.normal(size=(n, 2 * k)))
    a = q[:, :k]
    b = a * np.cos(angles) + q[:, k:] * np.sin(angles)
    return a @ rng.normal(size=(k, k)), b  # a is a non-orthonormal basis of the same span


@pytest.mark.parametrize("angles", [np.array([0.3, 0.1, 0.0]), np.array([1e-6, 1e-7, 1e-9])])
def test_principal_angles_and_projector_distance(rng, angles):
    a, b = _subspace_pair(rng, 12, 3, angles)
    got = compare.principal_angles(a, b)
    np.testing.assert_allclose(np.sort(got), np.sort(angles), atol=1e-12)
    assert compare.projector_distance(a, b) == pytest.approx(np.sqrt(2 * np.sum(np.sin(angles) ** 2)), abs=1e-12)
    if angles.max() > 1e-3:  # naive arccos reference is accurate only for large angles
        qa, qb = np.linalg.qr(a)[0], np.linalg.qr(b)[0]
        naive = np.arccos(np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1, 1))
        np.testing.assert_allclose(np.sort(got), np.sort(naive), atol=1e-7)


def test_procrustes_and_gram_errors_ignore_rotations(rng):
    y = rng.normal(size=(20, 4))
    r, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    assert compare.procrustes_error(y @ r, y) < 1e-12
    assert compare.gram_relative_error(y @ r, y) < 1e-7
    z = y + 0.1 * rng.normal(size=y.shape)
    naive = np.linalg.norm(z @ z.T - y @ y.T) / np.linalg.norm(y @ y.T)
    assert compare.gram_relative_error(z, y) == pytest.approx(naive, rel=1e-9)
    assert compare.procrustes_error(z, y) > 0.01
    with pytest.raises(ValueError):
        compare.procrustes_error(y[:5], y)


def test_rank_and_relative_errors():
    eigs = np.array([[0.1, 0.0], [0.6, 0.1], [0.9, 0.7], [1.0, 1.0]])
    rank = compare.rank_trajectory(eigs, 0.5)
    np.testing.assert_array_equal(rank, [0, 1, 2, 2])
    assert compare.unit_rank_increments(rank)
    assert not compare.unit_rank_increments(np.array([0, 2, 2]))
    assert not compare.unit_rank_increments(np.array([0, 1, 0]))
    np.testing.assert_allclose(compare.relative_errors([11.0, 9.0], [10.0, 10.0]), [0.1, -0.1])
    assert np.isnan(compare.relative_errors([np.inf], [1.0])[0])


def test_checks_pass_fail_and_serialise():
    ok = compare.check("err", 0.01, 0.02, reason="why")
    bad = compare.check("err", 0.03, 0.02, reason="why")
    nan = compare.check("err", float("nan"), 0.02, reason="why")
    ge = compare.check("count", 3, 3, op=">=", reason="why")
    assert ok.passed and not bad.passed and not nan.passed and ge.passed
    assert not compare.check("x", float("inf"), float("inf"), op="==", reason="r").passed
    assert compare.all_passed([ok, ge]) and not compare.all_passed([ok, bad]) and not compare.all_passed([])
    d = nan.to_dict()
    json.dumps(d, allow_nan=False)  # strict JSON: non-finite values become strings
    assert d["value"] == "nan" and d["passed"] is False
    assert "FAIL" in bad.explain() and "PASS" in ok.explain()
    with_arrays = compare.check("e", 0.0, 1.0, reason="r", predicted=np.array([1.0, np.inf]), measured=np.arange(2))
    assert json.loads(json.dumps(with_arrays.to_dict())) ["predicted"] == [1.0, "inf"]
