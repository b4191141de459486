"""The linear theory against numerical integration, plain gradient descent and hand-made references (float64)."""

import doctest

import numpy as np
import pytest
import scipy.integrate
from conftest import random_gamma

from stepwise.theory import linear as L

EPS = np.finfo(np.float64).eps  # tolerances below are derived bounds (round-off, solver tolerance), per check


def numpy_gd(gamma, w0, lr, steps):
    """Obviously-correct reference: the update as written, sorted eigenvalues of C before every update."""
    w = w0.copy()
    eigs, losses = [], []
    for _ in range(steps + 1):
        c = w @ gamma @ w.T
        eigs.append(np.sort(np.linalg.eigvalsh(c))[::-1])
        losses.append(L.loss(w, gamma))
        w = w - lr * L.gradient(w, gamma)
    return np.array(eigs), np.array(losses), w


def half_crossings(eigs):
    """Measured half-rise step of each column, logit-interpolated (reference loop)."""
    out = []
    for j in range(eigs.shape[1]):
        i = int(np.argmax(eigs[:, j] >= 0.5))
        assert eigs[i, j] >= 0.5, "mode never reached 1/2"
        lo, hi = L._logit(eigs[i - 1, j]), L._logit(eigs[i, j])
        out.append(i - 1 + (0.0 - lo) / (hi - lo))
    return np.array(out)


def test_gradient_matches_finite_differences(rng):
    gamma, _ = random_gamma(rng, 6, [3.0, 2.0, 1.0, 0.5])
    w = rng.normal(size=(3, 6))
    eps = 1e-6
    fd = np.zeros_like(w)
    for idx in np.ndindex(*w.shape):
        dw = np.zeros_like(w)
        dw[idx] = eps
        fd[idx] = (L.loss(w + dw, gamma) - L.loss(w - dw, gamma)) / (2 * eps)
    # Central differences: round-off ~eps L / h in absolute terms (L = 143 here: 3.2e-8, measured 2.4e-8 .. 4e-8
    # across BLAS kernels; the old atol 1e-8 relied on rtol for every entry), truncation h^2 |d3 L| / 6 ~ 1e-10
    # relative. A wrong gradient (a factor, a missing transpose) is off by O(1).
    np.testing.assert_allclose(L.gradient(w, gamma), fd, rtol=1e-6, atol=10 * EPS * L.loss(w, gamma) / eps)


def test_aligned_closed_form_matches_ode_integration(rng):
    gammas = np.array([2.0, 1.3, 0.7])
    gamma, v = random_gamma(rng, 8, [*gammas, 0.2])
    v = v[:, :3]
    u, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    s0 = np.array([1e-3, 2e-3, 5e-3])
    w0 = u @ np.diag(s0) @ v.T

    def rhs(_, y):
        return -L.gradient(y.reshape(3, 8), gamma).ravel()

    t = np.linspace(0, 6.0, 61)
    sol = scipy.integrate.solve_ivp(rhs, (0, t[-1]), w0.ravel(), t_eval=t, rtol=1e-11, atol=1e-14, method="DOP853")
    num = np.array([np.sort(np.linalg.eigvalsh(w @ gamma @ w.T))[::-1] for w in sol.y.T.reshape(-1, 3, 8)])
    pred = L.aligned_eigenvalues(gammas, gammas * s0**2, t)
    # DOP853 at rtol 1e-11 / atol 1e-14: relative errors in W are not amplified along this flow (near 0 it is
    # linear, near the learned point contracting), so the global error stays within ~1e3 x rtol per component;
    # eigenvalues s^2 gamma in [0, 1] double it. 1e4 x rtol = 1e-7 absolute (measured 2.3e-11).
    np.testing.assert_allclose(np.sort(pred, axis=1)[:, ::-1], num, rtol=0, atol=1e4 * 1e-11)
    # W stays of the form U S(t) V^T: U^T W V is diagonal, to the same 1e3 x rtol (measured 1.5e-15 .. 4e-15).
    core = u.T @ sol.y[:, -1].reshape(3, 8) @ v
    assert np.max(np.abs(core - np.diag(np.diag(core)))) < 1e3 * 1e-11 * np.max(np.abs(core))


def test_logistic_slope_is_8_gamma():
    gammas, a0 = np.array([1.7, 0.4]), np.array([1e-6, 1e-9])
    t = np.linspace(0, 40, 4001)
    lam = L.aligned_eigenvalues(gammas, a0, t)
    for j in range(2):
        m = (lam[:, j] > 0.05) & (lam[:, j] < 0.95)
        slope = np.polyfit(t[m], L._logit(lam[m, j]), 1)[0]
        # logit(lambda(t)) is exactly linear; logit loses <= 4 eps / (0.05 x 0.95) ~ 2e-14 on [0.05, 0.95] and the
        # least-squares slope over t-spans of ~1 divides that by the span: ~1e-13 relative (measured 1e-16).
        assert slope == pytest.approx(8 * gammas[j], rel=1e-9)


def test_gd_map_is_exact_for_aligned_gradient_descent(rng):
    gammas = np.array([2.0, 1.0, 0.6])
    gamma, v = random_gamma(rng, 7, [*gammas, 0.1])
    v = v[:, :3]
    s0 = np.array([1e-4, 3e-4, 1e-3])
    w0 = np.diag(s0) @ v.T
    lr = 0.3 / (4 * gammas[0])
    eigs, _, _ = numpy_gd(gamma, w0, lr, 400)
    pred = L.aligned_eigenvalues_gd(gammas, gammas * s0**2, lr, 400)
    # The same map two ways; each step adds ~m eps relative and relative errors are not amplified (linear near
    # 0, contracting near 1): 400 x 7 x eps = 6e-13 on eigenvalues in [0, 1] (measured 3.3e-15).
    np.testing.assert_allclose(np.sort(pred, axis=1)[:, ::-1], eigs, rtol=0, atol=400 * 7 * EPS)


def test_map_crossing_steps_matches_brute_force_iteration():
    gammas, a0, lr = np.array([1.0, 0.3, 0.05]), np.array([1e-20, 1e-5, 0.2]), 0.2
    steps = L.map_crossing_steps(gammas, a0, lr, 0.5)
    for j in range(3):
        lam, k = a0[j], 0
        while True:
            nxt = lam * (1 + 4 * lr * gammas[j] * (1 - lam)) ** 2
            if nxt >= 0.5:
                break
            lam, k = nxt, k + 1
        frac = (0 - L._logit(lam)) / (L._logit(nxt) - L._logit(lam))
        # map_crossing_steps jumps the geometric phase up to lambda = 1e-8, dropping a (1 - lambda) factor: a
        # relative error ~1e-8 in lambda, i.e. 1e-8 / log-growth per step = 1e-8 / (2 log(1 + 4 lr gamma)) <= 1e-7
        # steps here (measured 2.2e-9); 1e-5 steps keeps a 100x margin and still rejects an off-by-one map.
        assert steps[j] == pytest.approx(k + frac, abs=1e-5)


def test_gd_correction_beats_flow_formula_at_large_lr():
    """Theory note 2.3: the flow formula is ~+39% off at 4 lr gamma = 0.8; the GD map is exact."""
    gamma, a0 = np.array([1.0]), np.array([1e-8])
    lr = 0.8 / 4
    brute = L.aligned_eigenvalues_gd(gamma, a0, lr, 200)[:, 0]
    k = int(np.argmax(brute >= 0.5))
    measured = k - 1 + (0 - L._logit(brute[k - 1])) / (L._logit(brute[k]) - L._logit(brute[k - 1]))
    flow = L.flow_crossing_times(gamma, a0)[0] / lr
    gd = L.map_crossing_steps(gamma, a0, lr)[0]
    assert abs(flow - measured) / measured > 0.2
    # a0 = 1e-8 is not jumped (see above): the same iterates and interpolation as the brute force, exact up to
    # ~k eps (measured 0); 1e-6 steps against the flow formula's 0.2 relative miss.
    assert gd == pytest.approx(measured, abs=1e-6)


def test_gram_schmidt_amplitudes_match_explicit_gram_schmidt(rng):
    gamma, v = random_gamma(rng, 9, [3.0, 2.0, 1.5, 1.0])
    w0 = rng.normal(size=(4, 9))
    p = w0 @ v[:, :4]
    residuals = []
    basis = []
    for j in range(4):
        r = p[:, j].copy()
        for q in basis:
            r -= (q @ r) * q
        residuals.append(np.linalg.norm(r))
        basis.append(r / np.linalg.norm(r))
    expected = np.array([3.0, 2.0, 1.5, 1.0]) * np.array(residuals) ** 2
    # The library re-derives V by eigh (eigenvectors off by eps ||Gamma|| / gap = eps x 3 / 0.5) and
    # orthogonalises P (error eps cond(P)); squared residuals double it. 100 x that ~ 1e-12 here (measured 3e-15).
    rtol = 100 * EPS * np.linalg.cond(p) * 3.0 / 0.5
    np.testing.assert_allclose(L.initial_amplitudes(gamma, w0), expected, rtol=rtol)
    np.testing.assert_allclose(L.initial_amplitudes(gamma, w0, "projection"), [3, 2, 1.5, 1] * np.sum(p**2, 0),
                               rtol=rtol)


@pytest.mark.parametrize("lr_scale", [0.02, 0.3, 0.7])
def test_step_times_predict_random_init_gradient_descent(rng, lr_scale):
    """Theory note 6.3: random small initialisation, separated modes: |rel err| well below 5%."""
    gammas = 2.0 * 0.7 ** np.arange(5)
    gamma, _ = random_gamma(rng, 20, [*gammas, *(0.1 * 0.9 ** np.arange(10))])
    w0 = 1e-7 * rng.normal(size=(5, 20))
    lr = lr_scale / (4 * gammas[0])
    pred = L.step_times(gamma, w0, lr)
    eigs, losses, _ = numpy_gd(gamma, w0, lr, int(pred[-1] * 1.2) + 5)
    rel = np.abs(pred - half_crossings(eigs)) / half_crossings(eigs)
    assert np.max(rel) < 0.02, rel
    # Loss plateaus at d - k between steps, and the loss never increases at small lr.
    mids = 0.5 * (pred[:-1] + pred[1:])
    np.testing.assert_allclose(np.interp(mids, np.arange(losses.size), losses), 5 - np.arange(1, 5), atol=0.1)
    if lr_scale <= 0.3:
        assert np.all(np.diff(losses) <= 1e-12)  # round-off of a loss <= 5: ~5 x 20 eps = 2e-14


def test_gram_schmidt_is_better_than_cruder_amplitudes(rng):
    gammas = 2.0 * 0.85 ** np.arange(6)
    gamma, v = random_gamma(rng, 30, gammas)
    w0 = 1e-6 * rng.normal(size=(6, 30))
    lr = 0.05 / (4 * gammas[0])
    eigs, _, _ = numpy_gd(gamma, w0, lr, int(L.step_times(gamma, w0, lr)[-1] * 1.2))
    meas = half_crossings(eigs)
    errs = {}
    for method in ("gram_schmidt", "projection"):
        a = L.eigenbasis_amplitudes(gammas, v, w0, method)
        errs[method] = np.max(np.abs(np.sort(L.map_crossing_steps(gammas, a, lr)) - meas) / meas)
    assert errs["gram_schmidt"] < 0.02 < errs["projection"]


def test_final_weights_are_the_whitened_top_d_projection(rng):
    gamma, v = random_gamma(rng, 8, [3.0, 2.0, 1.0, 0.25])
    v = v[:, :4]
    w = L.final_weights(gamma, 3)
    # W = Lambda^-1/2 V^T from eigh: eigenvectors off by eps ||Gamma|| / gap (gap 0.75), W Gamma W^T by
    # ~m eps ||Gamma|| / gamma_3 = 8 x 3 eps = 5e-15 (measured 8e-16); 1e-12 absolute.
    np.testing.assert_allclose(w @ gamma @ w.T, np.eye(3), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.abs(w @ v[:, :3]), np.diag(np.array([3.0, 2.0, 1.0]) ** -0.5), rtol=0, atol=1e-12)
    # Gradient descent from a tiny aligned start converges to it (U = I): the last mode is learned by step ~250 and
    # then contracts by 1 - 8 lr gamma_3 = 0.67 per step, so after 600 steps only round-off is left (measured
    # 6e-16); 1e-9 absolute.
    lr = 0.5 / 12
    _, _, w_end = numpy_gd(gamma, 1e-6 * v[:, :3].T, lr, 600)
    np.testing.assert_allclose(np.abs(w_end), np.abs(w), rtol=0, atol=1e-9)
    x = rng.normal(size=(5, 8))
    np.testing.assert_allclose(L.final_embedding(gamma, 3, x), x @ w.T)  # the same product: exact
    with pytest.raises(ValueError, match="positive"):
        L.final_weights(gamma, 5)


def test_initial_loss_and_predicted_loss():
    lam = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.5]])
    np.testing.assert_allclose(L.predicted_loss(lam), [3.0, 2.0, 0.25])  # exact in binary
    np.testing.assert_allclose(L.predicted_loss(lam[:, :2], d=3), [3.0, 2.0, 1.0])


def test_nonpositive_modes_are_never_learned(rng):
    gamma = np.diag([2.0, 1.0, -0.5, 0.0])
    steps = L.step_times(gamma, 1e-5 * rng.normal(size=(4, 4)), 0.05)
    assert np.all(np.isfinite(steps[:2])) and np.all(np.isinf(steps[2:]))


def test_separated_modes_and_separation_ratio():
    g = np.array([1.0, 0.5, 0.49, 0.2, 0.195, 0.05])
    np.testing.assert_array_equal(L.separated_modes(g, 4), [True, False, False, False])
    np.testing.assert_array_equal(L.separated_modes(g, 4, ratio=0.99), [True, True, True, True])
    # Steps separate without limit as the initialisation shrinks (note 2.7): widths fixed, gaps grow.
    gamma = np.diag([1.0, 0.7, 0.4])
    ratios = [L.predict(gamma, s * np.eye(2, 3), 0.05).separation()[0] for s in (1e-2, 1e-5, 1e-10)]
    assert ratios[0] < ratios[1] < ratios[2]


@pytest.mark.parametrize(
    "gamma, w0, lr, match",
    [
        (np.array([[1.0, 0.5], [0.0, 1.0]]), np.ones((1, 2)), 0.01, "symmetric"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), np.ones((1, 2)), 0.01, "non-finite"),
        (np.ones((2, 3)), np.ones((1, 3)), 0.01, "square"),
        (np.eye(3), np.ones((2, 4)), 0.01, "shape"),
        (np.eye(3), np.ones(3), 0.01, "shape"),
        (np.eye(3), np.full((1, 3), np.inf), 0.01, "non-finite"),
        (np.diag([2.0, 1.0]), np.ones((1, 2)), 0.125, "stability limit"),
        (np.diag([2.0, 1.0]), np.ones((1, 2)), 1.0, "1/\\(4 gamma_1\\) = 0.125"),
        (np.eye(2), np.ones((1, 2)), 0.0, "positive"),
        (np.eye(2), np.ones((1, 2)), float("nan"), "positive"),
    ],
)
def test_bad_inputs_raise_clear_errors(gamma, w0, lr, match):
    with pytest.raises(ValueError, match=match):
        L.step_times(gamma, w0, lr)


def test_docstring_examples():
    result = doctest.testmod(L, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 1 and result.failed == 0
