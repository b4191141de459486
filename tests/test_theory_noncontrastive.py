"""The non-contrastive linear theory (Tian, Chen & Ganguli 2021) against hand values, jax.grad, NumPy RK4 and itself
under jit / vmap (float64)."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise.compare.tian2021 import FIXED_POINT_TABLE
from stepwise.theory import noncontrastive as nc

N1, N2 = 5, 3
T_SAVE = np.linspace(0.0, 4.0, 11)  # one save grid for every matrix solve here: one compilation

# Tolerances are bounds, not measurements. Algebra on (<= 5 x 5) matrices with O(1) entries: a chain of k products
# is within ~k N1 eps x (sum of absolute terms, <= ~4 here) of exact, 1.3e-14 absolute for k = 3, so rtol 1e-12 /
# atol 1e-13 covers any summation order (XLA or BLAS, eager or jit) while a wrong term is off by O(0.1).
# Integrations: the adaptive solver runs at rtol 1e-10, the RK4 references to ~1e-13; global errors ~1e2 x rtol.
EPS = np.finfo(np.float64).eps
SOLVER_BOUND = 100 * 1e-10

HYPERS = {
    "byol": nc.Hyper("byol", alpha_p=1.7, beta=0.3, eta=0.02),
    "byol_eta_p": nc.Hyper("byol", alpha_p=0.8, beta=1.0, eta=0.02, eta_p=0.07),
    "simsiam": nc.Hyper("simsiam", alpha_p=1.3, eta=0.05),
    "fixed_tau": nc.Hyper("fixed_tau", alpha_p=1.0, tau=0.6, eta=0.01),
    "simsiam_free": nc.Hyper("simsiam", alpha_p=1.0, eta=0.03, stop_gradient=False),
    "fixed_tau_free": nc.Hyper("fixed_tau", alpha_p=2.0, tau=0.7, eta=0.0, stop_gradient=False),
    "symmetric": nc.Hyper("fixed_tau", alpha_p=1.0, tau=0.8, eta=0.02, symmetric_predictor=True),
}


def stats(rng, n1=N1):
    a, b = rng.normal(size=(n1, n1)), rng.normal(size=(n1, n1))
    return a @ a.T / n1, 0.3 * b @ b.T / n1


def weights(rng, n2=N2, n1=N1, symmetric=False):
    wp = rng.normal(size=(n2, n2)) / np.sqrt(n2)
    if symmetric:
        wp = (wp + wp.T) / 2
    return nc.Weights(rng.normal(size=(n2, n1)) / np.sqrt(n1), wp, rng.normal(size=(n2, n1)) / np.sqrt(n1))


def rk4(f, y0, t, substeps=400):
    """Obviously-correct reference: classical RK4 with a fixed fine step, NumPy arrays in a tuple."""
    ys, y = [y0], y0
    for t0, t1 in zip(t[:-1], t[1:]):
        h = (t1 - t0) / substeps
        for _ in range(substeps):
            k1 = f(y)
            k2 = f(tuple(a + h / 2 * k for a, k in zip(y, k1)))
            k3 = f(tuple(a + h / 2 * k for a, k in zip(y, k2)))
            k4 = f(tuple(a + h * k for a, k in zip(y, k3)))
            y = tuple(a + h / 6 * (b + 2 * c + 2 * d + e) for a, b, c, d, e in zip(y, k1, k2, k3, k4))
        ys.append(y)
    return [np.stack(z) for z in zip(*ys)]


def numpy_field(y, x, x_aug, h):
    """Lemma 1 written out in NumPy (Eqns 2-4), the target chosen by method; without stop-gradient the extra
    terms of the target branch, -(W_p^T W_p W S - tau (W_p + W_p^T) W X + tau^2 W S)."""
    w, wp, wa = y
    target = wa if h.method == "byol" else h.tau * w
    g = -wp @ w @ (x + x_aug) + target @ x
    dwp = h.alpha_p * g @ w.T - h.eta_pred * wp
    if h.stop_gradient:
        dw = wp.T @ g - h.eta * w
    else:
        s = x + x_aug
        dw = -(wp.T @ wp @ w @ s - h.tau * (wp + wp.T) @ w @ x + h.tau**2 * w @ s) - h.eta * w
    dwa = h.beta * (w - wa) if h.method == "byol" else h.tau * dw
    return dw, dwp, dwa


def numpy_mode_field(y, h):
    """Eqns 11-13 in NumPy, with tau_j s_j' = beta (1 - tau_j) s_j - tau_j s_j' / 2 divided by s_j by hand."""
    p, s, tau = y
    dp = h.alpha_p * s * (tau - (1 + h.sigma2) * p) - h.eta * p
    ds = 2 * p * s * (tau - (1 + h.sigma2) * p) - 2 * h.eta * s
    dtau = h.beta * (1 - tau) - tau * (p * (tau - (1 + h.sigma2) * p) - h.eta)
    return dp, ds, dtau if h.method == "byol" else 0 * tau


# ----------------------------------------------------------------------------------------------------------------
# The vector field.


@pytest.mark.parametrize("name", list(HYPERS))
def test_vector_field_is_minus_grad_of_the_loss(rng, name):
    h = HYPERS[name]
    x, x_aug = stats(rng)
    y = weights(rng, symmetric=h.symmetric_predictor)
    y = jax.tree.map(jnp.asarray, y)
    d = nc.vector_field(y, x, x_aug, h)
    g = jax.grad(nc.loss)(y, x, x_aug, h)
    np.testing.assert_allclose(d.w, -g.w - h.eta * y.w, rtol=1e-12, atol=1e-13)
    gp = -h.alpha_p * g.wp
    if h.symmetric_predictor:
        gp = (gp + gp.T) / 2
    np.testing.assert_allclose(d.wp, gp - h.eta_pred * y.wp, rtol=1e-12, atol=1e-13)
    # The same elementwise expression: a couple of roundings, but beta (w - wa) may be formed as beta w - beta wa,
    # which cancels: absolute 2 eps beta (|w| + |wa|) (measured: identical).
    if h.method == "byol":
        np.testing.assert_allclose(d.wa, h.beta * (y.w - y.wa), rtol=4 * EPS,
                                   atol=2 * EPS * h.beta * float(np.max(np.abs(y.w) + np.abs(y.wa))))
    else:
        np.testing.assert_allclose(d.wa, h.tau * d.w, rtol=4 * EPS)


@pytest.mark.parametrize("name", ["byol", "byol_eta_p", "simsiam", "fixed_tau", "simsiam_free", "fixed_tau_free"])
def test_vector_field_matches_numpy_lemma1(rng, name):
    h = HYPERS[name]
    x, x_aug = stats(rng)
    y = weights(rng)
    d = nc.vector_field(jax.tree.map(jnp.asarray, y), x, x_aug, h)
    for a, b in zip(d, numpy_field(y, x, x_aug, h)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_population_loss_matches_monte_carlo(rng):
    """J from X, X' against a sample mean of 1/2 ||W_p W x1 - W_a x2||^2 with Gaussian data and augmentations."""
    n1, n = 3, 400_000
    x, x_aug = stats(rng, n1)
    y = weights(rng, 2, n1)
    xbar = rng.multivariate_normal(np.zeros(n1), x, size=n)
    x1 = xbar + rng.multivariate_normal(np.zeros(n1), x_aug, size=n)
    x2 = xbar + rng.multivariate_normal(np.zeros(n1), x_aug, size=n)
    per = 0.5 * np.sum((x1 @ (y.wp @ y.w).T - x2 @ y.wa.T) ** 2, axis=1)
    j = float(nc.loss(jax.tree.map(jnp.asarray, y), x, x_aug, HYPERS["byol"]))
    assert abs(per.mean() - j) < 4 * per.std() / np.sqrt(n)


def test_theorem2_operator(rng):
    x, x_aug = stats(rng)
    for name in ("simsiam_free", "fixed_tau_free"):
        h = HYPERS[name]
        y = weights(rng)
        hm = np.asarray(nc.theorem2_operator(jnp.asarray(y.wp), x, x_aug, h))
        dw = np.asarray(nc.vector_field(jax.tree.map(jnp.asarray, y), x, x_aug, h).w)
        vec = lambda a: a.T.reshape(-1)  # column-major, as in the paper
        np.testing.assert_allclose(-hm @ vec(y.w), vec(dw), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(hm, hm.T, rtol=0, atol=1e-13)
        # eigvalsh is backward stable: eigenvalues within ~N1 N2 eps ||H|| (||H|| <= 6): 2e-14
        assert np.linalg.eigvalsh(hm).min() >= h.eta - 1e-12
    # Isotropy: lambda_min(H) >= sigma2 tau^2 + eta; at W_p = tau I, H = (2 sigma2 tau^2 + eta) I exactly.
    xi, xa = nc.isotropic(N1, 0.5)
    h = nc.Hyper("fixed_tau", tau=0.7, eta=0.01, stop_gradient=False)
    for wp in (rng.normal(size=(N2, N2)), 0.7 * np.eye(N2)):
        lam = np.linalg.eigvalsh(np.asarray(nc.theorem2_operator(jnp.asarray(wp), xi, xa, h))).min()
        assert lam >= nc.isotropic_decay_rate(0.5, 0.01, 0.7) - 1e-12  # N1 N2 eps ||H|| ~ 2e-14, as above
    assert lam == pytest.approx(2 * 0.5 * 0.49 + 0.01, rel=1e-12)  # H = 0.5 I exactly, eigvalsh to ~15 eps
    with pytest.raises(ValueError, match="without stop-gradient"):
        nc.theorem2_operator(jnp.asarray(wp), xi, xa, HYPERS["simsiam"])


def test_eqn7_and_theorem3_identity(rng):
    """Eqn 7 equals Lemma 1 under its assumptions, and dL/dt = -(LK + KL) (Theorem 3), also with eta_p != eta."""
    x, x_aug = nc.isotropic(N1, 0.4)
    for eta_p in (None, 0.09):
        h = nc.Hyper("fixed_tau", tau=0.8, alpha_p=1.6, eta=0.03, eta_p=eta_p, sigma2=0.4, symmetric_predictor=True)
        y = jax.tree.map(jnp.asarray, weights(rng, symmetric=True))
        d = nc.vector_field(y, x, x_aug, h)
        f = y.w @ y.w.T
        df = d.w @ y.w.T + y.w @ d.w.T
        dwp7, df7 = nc.symmetric_flow(y.wp, f, h.tau, h)
        np.testing.assert_allclose(dwp7, d.wp, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(df7, df, rtol=1e-12, atol=1e-13)
        lmat, k = nc.commutator(f, y.wp), nc.alignment_operator(f, y.wp, h.tau, h)
        dl = df @ y.wp + f @ d.wp - d.wp @ f - y.wp @ df
        np.testing.assert_allclose(dl, -(lmat @ k + k @ lmat), rtol=1e-10, atol=1e-13)


def test_mode_field_is_scalar_byol(rng):
    """n1 = n2 = 1: s = w^2, p = w_p, tau = w_a / w (the paper's remark after Eqn 13)."""
    h = nc.Hyper("byol", alpha_p=1.4, beta=0.35, eta=0.02, sigma2=0.3)
    x, x_aug = nc.isotropic(1, h.sigma2)
    w, wp, wa = 0.7, 0.4, 0.3
    d = nc.vector_field(nc.Weights(*(jnp.array([[v]]) for v in (w, wp, wa))), x, x_aug, h)
    m = nc.mode_field(nc.Modes(jnp.array(wp), jnp.array(w**2), jnp.array(wa / w)), h)
    dw, dwp, dwa = (float(a[0, 0]) for a in d)
    # Scalars: a dozen roundings on each side, but tau' = dwa / w - wa dw / w^2 cancels; each compared relative to
    # the sum of the magnitudes of its terms, 20 eps x that (measured <= 4e-16 relative).
    assert float(m.p) == pytest.approx(dwp, rel=20 * EPS)
    assert float(m.s) == pytest.approx(2 * w * dw, rel=20 * EPS)
    assert float(m.tau) == pytest.approx(dwa / w - wa * dw / w**2, abs=20 * EPS * (abs(dwa / w) + abs(wa * dw / w**2)))
    # SimSiam / fixed tau: constant tau.
    mf = nc.mode_field(nc.Modes(jnp.array(wp), jnp.array(w**2), jnp.array(1.0)), nc.Hyper("simsiam", sigma2=0.3))
    assert float(mf.tau) == 0.0


# ----------------------------------------------------------------------------------------------------------------
# Integrators.


@pytest.mark.parametrize("name", ["byol", "simsiam_free"])
def test_adaptive_solver_matches_fine_rk4(rng, name):
    h = HYPERS[name]
    x, x_aug = stats(rng)
    y0 = weights(rng)
    tr = nc.integrate(y0, x, x_aug, T_SAVE, h)
    if h.method != "byol":
        y0 = nc.Weights(y0.w, y0.wp, h.tau * y0.w)
    ref = rk4(lambda y: numpy_field(y, x, x_aug, h), tuple(y0), T_SAVE, substeps=1000)
    # RK4 at step 4e-4 is accurate to ~h^4 = 3e-14; the adaptive solver at rtol 1e-10 / atol 1e-12 to ~100x that
    # (measured 1.1e-9 relative, 4.7e-12 absolute, 7e-3 of this bound).
    for got, want in zip((tr.w, tr.wp, tr.wa), ref):
        np.testing.assert_allclose(got, want, rtol=SOLVER_BOUND, atol=SOLVER_BOUND * 1e-2)
    assert tr.num_steps > 0 and tr.w.shape == (len(T_SAVE), N2, N1)


def test_theorem1_invariant_holds_only_where_the_theorem_says(rng):
    x, x_aug = stats(rng)
    y0 = weights(rng, symmetric=True)
    errs = {}
    for name in ("byol", "simsiam", "fixed_tau", "simsiam_free", "symmetric"):
        h = HYPERS[name]
        tr = nc.integrate(y0, x, x_aug, T_SAVE, h)
        c = np.asarray(nc.balance(tr.w, tr.wp, tr.t, alpha_p=h.alpha_p, eta=h.eta))
        errs[name] = np.max(np.linalg.norm(c - c[0], axis=(1, 2))) / np.linalg.norm(c[0])
    # drift of an exact invariant: 10 x the solver's rtol 1e-10 (measured 3.4e-12)
    assert max(errs["byol"], errs["simsiam"], errs["fixed_tau"]) < 10 * 1e-10, errs
    assert errs["simsiam_free"] > 1e-3 and errs["symmetric"] > 1e-3, errs  # the controls must break it


def test_theorem2_exact_decay_and_bound(rng):
    x, x_aug = nc.isotropic(N1, 0.5)
    y0 = weights(rng)
    tr = nc.integrate(nc.Weights(y0.w, np.eye(N2), y0.wa), x, x_aug, T_SAVE,
                      nc.Hyper("simsiam", alpha_p=0.0, eta=0.01, eta_p=0.0))
    exact = np.exp(-0.51 * T_SAVE)[:, None, None] * y0.w
    np.testing.assert_allclose(tr.w, exact, rtol=10 * 1e-10, atol=1e-12)  # 10 x the solver's rtol; measured 1.5e-11
    # alpha_p = eta_p = 0: dW_p/dt = 0 exactly, so W_p stays I to the last bit (measured 0)
    np.testing.assert_allclose(tr.wp, np.broadcast_to(np.eye(N2), tr.wp.shape), rtol=0, atol=1e-15)
    free = nc.integrate(y0, x, x_aug, T_SAVE, nc.Hyper("simsiam", eta=0.01, stop_gradient=False))
    norms = np.linalg.norm(free.w, axis=(1, 2)) / np.linalg.norm(y0.w)
    assert np.all(norms <= np.exp(-0.51 * T_SAVE) * (1 + SOLVER_BOUND))  # a bound up to the solver's error


def test_mode_integration_matches_rk4_and_eqn14(rng):
    h = nc.Hyper("byol", alpha_p=2.0, beta=0.4, eta=0.05, sigma2=0.5)
    p0 = np.array([0.9, 0.3, -0.2])
    s0 = np.array([0.2, 0.5, 0.01])
    t = np.linspace(0.0, 20.0, 6)
    tr = nc.integrate_modes(p0, s0, t, h)
    ref = rk4(lambda y: numpy_mode_field(y, h), (p0, s0, np.zeros(3)), t, substeps=2000)
    # RK4 at step 2e-3 (~h^4 = 2e-11 over t = 20) and the solver at rtol 1e-10: measured 3.4e-9 relative
    for got, want in zip((tr.p, tr.s, tr.tau), ref):
        np.testing.assert_allclose(got, want, rtol=SOLVER_BOUND, atol=SOLVER_BOUND * 1e-2)
    m = nc.mode_field(nc.Modes(*(jnp.asarray(a) for a in (p0, s0, np.full(3, 0.4)))), h)
    # The same scalar formulas (a dozen roundings; no cancellation at these values): 1e-13 = 450 eps
    for a, b in zip(m, numpy_mode_field((p0, s0, np.full(3, 0.4)), h)):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    c = np.asarray(nc.mode_invariant(tr.p, tr.s, t[:, None], alpha_p=2.0, eta=0.05))
    np.testing.assert_allclose(c, np.broadcast_to(c[0], c.shape), rtol=SOLVER_BOUND, atol=SOLVER_BOUND * 1e-2)
    assert c[0, 0] == pytest.approx(0.2 - 0.81 / 2.0)  # c_j = s_j(0) - p_j(0)^2 / alpha_p (appendix sign)
    # k is padded with copies of mode 0; under the max norm copies of modes change nothing, bit for bit.
    dup = nc.integrate_modes(np.r_[p0, p0[1:]], np.r_[s0, s0[1:]], t, h)
    np.testing.assert_array_equal(dup.p[:, :3], tr.p)
    np.testing.assert_array_equal(dup.s[:, 3:], tr.s[:, 1:])


def test_basins_on_the_parabola():
    tau, sigma2, eta = 1.0, 0.5, 0.04
    pm, pp = nc.fixed_points(tau, sigma2, eta)
    p0 = np.array([0.9 * pm, 1.1 * pm, 0.3, 1.2])
    t = np.concatenate([[0.0], np.geomspace(1e-3, 4000.0, 40)])
    tr = nc.integrate_modes(p0, p0**2, t, nc.Hyper("fixed_tau", tau=tau, sigma2=sigma2, eta=eta))
    limits = [nc.parabola_limit(p, tau, sigma2, eta) for p in p0]
    assert limits == [0.0, pp, pp, pp]
    np.testing.assert_allclose(tr.p[-1], limits, atol=1e-6)
    # c = 0 stays on the parabola up to the solver's error on s and p (rtol 1e-10, atol 1e-12 per step; measured
    # 1.4e-10 over t = 4000, i.e. 3e-3 relative to the old 1e-12 + 1e-7 s): 1e2 x rtol relative, absolute floor.
    np.testing.assert_allclose(tr.s, tr.p**2, rtol=SOLVER_BOUND, atol=SOLVER_BOUND * 1e-2)


# ----------------------------------------------------------------------------------------------------------------
# Fixed points and thresholds.

NOTE_TABLE = FIXED_POINT_TABLE  # theory note A5: (tau, sigma2, eta, p_-, p_+), the experiment checks the same rows


@pytest.mark.parametrize("tau,sigma2,eta,pm,pp", NOTE_TABLE)
def test_fixed_points_note_table(tau, sigma2, eta, pm, pp):
    got = nc.fixed_points(tau, sigma2, eta)
    assert got == pytest.approx((pm, pp), abs=1e-4)
    for p in got:  # roots of Eqn 16, and of its factorised form
        # v(p) = p^2 (tau - (1 + sigma2) p) - eta p at a computed root: the root's own error (~4 eps |p|, times
        # |v'(p)|) plus the evaluation's (~4 eps x the sum of the terms' magnitudes); the old 1e-15 was ~3x the
        # evaluation round-off for p ~ 0.7.
        terms = p**2 * tau + (1 + sigma2) * abs(p) ** 3 + eta * abs(p)
        slope = abs(2 * tau * p - 3 * (1 + sigma2) * p**2 - eta)
        velocity = float(nc.parabola_velocity(p, tau=tau, sigma2=sigma2, eta=eta))
        assert abs(velocity) <= 8 * EPS * (terms + slope * abs(p))


def test_fixed_points_hand_values():
    assert nc.collapse_threshold(1.0, 0.5) == pytest.approx(1 / 6)
    assert nc.collapse_threshold(1.0, 0.0) == 0.25
    assert nc.collapse_threshold(0.5, 0.5) == pytest.approx(0.25 / 6)
    assert nc.fixed_points(0.6, 0.2, 0.0) == (0.0, pytest.approx(0.5))  # tau/(1+sigma2)
    # tau = 0.5, sigma2 = 0.5, eta = 0.04: 1.5 p^2 - 0.5 p + 0.04 = 0 -> p = (0.5 +- 0.1)/3.
    assert nc.fixed_points(0.5, 0.5, 0.04) == pytest.approx((0.4 / 3, 0.2))
    pm, pp = nc.fixed_points(1.0, 0.5, 1 / 6)  # at the threshold the two merge at tau/(2(1+sigma2))
    # A double root is sqrt(eps)-conditioned: a discriminant off by ~4 eps tau^2 moves it by
    # sqrt(4 eps) tau / (2 (1 + sigma2)) = 1e-8; 1e-7 leaves 10x.
    assert pm == pytest.approx(1 / 3, abs=1e-7) and pp == pytest.approx(1 / 3, abs=1e-7)
    p = np.linspace(-1, 1, 9)
    pm, pp = nc.fixed_points(1.0, 0.5, 0.05)
    # Expanded vs factorised cubic: each within ~4 eps x the sum of its terms' magnitudes (<= 1.5 + 1 + 0.05 for
    # |p| <= 1), absolute since the values vanish near the roots (measured 1.4e-17).
    np.testing.assert_allclose(nc.parabola_velocity(p, tau=1.0, sigma2=0.5, eta=0.05),
                               -1.5 * p * (p - pm) * (p - pp), rtol=0, atol=8 * EPS * 2.6)
    assert nc.parabola_limit(0.5, 1.0, 0.5, 0.0) == pytest.approx(2 / 3)
    assert nc.parabola_limit(-0.1, 1.0, 0.5, 0.0) == 0.0
    assert nc.parabola_limit(0.9, 1.0, 0.5, 0.2) == 0.0  # above the threshold
    assert nc.parabola_limit(pm, 1.0, 0.5, 0.05) == pm


def test_fixed_points_errors():
    with pytest.raises(ValueError, match=r"above the collapse threshold .* = 0.166667"):
        nc.fixed_points(1.0, 0.5, 0.17)
    for bad in ((1.0, 0.5, -0.01), (0.0, 0.5, 0.01), (1.0, -0.1, 0.01), (float("nan"), 0.5, 0.0)):
        with pytest.raises(ValueError):
            nc.fixed_points(*bad)
    with pytest.raises(ValueError, match="tau"):
        nc.collapse_threshold(-1.0, 0.5)


def test_doctests():
    assert doctest.testmod(nc, raise_on_error=False).failed == 0


# ----------------------------------------------------------------------------------------------------------------
# Diagnostics.


def test_alignment_diagnostics(rng):
    u, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    s, p = np.array([3.0, 2.0, 1.0, 0.5]), np.array([0.7, -0.2, 0.4, 0.1])
    f, wp = u @ np.diag(s) @ u.T, u @ np.diag(p) @ u.T
    got_s, got_p = nc.aligned_spectrum(f, wp)
    # eigh of the 4 x 4 F (||F|| = 3, gap 0.5): eigenvalues within ~4 eps ||F|| = 2.7e-15, eigenvectors within
    # eps ||F|| / gap; p = u^T W_p u and the cosines inherit the latter times ||W_p|| / |p_min| (= 7). 10x each.
    eig = 4 * EPS * 3.0
    np.testing.assert_allclose(got_s, s, rtol=0, atol=10 * eig)
    np.testing.assert_allclose(got_p, p, rtol=0, atol=10 * eig / 0.5)
    np.testing.assert_allclose(nc.alignment_cosines(f, wp), np.sign(p), rtol=0, atol=10 * eig / 0.5 * 7)
    # F and W_p commute exactly; the products carry ~4 eps ||F|| ||W_p|| per entry, x 4 in the Frobenius norm
    assert float(np.linalg.norm(nc.commutator(f, wp))) < 10 * 4 * eig * 0.7
    assert float(nc.asymmetry(wp)) < 10 * 4 * EPS  # u diag(p) u^T is symmetric up to ~4 eps per entry
    a = np.array([[1.0, 2.0], [0.0, 1.0]])
    assert float(nc.asymmetry(a)) == pytest.approx(np.sqrt(8) / np.sqrt(6))
    rot = u @ np.diag(p) @ np.linalg.qr(rng.normal(size=(4, 4)))[0].T  # not aligned
    assert float(np.min(nc.alignment_cosines(f, rot))) < 0.9


# ----------------------------------------------------------------------------------------------------------------
# Validation.


@pytest.mark.parametrize("kwargs,match", [
    (dict(eta=-0.1), "eta"),
    (dict(beta=0.0), "beta"),
    (dict(beta=1.5), "beta"),
    (dict(alpha_p=-1.0), "alpha_p"),
    (dict(eta_p=-1.0), "eta_p"),
    (dict(sigma2=-0.1), "sigma2"),
    (dict(method="moco"), "method"),
    (dict(method="simsiam", tau=0.5), "tau = 1"),
    (dict(method="fixed_tau", tau=0.0), "tau"),
    (dict(stop_gradient=False), "stop_gradient"),
    (dict(alpha_p=0.0, eta=0.1), "eta_p = 0"),
])
def test_hyper_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nc.Hyper(**kwargs)


def test_integrate_validation(rng):
    x, x_aug = stats(rng)
    y = weights(rng)
    h = HYPERS["byol"]
    cases = [
        (lambda: nc.integrate(nc.Weights(y.w[:, :2], y.wp, y.wa), x, x_aug, T_SAVE, h), "shape"),
        (lambda: nc.integrate(nc.Weights(y.w * np.nan, y.wp, y.wa), x, x_aug, T_SAVE, h), "non-finite"),
        (lambda: nc.integrate(y, x + np.triu(np.ones((N1, N1)), 1), x_aug, T_SAVE, h), "symmetric"),
        (lambda: nc.integrate(y, -x, x_aug, T_SAVE, h), "positive semi-definite"),
        (lambda: nc.integrate(y, x, x_aug, T_SAVE[::-1], h), "increasing"),
        (lambda: nc.integrate(y, x, x_aug, T_SAVE, h, solver="euler"), "solver"),
        (lambda: nc.integrate(y, x, x_aug, T_SAVE, h, rtol=0.0), "rtol"),
        (lambda: nc.integrate(y, x, x_aug, T_SAVE, HYPERS["symmetric"]), "symmetric W_p"),
        (lambda: nc.integrate(y, x, x_aug, T_SAVE, "byol"), "Hyper"),
        (lambda: nc.integrate_modes([0.1, 0.2], [0.1], T_SAVE, h), "same length"),
        (lambda: nc.integrate_modes([0.1], [-0.1], T_SAVE, h), ">= 0"),
        (lambda: nc.integrate_modes([0.1], [0.1], T_SAVE, HYPERS["byol_eta_p"]), "one weight decay"),
        (lambda: nc.integrate_modes([0.1], [0.1], T_SAVE, HYPERS["fixed_tau"], tau0=0.3), "fixed"),
        (lambda: nc.balance(y.w, y.wp, 0.0, alpha_p=0.0, eta=0.0), "alpha_p"),
        (lambda: nc.mode_invariant(0.1, 0.1, 0.0, alpha_p=1.0, eta=-1.0), "eta"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
    with pytest.raises(FloatingPointError, match="max_steps"):
        nc.integrate(y, x, x_aug, T_SAVE, h, max_steps=2)


# ----------------------------------------------------------------------------------------------------------------
# eager == jit == vmap for the JAX ops.


def _ops(x, x_aug):
    h, hs = HYPERS["byol"], HYPERS["symmetric"]
    hm = nc.Hyper("byol", alpha_p=1.2, beta=0.3, eta=0.02, sigma2=0.4)
    return {
        "vector_field": lambda y: nc.vector_field(y, x, x_aug, h),
        "loss": lambda y: nc.loss(y, x, x_aug, h),
        "balance": lambda y: nc.balance(y.w, y.wp, 1.5, alpha_p=1.3, eta=0.02),
        "theorem2_operator": lambda y: nc.theorem2_operator(y.wp, x, x_aug, HYPERS["simsiam_free"]),
        "symmetric_flow": lambda y: nc.symmetric_flow(y.wp + y.wp.T, y.w @ y.w.T, 0.7, hs),
        "alignment_operator": lambda y: nc.alignment_operator(y.w @ y.w.T, y.wp + y.wp.T, 0.7, hs),
        "commutator": lambda y: nc.commutator(y.w @ y.w.T, y.wp),
        "aligned_spectrum": lambda y: nc.aligned_spectrum(y.w @ y.w.T, y.wp),
        "alignment_cosines": lambda y: nc.alignment_cosines(y.w @ y.w.T, y.wp),
        "asymmetry": lambda y: nc.asymmetry(y.wp),
        "mode_field": lambda y: nc.mode_field(nc.Modes(y.wp[0], y.w[:, 0] ** 2, y.wa[:, 0]), hm),
        "mode_invariant": lambda y: nc.mode_invariant(y.wp[0], y.w[:, 0] ** 2, 3.0, alpha_p=1.2, eta=0.02),
        "parabola_velocity": lambda y: nc.parabola_velocity(y.wp[0], tau=1.0, sigma2=0.5, eta=0.04),
    }


def test_eager_jit_vmap_agree(rng):
    x, x_aug = (jnp.asarray(a) for a in stats(rng))
    batch = [jax.tree.map(jnp.asarray, weights(rng)) for _ in range(3)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *batch)
    for name, op in _ops(x, x_aug).items():
        eager = [op(y) for y in batch]
        jitted = [jax.jit(op)(y) for y in batch]
        vmapped = jax.vmap(op)(stacked)
        for i in range(len(batch)):
            for a, b, c in zip(jax.tree.leaves(eager[i]), jax.tree.leaves(jitted[i]), jax.tree.leaves(vmapped)):
                # the header's algebra bound: XLA may reorder under jit / vmap (measured <= 8e-4 of it)
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13, err_msg=f"{name}: eager vs jit")
                np.testing.assert_allclose(a, c[i], rtol=1e-12, atol=1e-13, err_msg=f"{name}: eager vs vmap")
