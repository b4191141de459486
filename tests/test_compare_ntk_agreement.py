"""Networks vs the kernel theory of their NTK (stepwise.compare.ntk_agreement), on constructed cases with known
answers."""

import numpy as np
import pytest
import scipy.linalg

from stepwise import compare
from stepwise.compare import ntk_agreement as cn
from stepwise.theory import kernel as theory

EPS = np.finfo(np.float64).eps  # tolerances below are round-off bounds in units of eps, derived per check


def _pairs_kernel(rng, n=40, m=12, n_eval=30, noise=0.1):
    """A linear kernel over 2n augmented points (pairs = shared signal + noise) then n_eval held-out points."""
    scales = np.linspace(2.0, 0.3, m)
    base = rng.standard_normal((n, m)) * scales
    x1 = base + noise * rng.standard_normal((n, m))
    x2 = base + noise * rng.standard_normal((n, m))
    xe = rng.standard_normal((n_eval, m)) * scales
    feats = np.concatenate([x1, x2, xe])
    return feats @ feats.T, feats


def test_subspace_similarity_reference_and_invariances(rng):
    a, b = rng.standard_normal((30, 3)), rng.standard_normal((30, 3))
    angles = scipy.linalg.subspace_angles(a, b)
    # Both sides orthonormalise (n = 30 rows) and square cosines: absolute error <= 2 n eps (cond(a) + cond(b)),
    # ~1e-13 here; the value is 0.12 (measured relative error 6e-16 .. 3e-15). An O(1) bound on a wrong value.
    err = 2 * a.shape[0] * EPS * (np.linalg.cond(a) + np.linalg.cond(b))
    value = compare.subspace_similarity(a, b)
    assert value == pytest.approx(np.mean(np.cos(angles) ** 2), abs=err)
    rot = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    assert compare.subspace_similarity(a @ rot * 5.0, b) == pytest.approx(value, abs=2 * err)
    assert compare.subspace_similarity(a, a @ rot) == pytest.approx(1.0, abs=err)
    q = np.linalg.qr(rng.standard_normal((30, 6)))[0]
    # Orthonormal q: cosines of orthogonal columns are n eps, squared they vanish; spans inside spans give 1 +- n eps.
    assert compare.subspace_similarity(q[:, :3], q[:, 3:]) == pytest.approx(0.0, abs=30 * EPS)
    assert compare.subspace_similarity(q[:, :2], q) == pytest.approx(1.0, abs=4 * 30 * EPS)  # contained span: 1


def test_random_subspace_similarity_matches_monte_carlo(rng):
    n, p = 40, 3
    fixed = rng.standard_normal((n, p))
    draws = [compare.subspace_similarity(rng.standard_normal((n, p)), fixed) for _ in range(3000)]
    assert np.mean(draws) == pytest.approx(compare.random_subspace_similarity(n, p), rel=0.05)
    with pytest.raises(ValueError, match="1 <= p, q <= n"):
        compare.random_subspace_similarity(3, 4)


def test_center_kernel_equals_centred_features(rng):
    k_all, feats = _pairs_kernel(rng)
    two_n = 80
    mu = feats[:two_n].mean(axis=0)
    kc, ktc = theory.center_kernel(k_all[:two_n, :two_n], k_all[two_n:, :two_n])
    # Centring subtracts row, column and grand means of entries up to max|K|: absolute round-off
    # <= 4 (2n + m) eps max|K| (the feature-side reference adds m eps |f - mu|^2 <= the same); 4e-12 here,
    # measured 1.4e-14. The centred entries cancel (relative error is meaningless near 0): an absolute bound.
    atol = 4 * (two_n + feats.shape[1]) * EPS * np.abs(k_all).max()
    np.testing.assert_allclose(kc, (feats[:two_n] - mu) @ (feats[:two_n] - mu).T, rtol=0, atol=atol)
    np.testing.assert_allclose(ktc, (feats[two_n:] - mu) @ (feats[:two_n] - mu).T, rtol=0, atol=atol)
    with pytest.raises(ValueError, match="n_test, 2n = 80"):
        theory.center_kernel(k_all[:two_n, :two_n], k_all[two_n:, :10])


def test_kernel_ridge_takes_the_floor_of_the_kernel_as_computed_only_where_the_centred_one_is_indefinite(rng):
    # A centred kernel whose smallest eigenvalue is -20 eps(float32) of its top: round-off of the uncentred kernel it
    # came from, whose top (the mean mode) is 200 times larger; 10 eps of the centred top cannot cover it, 10 eps of
    # the computed kernel's top can (the ResNet-10 stand-in's float32 NTK: -21 eps of the centred, -0.11 eps of the
    # uncentred top).
    eps = float(np.finfo(np.float32).eps)
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    lam = np.concatenate([np.linspace(1.0, 0.1, 10), [20 * eps, -20 * eps]])
    kc = (q * lam) @ q.T
    ones = np.ones((12, 1)) / np.sqrt(12)
    computed = kc + 200.0 * ones @ ones.T
    mean_diag = np.trace(kc) / 12
    r_own = cn.kernel_ridge(kc, np.float32)
    assert r_own == pytest.approx(10 * eps * 1.0 / mean_diag, rel=1e-9)
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(kc + r_own * mean_diag * np.eye(12))  # the own floor leaves it indefinite
    r = cn.kernel_ridge(kc, np.float32, computed=computed)
    top_computed = np.linalg.eigvalsh(computed)[-1]
    assert r == pytest.approx(10 * eps * top_computed / mean_diag, rel=1e-9)
    np.linalg.cholesky(kc + r * mean_diag * np.eye(12))
    # a positive definite centred kernel keeps its own ridge whatever it was computed from
    kpd = (q * np.concatenate([np.linspace(1.0, 0.1, 10), [0.05, 0.01]])) @ q.T
    assert cn.kernel_ridge(kpd, np.float32, computed=kpd + 200.0 * ones @ ones.T) == cn.kernel_ridge(kpd, np.float32)


def test_kernel_ridge_float32_floor(rng):
    k_all, _ = _pairs_kernel(rng)
    k = k_all[:80, :80]
    top = np.linalg.eigvalsh(k)[-1]
    assert cn.kernel_ridge(k, np.float64) == pytest.approx(
        max(theory.DEFAULT_RIDGE, 10 * 2.22e-16 * top / np.mean(np.diag(k))), rel=1e-3)
    # The top eigenvalue of the (80, 80) K from two eigensolvers agrees to ~80 eps relative (2e-14); rel 1e-9 is
    # that with margin, and the float32 floor differs from the float64 one by 5e8.
    assert cn.kernel_ridge(k, np.float32) == pytest.approx(
        10 * np.finfo(np.float32).eps * top / np.mean(np.diag(k)), rel=1e-9)


def test_kernel_agreement_passes_on_prediction_fails_on_noise(rng):
    k_all, _ = _pairs_kernel(rng)
    two_n, k = 80, 3
    kt, ket = theory.center_kernel(k_all[:two_n, :two_n], k_all[two_n:, :two_n])
    truth = theory.predict_embeddings(kt, ket, k)
    mixed = np.concatenate([truth @ np.linalg.qr(rng.standard_normal((k, k)))[0],
                            rng.standard_normal((30, 2)) * 1e-6], 1)
    good = cn.kernel_agreement(k_all, two_n, mixed, k, dtype=np.float64)
    # The two 1e-6 noise columns tilt the span by <= (1e-6 sqrt(30 x 2) / s_k(truth))^2 (s_k its k-th singular
    # value), on top of round-off in the same eigensolve (n eps): ~1e-13 here; measured 1e-16.
    tilt = (1e-6 * np.sqrt(30 * 2) / np.linalg.svd(truth, compute_uv=False)[-1]) ** 2
    assert good.similarity == pytest.approx(1.0, abs=tilt + 1000 * two_n * EPS)
    assert good.baseline_random == pytest.approx(k / 30)
    check = cn.final_embedding_check(good, "final", kernel="test")
    assert check.passed and check.kind == "baseline"  # threshold: the same-kernel null's mean + 2 std
    assert check.threshold == pytest.approx(good.baseline_kernel.mean() + 2 * good.baseline_kernel.std())
    bad = cn.kernel_agreement(k_all, two_n, rng.standard_normal((30, 5)), k, dtype=np.float64)
    assert bad.similarity < good.similarity
    assert not cn.final_embedding_check(bad, "final", kernel="test").passed
    with pytest.raises(ValueError, match="evaluation points"):
        cn.kernel_agreement(k_all, two_n, rng.standard_normal((29, 5)), k)



@pytest.mark.parametrize("null_mean,null_std,kind", [(0.5, 0.1, "baseline"), (0.9, 0.05, "reported"),
                                                     (0.96, 0.05, "reported")])
def test_final_embedding_baseline_at_or_above_one_is_reported(null_mean, null_std, kind):
    """A similarity is at most 1: a null whose mean + 2 std reaches 1 could not be beaten by any run, so the check is
    reported (uninformative), not failed (a ResNet eval smoke set it at 1.168)."""
    draws = null_mean + null_std * np.array([-1.0, 1.0] * 10)  # mean null_mean, std null_std exactly
    agreement = cn.KernelAgreement(k=2, gammas=np.ones(4), ridge=0.0, predicted=np.eye(5, 2), learned=np.eye(5, 2),
                                   similarity=0.97, baseline_kernel=draws, baseline_random=0.4)
    c = cn.final_embedding_check(agreement, "final", kernel="test")
    assert c.kind == kind and c.threshold == pytest.approx(null_mean + 2 * null_std)
    if kind == "reported":
        assert c.passed is None and "at or above 1" in c.reason
    else:
        assert c.passed is True


def _stepwise_snapshots(q: np.ndarray, order: list[int], t: np.ndarray, onsets: np.ndarray, d: int, rng) -> np.ndarray:
    """(T, n, d) snapshots in which direction q[:, order[j]] rises logistically around onsets[j] to size 3 - 0.3 j."""
    n = q.shape[0]
    mix = np.linalg.qr(rng.standard_normal((d, d)))[0]
    snaps = np.zeros((t.size, n, d))
    for j, i in enumerate(order):
        amp = (3.0 - 0.3 * j) / (1.0 + np.exp(-(t - onsets[j]) / 2.0))
        snaps[:, :, j] = amp[:, None] * q[None, :, i]
    return snaps @ mix + 1e-4 * rng.standard_normal(snaps.shape)


@pytest.mark.parametrize("order,tau", [([0, 1, 2, 3], 1.0), ([3, 2, 1, 0], -1.0)])
def test_step_order_recovers_the_constructed_order(rng, order, tau):
    k_all, _ = _pairs_kernel(rng)
    two_n = 80
    kt, ket = theory.center_kernel(k_all[:two_n, :two_n], k_all[two_n:, :two_n])
    q = np.linalg.qr(theory.predict_embeddings(kt, ket, 6) - theory.predict_embeddings(kt, ket, 6).mean(0))[0]
    t = np.arange(0.0, 100.0)
    onsets = np.array([10.0, 30.0, 50.0, 70.0])
    snaps = _stepwise_snapshots(q, order, t, onsets, 8, rng)
    dirs = cn.learned_directions(t, snaps, onsets)
    # Orthonormalised (30 x 4): ||Q^T Q - I|| <= ~n d eps for Householder QR; 10 x that = 2.7e-13 (measured 6e-16).
    np.testing.assert_allclose(dirs.T @ dirs, np.eye(4), rtol=0, atol=10 * 30 * 4 * EPS)
    res = cn.step_order(dirs, k_all, two_n, onsets, dtype=np.float64)
    np.testing.assert_array_equal(res.assigned, order)
    assert res.kendall_tau == pytest.approx(tau)
    assert np.all(res.captured > 0.99)
    checks = {c.name: c for c in cn.step_order_checks(res, kernel="test")}
    assert {c.kind for c in checks.values()} == {"theory"}
    assert checks["step_order_kendall_tau"].passed == (tau > 0)
    assert checks["onset_vs_gamma_loglog_slope"].passed == (tau > 0)  # reversed order: larger gamma, later step
    assert res.slope == pytest.approx(np.polyfit(np.log(res.gammas[order]), np.log(onsets), 1)[0])


def test_cross_similarity_symmetric_unit_diagonal(rng):
    z = {"a": rng.standard_normal((30, 4)), "b": rng.standard_normal((30, 4))}
    z["c"] = z["a"] @ np.linalg.qr(rng.standard_normal((4, 4)))[0]
    names, m = cn.cross_similarity(z, 3)
    assert names == ["a", "b", "c"]
    # Symmetric by construction (measured exactly); self-similarity and a rotated copy are 1 up to ~2 n eps cond
    # (n = 30): < 1e-13, far inside the default rtol 1e-7 and the 1e-10 below.
    np.testing.assert_allclose(m, m.T)
    np.testing.assert_allclose(np.diag(m), 1.0)
    assert m[0, 2] == pytest.approx(1.0, abs=1e-10)
    assert m[0, 1] < 0.9


def test_cross_similarity_own_dimensions_and_random_function_baseline(rng):
    a = rng.standard_normal((30, 4)) * np.array([4.0, 3.0, 2.0, 1.0])
    z = {"a": a, "part": a[:, :2] + 1e-9 * rng.standard_normal((30, 2))}
    _, m = cn.cross_similarity(z, {"a": 4, "part": 2})
    # A 2-d span inside a 4-d one: contained. The 1e-9 perturbation tilts it by (1e-9 sqrt(60) / s_min)^2 ~ 1e-17,
    # round-off adds ~n eps; 1e-9 leaves room for both and still rejects any genuinely different span.
    assert m[0, 1] == pytest.approx(1.0, abs=1e-9)
    k_all, feats = _pairs_kernel(rng)
    rows = cn.kernel_rows(k_all, 80)
    _, ktc = theory.center_kernel(k_all[:80, :80], k_all[80:, :80])
    np.testing.assert_allclose(rows, ktc)  # the same centring (measured identical); default rtol 1e-7
    same = cn.random_function_similarity(rows, 3, rows, 3, n_draws=50, seed=1)
    assert same.shape == (50,) and np.all((same >= 0) & (same <= 1 + 1e-12))  # <= 1 up to n eps = 7e-15
    # Random functions of a kernel concentrate on its dominant eigenspaces: far more similar than random subspaces.
    assert same.mean() > 3 * compare.random_subspace_similarity(30, 3)
