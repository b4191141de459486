"""Comparison statistics against hand-made cases and naive references."""

import json
import math

import numpy as np
import pytest

from stepwise import compare

EPS = np.finfo(np.float64).eps  # tolerances below are round-off bounds in units of eps, derived per check


def logistic(t, rate, t_half):
    return 1.0 / (1.0 + np.exp(-rate * (t - t_half)))


def test_crossing_times_logit_interpolation_is_exact_for_logistic_curves():
    t = np.arange(0.0, 100.0, 3.0)  # coarse sampling
    t_half = np.array([17.3, 42.0, 71.9])
    series = np.stack([logistic(t, 0.4, th) for th in t_half], axis=1)
    # Exact up to round-off: logit(y) at the two samples around 1/2 (y(1 - y) >= 0.17) is off by <= 4 eps / 0.17,
    # which moves t by dt / (rate dt) = 1 / 0.4 times that, plus the rounding of t <= 72: ~100 eps = 2e-14.
    np.testing.assert_allclose(compare.crossing_times(t, series, 0.5, interp="logit"), t_half, rtol=0,
                               atol=1000 * EPS)
    lin = compare.crossing_times(t, series, 0.5, interp="linear")
    assert np.all(np.abs(lin - t_half) < 3.0)  # within one sample, but not exact
    assert np.max(np.abs(lin - t_half)) > 1e-3


def test_crossing_times_edge_cases():
    t = np.arange(5.0)
    series = np.array([[0.6, 0.0], [0.7, 0.1], [0.8, 0.2], [0.9, 0.3], [1.0, 0.4]])
    out = compare.crossing_times(t, series, 0.5)
    assert out[0] == 0.0 and math.isnan(out[1])
    np.testing.assert_allclose(compare.crossing_times(t, np.arange(5.0) * 2, 3.0), [1.5])  # exact in binary
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
    # Sine-based angles are absolutely accurate to ~n eps cond(a) (a is orthonormalised first; b is orthonormal up to
    # eps): 12 x eps x cond(a) ~ 4e-15 here; 10x that (measured 7.7e-16 .. 8e-16). The 1e-9 .. 1e-6 angles need
    # that accuracy: the cosine-based formula below would return 0 for them.
    bound = 10 * a.shape[0] * EPS * np.linalg.cond(a)
    np.testing.assert_allclose(np.sort(got), np.sort(angles), rtol=0, atol=bound)
    assert compare.projector_distance(a, b) == pytest.approx(np.sqrt(2 * np.sum(np.sin(angles) ** 2)), abs=2 * bound)
    if angles.max() > 1e-3:  # naive arccos reference is accurate only for large angles
        qa, qb = np.linalg.qr(a)[0], np.linalg.qr(b)[0]
        naive = np.arccos(np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1, 1))
        # arccos(1 - delta) = sqrt(2 delta): a cosine off by delta ~ n eps (n = 12) gives sqrt(2 n eps) = 7e-8 for
        # the zero angle, more on a less kind BLAS (measured 1.5e-8); 4x that. A wrong angle is off by >= 1e-2.
        np.testing.assert_allclose(np.sort(got), np.sort(naive), rtol=0, atol=4 * np.sqrt(2 * a.shape[0] * EPS))


def test_procrustes_and_gram_errors_ignore_rotations(rng):
    n, d = 20, 4
    y = rng.normal(size=(n, d))
    r, _ = np.linalg.qr(rng.normal(size=(d, d)))
    # Procrustes through the SVD of a d x d product: relative error ~ (n + d) eps cond(y) ~ 1e-14 (measured 9e-16).
    assert compare.procrustes_error(y @ r, y) < 100 * (n + d) * EPS * np.linalg.cond(y)
    # gram_relative_error = sqrt(|XX|^2 + |YY|^2 - 2 |XY|^2) / |YY| through d x d products: the three terms cancel,
    # each known to ~2 (n + d^2) eps |YY|^2 (and |YY|^2 <= d |YY|_F^2 bounds the entries' magnitudes), so a zero
    # error reads as up to sqrt(8 d (n + d^2) eps) = 1.6e-6: the metric's floor (measured 1.7e-8 here, 2.7e-8 and
    # 0.0 on other data / BLAS). A metric that were not rotation-invariant would read O(1).
    floor = np.sqrt(8 * d * (n + d * d) * EPS)
    assert compare.gram_relative_error(y @ r, y) < floor
    z = y + 0.1 * rng.normal(size=y.shape)
    naive = np.linalg.norm(z @ z.T - y @ y.T) / np.linalg.norm(y @ y.T)
    # Away from zero the floor is relative: the squared error carries ~ floor^2, i.e. floor^2 / (2 naive^2) in the
    # value: 6e-11 here (measured 3e-15).
    assert compare.gram_relative_error(z, y) == pytest.approx(naive, rel=floor**2 / (2 * naive**2))
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
    assert compare.max_rank_increment(rank) == 1
    assert compare.max_rank_increment(np.array([0, 2, 2])) == 2
    assert compare.max_rank_increment(np.array([3])) == 0  # one sample: no increment
    np.testing.assert_allclose(compare.relative_errors([11.0, 9.0], [10.0, 10.0]), [0.1, -0.1])  # 1 ulp
    assert np.isnan(compare.relative_errors([np.inf], [1.0])[0])


def test_checks_pass_fail_and_serialise():
    ok = compare.check("err", 0.01, 0.02, kind="theory", reason="why")
    bad = compare.check("err", 0.03, 0.02, kind="theory", reason="why")
    nan = compare.check("err", float("nan"), 0.02, kind="theory", reason="why")
    ge = compare.check("count", 3, 3, op=">=", kind="consistency", reason="why")
    assert ok.passed and not bad.passed and not nan.passed and ge.passed
    with pytest.raises(ValueError, match="finite threshold"):  # a gated check cannot have an infinite threshold
        compare.check("x", float("inf"), float("inf"), op="==", kind="theory", reason="r")
    assert compare.all_passed([ok, ge]) and not compare.all_passed([ok, bad]) and not compare.all_passed([])
    d = nan.to_dict()
    json.dumps(d, allow_nan=False)  # strict JSON: non-finite values become strings
    assert d["value"] == "nan" and d["passed"] is False
    assert "FAIL" in bad.explain() and "PASS" in ok.explain()
    with_arrays = compare.check("e", 0.0, 1.0, kind="theory", reason="r", predicted=np.array([1.0, np.inf]),
                                measured=np.arange(2))
    assert json.loads(json.dumps(with_arrays.to_dict())) ["predicted"] == [1.0, "inf"]
