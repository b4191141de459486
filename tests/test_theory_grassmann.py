"""Linear SSL on the Grassmannian (Esser et al. 2023): closed forms against diffrax ODE solutions and independent
formulas, the collapse and principal-angle rates, Riemannian GD with QR / polar retractions (float64)."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

from stepwise._compat import enable_x64
from stepwise.theory import grassmann as G
from stepwise.training import riemannian as R


def sym(rng, m, scale=0.25):
    a = rng.normal(size=(m, m))
    return scale * (a + a.T)


def spectrum_matrix(rng, lams):
    """Symmetric C with the given eigenvalues (decreasing) and a random eigenbasis; returns (C, U)."""
    q, _ = np.linalg.qr(rng.normal(size=(len(lams), len(lams))))
    return (q * np.asarray(lams)) @ q.T, q


def orth(rng, m, h):
    return np.linalg.qr(rng.normal(size=(m, h)))[0]


def proj(w):
    return np.einsum("...mh,...nh->...mn", w, w)


# Well-separated spectrum (gaps 0.3..0.5) so rates are measured in short times; one negative eigenvalue on purpose.
LAMS = np.array([1.0, 0.6, 0.3, -0.1, -0.4, -0.9, -1.3, -1.6, -2.0, -2.4])
# Tolerances are bounds: round-off in units of eps x size x condition (||C|| = 2.4, m = 10), or the ODE solver's
# tolerance (rtol 1e-12) times the ~1e3 a non-expanding flow can accumulate it by.
EPS = np.finfo(np.float64).eps
M, NORM_C = len(LAMS), float(np.max(np.abs(LAMS)))
ODE_BOUND = 1e3 * 1e-12


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    c, u = spectrum_matrix(rng, LAMS)
    return c, u, rng


def graph_basis(c, w0, t):
    """Independent reference: span(e^{2tC} W0) = span([I; E_b B E_t^{-1}]) in the eigenbasis, B = A_b A_t^{-1}.

    Every exponent 2t(lambda_{h+i} - lambda_j) is <= 0, so nothing overflows and an entry underflows only where
    it is negligible next to the identity block; needs A_t = U_h^T W0 invertible. Returns (V, Q) with Q the
    orthonormal basis in the eigenbasis V.
    """
    lam, v = np.linalg.eigh(c)
    lam, v = lam[::-1], v[:, ::-1]
    h = w0.shape[1]
    a = v.T @ w0
    b = np.linalg.solve(a[:h].T, a[h:].T).T  # A_b A_t^{-1}
    x = b * np.exp(2 * t * (lam[h:, None] - lam[None, :h]))
    q, _ = np.linalg.qr(np.vstack([np.eye(h), x]))
    return v, q


def graph_projector(c, w0, t):
    v, q = graph_basis(c, w0, t)
    q = v @ q
    return q @ q.T


def fit_slope(t, y):
    return np.polyfit(t, np.log(y), 1)[0]


# ----------------------------------------------------------------------------------------------------------------
# Closed-form projector.


def ode_run(c, rng, h):
    w0 = orth(rng, c.shape[0], h)
    t_end = 5.0 / float(LAMS[h - 1] - LAMS[h])
    ts = np.linspace(0.0, t_end, 26)
    return w0, ts, *G.integrate(c, w0, ts)


@pytest.fixture(scope="module")
def ode_runs(problem):
    c, _, rng = problem
    return {h: ode_run(c, rng, h) for h in (1, 3, 8)}


@pytest.mark.parametrize("h", [1, 3, 8])
def test_projector_matches_adaptive_ode(problem, ode_runs, h):
    """Closed form vs diffrax Dopri8 (rtol 1e-12) over t in [0, 5 / gap_h]: the issue's 1e-6 bound.

    h = 8 includes negative eigenvalues (lambda_8 = -1.6): the case where the unshifted field is unstable off the
    constraint set (see integrate's docstring).
    """
    c = problem[0]
    w0, ts, ws, n_steps = ode_runs[h]
    closed = np.asarray(G.projector_trajectory(c, w0, ts))
    err = np.linalg.norm(proj(ws) - closed, axis=(1, 2))
    assert err.max() < 1e-6, err.max()
    assert err.max() < ODE_BOUND  # 1e3 x the solver's rtol 1e-12 (measured 3.7e-11)
    assert np.max(np.abs(np.einsum("tmh,tmk->thk", ws, ws) - np.eye(h))) < 10 * ODE_BOUND  # the flow keeps W^T W = I
    assert n_steps > 10
    # single-time API == trajectory API: the same closed form, ~m eps apart (measured 8e-17)
    np.testing.assert_allclose(G.projector(c, w0, ts[7]), closed[7], rtol=0, atol=10 * M * EPS)


def test_projector_raw_w_differs_by_a_rotation(problem, ode_runs):
    """Pitfall 2: the flow's W is Y (Y^T Y)^{-1/2} Q(t) with a non-trivial rotation Q(t), so compare projectors."""
    c = problem[0]
    w0, ts, ws, _ = ode_runs[3]
    y = scipy.linalg.expm(2.0 * ts[3] * c) @ w0
    sym_rep = y @ scipy.linalg.inv(scipy.linalg.sqrtm(y.T @ y)).real
    assert np.max(np.abs(ws[3] - sym_rep)) > 1e-2
    # The ODE's error (ODE_BOUND) plus the reference's eps cond(Y^T Y) (< 1e-12 here); measured 1.1e-13.
    np.testing.assert_allclose(proj(ws[3]), proj(sym_rep), rtol=0, atol=ODE_BOUND)


@pytest.mark.parametrize("t", [0.0, 0.3, 2.0])
def test_projector_against_expm_formula(problem, t):
    """The literal formula Y (Y^T Y)^{-1} Y^T with scipy's expm, at times where it is well conditioned."""
    c, _, rng = problem
    w0 = orth(rng, c.shape[0], 4)
    y = scipy.linalg.expm(2 * t * c) @ w0
    # The literal formula solves with Y^T Y: error ~m eps cond(Y)^2 (cond(Y) = 1 at t = 0, ~70 at t = 2), 10x
    # that; the closed form is better conditioned. Measured 1e-15 (t = 0) .. 1.6e-14 (t = 2).
    np.testing.assert_allclose(G.projector(c, w0, t), y @ np.linalg.solve(y.T @ y, y.T), rtol=0,
                               atol=10 * M * EPS * np.linalg.cond(y) ** 2)


@pytest.mark.parametrize("t", [0.5, 5.0, 50.0, 200.0])
def test_projector_stable_at_large_times(problem, t):
    """Where exp(2tC) overflows (t = 200: e^{1760}), the graded QR still agrees with the graph-coordinate formula."""
    c, _, rng = problem
    w0 = orth(rng, c.shape[0], 3)
    p = np.asarray(G.projector(c, w0, t))
    # The graph formula solves with A_t = U_h^T W0: 10 m eps cond(A_t) (cond 2..16 here: <= 3.6e-13; measured
    # 9e-16). An orthogonal projector is idempotent with trace h up to m eps.
    a_t = np.linalg.eigh(c)[1][:, ::-1][:, :3].T @ w0
    np.testing.assert_allclose(p, graph_projector(c, w0, t), rtol=0, atol=10 * M * EPS * np.linalg.cond(a_t))
    np.testing.assert_allclose(p @ p, p, rtol=0, atol=10 * M * EPS)
    assert abs(np.trace(p) - 3) < 10 * M * EPS


@pytest.mark.parametrize("t", [10.0, 300.0, 600.0])
def test_small_principal_sines_keep_relative_accuracy(problem, t):
    """Sines down to ~1e-208 (t = 600): beyond t ~ 708 / (2 (lambda_1 - lambda_m)) ~ 104 a single graded QR would
    underflow to 0; the staged one keeps relative accuracy (until the SVD of such entries underflows, ~1e-290)."""
    c, _, rng = problem
    w0 = orth(rng, c.shape[0], 3)
    ref = np.linalg.svd(graph_basis(c, w0, t)[1][3:], compute_uv=False)
    got = np.asarray(G.principal_sines(c, w0, t))
    assert ref[0] > 1e-300
    # Relative accuracy of tiny singular values: both sides work on the graded graph coordinates, whose rows and
    # columns scale by exp(2 t lambda). A backward-stable SVD guarantees only eps s_1 absolutely; graded matrices
    # like these usually keep relative accuracy ~m eps cond(A_t) (measured <= 6e-12 with four OpenBLAS kernels and
    # jax 0.10 / 0.12), but not always: on a fresh clone of 2026-12-05 the reference SVD returned 0 for a sine of
    # 4.2e-199 (t = 300) that the staged computation kept. So: 1e-10 relative for the largest sine, 1e-8 for the
    # others wherever the reference resolves them in the guaranteed sense (above 10 m eps s_1 would be absolute;
    # in practice a nonzero reference value), and where the reference underflowed to 0 only that ours lies below
    # the reference's guaranteed resolution.
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-10)
    resolved = ref > 0
    np.testing.assert_allclose(got[resolved], ref[resolved], rtol=1e-8, atol=1e-300)
    assert np.all((got[~resolved] >= 0) & (got[~resolved] <= 10 * M * EPS * ref[0])), (got, ref)


def test_limit_top_eigenspace_and_loss(problem):
    c, u, rng = problem
    h = 3
    w0 = orth(rng, c.shape[0], h)
    p = np.asarray(G.projector(c, w0, 200.0))
    # Converged (e^{-2 t (lambda_3 - lambda_4)} = e^{-160}); eigenvectors carry eps ||C|| / gap (gap 0.4) each:
    # ~m eps ||C|| / 0.4 = 1.3e-14 (measured 4e-16); 10x that. Traces add m eps ||C||.
    eig_bound = 10 * M * EPS * NORM_C / (LAMS[h - 1] - LAMS[h])
    np.testing.assert_allclose(p, u[:, :h] @ u[:, :h].T, rtol=0, atol=eig_bound)
    np.testing.assert_allclose(np.asarray(G.top_eigenspace(c, h)) @ np.asarray(G.top_eigenspace(c, h)).T, p,
                               rtol=0, atol=eig_bound)
    assert abs(-np.trace(c @ p) - float(G.limit_loss(c, h))) < M * NORM_C * eig_bound
    assert abs(float(G.limit_loss(c, h)) + LAMS[:h].sum()) < M * NORM_C * eig_bound


def test_measure_zero_start_does_not_reach_top_eigenspace():
    """Checklist 5: W0 orthogonal to u_1 (W0^T U_h singular) never reaches U_h; a small tilt does.

    The case is unstable: any ~1e-16 round-off component along u_1 grows like e^{2 (lambda_1 - lambda_2) t}. So C
    is diagonal (u_1^T W0 exactly 0 in floating point too) and t = 40 keeps that growth (e^{32} x 1e-17) small.
    """
    rng = np.random.default_rng(5)
    c = np.diag(LAMS)
    w0 = np.zeros((10, 2))
    w0[1:] = orth(rng, 9, 2)  # inside span(e_2..e_m)
    assert np.max(G.principal_sines(c, w0, 40.0)) > 0.999
    # -> u_2, u_3, not yet fully: the rest decays like e^{-2t (lambda_3 - lambda_4)} = e^{-32} = 1.3e-14 times the
    # initial graph coordinates (~1e3 here): measured 1.2e-11, deterministic (C diagonal, no round-off growth).
    np.testing.assert_allclose(G.projector(c, w0, 40.0), np.diag([0, 1, 1] + [0] * 7), rtol=0, atol=1e-8)
    tilted = np.linalg.qr(w0 + 1e-3 * np.eye(10, 2)[:, :1])[0]
    # Sines decay like e^{-2t (lambda_2 - lambda_3)} = e^{-24} = 3.8e-11 times tan(theta_0): measured 4.8e-14.
    assert np.max(G.principal_sines(c, tilted, 40.0)) < 1e-10


def test_principal_sines_rate_and_reference(problem):
    c, u, rng = problem
    h = 3
    w0 = orth(rng, c.shape[0], h)
    # W0's alignment with U_h: the sines' conditioning at t = 0 (the draw depends on which tests of this module ran
    # first on the worker, so the bound must hold for any W0)
    align = np.linalg.svd(u[:, :h].T @ w0, compute_uv=False)[-1]
    # Reference: scipy's subspace angles between the projector's range and U_h.
    for t in (0.0, 1.0, 4.0):
        ref = np.sin(scipy.linalg.subspace_angles(scipy.linalg.orth(np.asarray(G.projector(c, w0, t))), u[:, :h]))
        # Sines from two routes, each absolutely accurate to ~m eps ||C|| / gap, times the conditioning of the
        # basis e^{2tC} W0 they start from: its columns' scales spread by e^{2t (lambda_1 - lambda_h)}, its
        # alignment with U_h is sigma_min(U_h^T W0). Over 300 random W0 the error stays <= 0.15 of this bound; the
        # bound without the conditioning factor failed by up to 1.2e4x (it held for some draws only).
        cond = np.exp(2 * t * (LAMS[0] - LAMS[h - 1])) / align
        np.testing.assert_allclose(np.asarray(G.principal_sines(c, w0, t)), ref, rtol=0,
                                   atol=10 * M * EPS * NORM_C / (LAMS[h - 1] - LAMS[h]) * cond)
    ts = np.linspace(20.0, 40.0, 11)
    s1 = np.array([float(G.principal_sines(c, w0, t)[0]) for t in ts])
    rate = float(G.principal_angle_rate(c, h))
    assert rate == pytest.approx(2 * (LAMS[h - 1] - LAMS[h]))
    assert abs(-fit_slope(ts, s1) / rate - 1) < 1e-3
    assert float(G.principal_angle_rate(c, c.shape[0])) == np.inf


# ----------------------------------------------------------------------------------------------------------------
# Naive flow and collapse.


def test_naive_flow_and_ratios_match_expm(problem):
    c, _, rng = problem
    w0 = rng.normal(size=(c.shape[0], 3))  # the naive flow needs no orthonormal start
    for t in (0.0, 0.7, 3.0):
        w = scipy.linalg.expm(2 * t * c) @ w0
        # expm by scaling and squaring vs the eigen-form: relative error ~ eps ||2tC|| per entry times a modest
        # constant (the squarings); 1000 eps max(1, ||2tC||) = 3e-12 at t = 3 (measured 3.8e-14). The SVD adds
        # m eps s_1 absolutely to the ratios.
        rel = 1000 * EPS * max(1.0, 2 * t * NORM_C)
        np.testing.assert_allclose(G.naive_flow(c, w0, t), w, rtol=rel, atol=rel * np.abs(w0).max())
        s = np.linalg.svd(w, compute_uv=False)
        np.testing.assert_allclose(G.naive_singular_ratios(c, w0, t), s / s[0], rtol=rel, atol=10 * M * EPS)


def test_naive_collapse_rate(problem):
    """sigma_2/sigma_1 ~ exp(-2 (lambda_1 - lambda_2) t): rank-one collapse; top singular vector -> u_1."""
    c, u, rng = problem
    w0 = orth(rng, c.shape[0], 4)
    rate = float(G.collapse_rate(c))
    assert rate == pytest.approx(2 * (LAMS[0] - LAMS[1]))
    ts = np.linspace(10.0, 30.0, 11)
    r2 = np.array([float(G.naive_singular_ratios(c, w0, t)[1]) for t in ts])
    assert np.all(np.diff(r2) < 0)
    assert abs(-fit_slope(ts, r2) / rate - 1) < 1e-3  # the bound is 5%; asymptotically exact
    w = np.asarray(G.naive_flow(c, w0, 30.0))
    top = np.linalg.svd(w)[0][:, 0]
    assert abs(top @ u[:, 0]) > 1 - 1e-12  # 1 - cos = sin^2 / 2 with sin ~ e^{-24} + m eps ||C|| / gap ~ 1e-14
    # norm growth exp(2 lambda_1 t)
    n1, n2 = (np.linalg.norm(np.asarray(G.naive_flow(c, w0, t)), 2) for t in (20.0, 25.0))
    assert np.log(n2 / n1) / 5.0 == pytest.approx(2 * LAMS[0], rel=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# The loss, the fields.


@pytest.mark.parametrize("contrastive", [False, True])
def test_quadratic_form_autodiff(contrastive):
    """Checklist 1: autodiff of the loss on representations equals -2 C W, for L_NC and L_C (relative 1e-10)."""
    rng = np.random.default_rng(1)
    n, m, h = 200, 20, 4
    x = rng.normal(size=(n, m))
    xp = 0.3 * x + rng.normal(size=(n, m))  # weakly aligned positives: C_NC ~ 0.3 I
    xn = x[rng.permutation(n)] if contrastive else None  # random negatives: +-2 sqrt(m/n) ~ +-0.6 on top
    c = np.asarray(G.ssl_matrix(x, xp, xn))
    np.testing.assert_allclose(c, c.T, atol=0)  # symmetrised by construction: exact
    w = rng.normal(size=(m, h))
    g = jax.grad(G.ssl_loss)(jnp.asarray(w), x, xp, xn)
    # Two orders of sums over n = 200 samples: each entry within ~2 n eps of the sum of absolute terms
    # (|X|^T (|X| + |X'| + |X_n|) / n) |W| (measured 2.4e-15 against a bound ~1e-12).
    absx = np.abs(x).T @ (np.abs(x) + np.abs(xp) + (np.abs(xn) if contrastive else 0.0)) / n
    scale = absx @ np.abs(w)
    np.testing.assert_allclose(g, -2 * c @ w, rtol=0, atol=4 * n * EPS * scale.max())
    assert float(G.ssl_loss(w, x, xp, xn)) == pytest.approx(float(G.loss(w, c)),
                                                             abs=4 * n * EPS * float(np.sum(np.abs(w) * scale)))
    if contrastive:  # indefinite, as the note warns
        lam = np.linalg.eigvalsh(c)
        assert lam[0] < 0 < lam[-1]


def test_constrained_field_is_horizontal_and_matches_riccati(problem):
    c, _, rng = problem
    w = orth(rng, c.shape[0], 3)
    f = np.asarray(G.constrained_field(w, c))
    # W^T F = 2 (I - W^T W) W^T C W + round-off: both ~m eps ||C|| (W^T W = I to m eps): 8 m eps ||C|| = 4e-14
    # (measured 9e-16; the old 1e-14 was within 2x of the first-order bound).
    field_bound = 8 * M * EPS * NORM_C
    assert np.max(np.abs(w.T @ f)) < field_bound
    np.testing.assert_allclose(w @ f.T + f @ w.T, G.riccati_field(w @ w.T, c), rtol=0, atol=field_bound)
    # it is the tangent projection of -grad L (Grassmann) and equals the Stiefel gradient here
    egrad = np.asarray(jax.grad(G.loss)(jnp.asarray(w), c))
    np.testing.assert_allclose(f, -np.asarray(R.horizontal_gradient(w, egrad)), rtol=0, atol=field_bound)
    stiefel = egrad - w @ (0.5 * (w.T @ egrad + egrad.T @ w))
    np.testing.assert_allclose(f, -stiefel, rtol=0, atol=field_bound)


# ----------------------------------------------------------------------------------------------------------------
# Retractions and Riemannian gradient descent.


@pytest.mark.parametrize("retraction", ["qr", "polar"])
def test_retraction_properties(retraction):
    rng = np.random.default_rng(2)
    w = orth(rng, 9, 4)
    r = R.RETRACTIONS[retraction]
    # QR / SVD of 9 x 4 matrices: backward stable, orthonormality and reproduction to ~m h eps (= 8e-15); 10x.
    qr_bound = 10 * 9 * 4 * EPS
    np.testing.assert_allclose(r(w), w, rtol=0, atol=qr_bound)  # R_W(0) = W
    y = rng.normal(size=(9, 4))
    q = np.asarray(r(y))
    np.testing.assert_allclose(q.T @ q, np.eye(4), rtol=0, atol=qr_bound)
    # same span as y: two orthonormalisations of y differ by ~m eps cond(y) in the projector
    np.testing.assert_allclose(proj(q), proj(np.linalg.qr(y)[0]), rtol=0, atol=10 * 9 * EPS * np.linalg.cond(y))
    xi = np.asarray(R.horizontal_gradient(w, rng.normal(size=(9, 4))))  # a tangent vector
    eps = 1e-6
    deriv = (np.asarray(r(w + eps * xi)) - np.asarray(r(w - eps * xi))) / (2 * eps)
    # dR_W(0) = identity. Central differences: each retraction is backward stable to ~m eps, so round-off
    # 2 m eps / h = 4e-9 (measured 4e-10), truncation h^2 |xi|^3 ~ 1e-11.
    np.testing.assert_allclose(deriv, xi, rtol=0, atol=2 * 9 * EPS / eps + eps**2 * np.abs(xi).max() ** 3)
    if retraction == "polar":  # the closest orthonormal matrix in Frobenius norm
        for _ in range(5):
            other = np.asarray(R.qr_retraction(y + 0.3 * rng.normal(size=y.shape)))
            assert np.linalg.norm(q - y) <= np.linalg.norm(other - y) + 1e-12  # norms ~3: m eps round-off


@pytest.fixture(scope="module")
def rgd_runs(problem):
    c, _, rng = problem
    w0 = jnp.asarray(orth(rng, c.shape[0], 3))
    runs = {r: np.asarray(R.riemannian_gd(G.loss, w0, 0.01, 1000, args=(jnp.asarray(c),), retraction=r,
                                          record_every=10)) for r in ("qr", "polar")}
    return c, np.asarray(w0), runs


def test_rgd_stays_orthonormal_and_qr_equals_polar_on_the_grassmannian(rgd_runs):
    c, w0, runs = rgd_runs
    for ws in runs.values():
        # every step re-orthonormalises, so nothing accumulates: ~m h eps = 7e-15 (measured 1.6e-15)
        assert np.max(np.abs(np.einsum("tmh,tmk->thk", ws, ws) - np.eye(3))) < 10 * M * 3 * EPS
    # Both retractions return a basis of span(W - lr xi) and xi is rotation-equivariant: identical subspaces. Their
    # per-step round-off (~m eps) is damped by the flow's contraction 1 - 2 lr (lambda_3 - lambda_4) per step, so
    # the difference stays below m eps / (2 lr gap) = 2.8e-13 (measured 2.6e-15); 10x.
    assert np.max(np.abs(proj(runs["qr"]) - proj(runs["polar"]))) < 10 * M * EPS / (2 * 0.01 * (LAMS[2] - LAMS[3]))
    assert np.max(np.abs(runs["qr"][-1] - runs["polar"][-1])) > 1e-4  # ... while the raw W differ (gauge)
    # loss decreases monotonically towards -sum top-3, up to the round-off of each value (~m eps |loss|; the old
    # 1e-15 was below that for |loss| ~ 2)
    losses = np.array([-np.trace(w.T @ c @ w) for w in runs["qr"]])
    assert np.all(np.diff(losses) < 4 * M * EPS * np.abs(losses[1:]))


def test_rgd_converges_to_flow_at_first_order(problem):
    """Discrete GD approximates the flow at t = lr x steps with an O(lr) projector error: fitted order ~ 1."""
    c, _, rng = problem
    w0 = jnp.asarray(orth(rng, c.shape[0], 3))
    t_end = 2.0
    errs = []
    lrs = np.array([0.02, 0.01, 0.005])
    for lr in lrs:
        steps = int(round(t_end / lr))
        ws = np.asarray(R.riemannian_gd(G.loss, w0, float(lr), steps, args=(jnp.asarray(c),), record_every=steps))
        errs.append(np.linalg.norm(proj(ws[-1]) - np.asarray(G.projector(c, w0, t_end))))
    order = np.polyfit(np.log(lrs), np.log(errs), 1)[0]
    assert abs(order - 1) < 0.1, (order, errs)


def test_riemannian_gd_compiles_once_per_record_count(problem):
    """Runs that differ in lr and record_every (same number of records) reuse one compilation."""
    c, _, rng = problem
    w0 = jnp.asarray(orth(rng, c.shape[0], 2))
    R.riemannian_gd(G.loss, w0, 0.01, 40, args=(jnp.asarray(c),), record_every=4)
    size = R._gd._cache_size()
    ws = R.riemannian_gd(G.loss, w0, 0.02, 20, args=(jnp.asarray(c),), record_every=2)
    assert R._gd._cache_size() == size
    assert ws.shape == (11, c.shape[0], 2)


def test_projected_gd_without_retraction_drifts(problem):
    """Checklist 3: the same step without the retraction leaves W^T W = I (so the retraction is what holds it)."""
    c, _, rng = problem
    w = orth(rng, c.shape[0], 3)
    for _ in range(200):
        w = w + 0.01 * np.asarray(G.constrained_field(w, c))
    assert np.max(np.abs(w.T @ w - np.eye(3))) > 1e-4


def test_optax_transformation_matches_step_and_masks(problem):
    c, _, rng = problem
    w = jnp.asarray(orth(rng, c.shape[0], 3))
    g = jax.grad(G.loss)(w, c)
    tx = R.riemannian_sgd(optax.constant_schedule(0.05), retraction="polar")
    state = tx.init(w)
    u, state = tx.update(g, state, w)
    # w + (step - w) vs step: two roundings of entries <= 1, i.e. <= 3 eps (measured 3e-18)
    np.testing.assert_allclose(optax.apply_updates(w, u), R.riemannian_step(w, g, 0.05, retraction="polar"),
                               rtol=0, atol=4 * EPS)
    assert int(state.count) == 1
    # constrain one leaf, plain SGD on the other
    params = {"w": w, "b": jnp.ones(3)}
    multi = optax.multi_transform({"stiefel": R.riemannian_sgd(0.05), "euclid": optax.sgd(0.05)},
                                  {"w": "stiefel", "b": "euclid"})
    grads = {"w": g, "b": jnp.ones(3)}
    new = optax.apply_updates(params, multi.update(grads, multi.init(params), params)[0])
    np.testing.assert_allclose(new["w"].T @ new["w"], np.eye(3), rtol=0, atol=10 * M * 3 * EPS)  # m h eps, 10x
    np.testing.assert_allclose(new["b"], 0.95 * np.ones(3))  # 1 - 0.05: 1 ulp
    with pytest.raises(ValueError, match="needs params"):
        tx.update(g, tx.init(w))
    with pytest.raises(ValueError, match="every parameter leaf"):
        R.riemannian_sgd(0.1).init({"b": jnp.ones(3)})


# ----------------------------------------------------------------------------------------------------------------
# eager == jit == vmap.


def _cases(problem):
    c, _, rng = problem
    w0s = np.stack([orth(rng, c.shape[0], 3) for _ in range(3)])
    ts = np.array([0.0, 1.5, 40.0])
    return c, w0s, ts


@pytest.mark.parametrize("fn", [G.projector, G.principal_sines, G.naive_singular_ratios, G.naive_flow])
def test_eager_jit_vmap(problem, fn):
    c, w0s, ts = _cases(problem)
    eager = np.stack([np.asarray(fn(c, w, t)) for w, t in zip(w0s, ts)])
    jitted = np.stack([np.asarray(jax.jit(fn)(c, w, t)) for w, t in zip(w0s, ts)])
    vmapped = np.asarray(jax.vmap(fn, in_axes=(None, 0, 0))(c, w0s, ts))
    # XLA may fuse and reorder under jit / vmap; exponents 2 t lambda amplify relative round-off by up to
    # 2 t_max ||C|| (t_max = 40): m eps x 2 x 40 x 2.4 = 4e-13 relative (measured 7e-4 of the old 1e-12 rtol),
    # 10x that; an absolute m eps floor for entries that vanish.
    rel = 10 * M * EPS * 2 * ts.max() * NORM_C
    np.testing.assert_allclose(jitted, eager, rtol=rel, atol=M * EPS)
    np.testing.assert_allclose(vmapped, eager, rtol=rel, atol=M * EPS)


@pytest.mark.parametrize("fn", [G.constrained_field, G.naive_field, R.qr_retraction, R.polar_retraction])
def test_eager_jit_vmap_fields_and_retractions(problem, fn):
    c, w0s, _ = _cases(problem)
    ys = w0s + 0.1 * np.random.default_rng(3).normal(size=w0s.shape)
    call = (lambda y: fn(y, c)) if fn in (G.constrained_field, G.naive_field) else fn
    eager = np.stack([np.asarray(call(y)) for y in ys])
    # Fields and retractions are a few products / one QR or SVD of 10 x 3 matrices with entries up to ~3: jit and
    # vmap may reorder them, ~m eps x 3 = 7e-15 (measured 4.4e-16); 10x, absolute.
    bound = 10 * M * EPS * max(1.0, np.abs(eager).max())
    np.testing.assert_allclose(np.stack([np.asarray(jax.jit(call)(y)) for y in ys]), eager, rtol=0, atol=bound)
    np.testing.assert_allclose(np.asarray(jax.vmap(call)(ys)), eager, rtol=0, atol=bound)


def test_float32_follows_input_dtype(problem):
    c, w0s, _ = _cases(problem)
    with enable_x64(False):
        p = G.projector(np.float32(c), np.float32(w0s[0]), np.float32(1.0))
        assert p.dtype == jnp.float32
    # float32 round-off: ~m eps_32 ||C|| / gap = 10 x 1.2e-7 x 2.4 / 0.4 = 7e-6 (measured 1.2e-7)
    np.testing.assert_allclose(p, G.projector(c, w0s[0], 1.0), atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Bad input.


def test_bad_input_raises_clear_value_errors(problem):
    c, u, rng = problem
    w0 = orth(rng, c.shape[0], 3)
    bad = c.copy()
    bad[0, 1] += 1e-3
    with pytest.raises(ValueError, match="C must be symmetric"):
        G.projector(bad, w0, 1.0)
    with pytest.raises(ValueError, match="orthonormal columns"):
        G.projector(c, 2 * w0, 1.0)
    with pytest.raises(ValueError, match=r"shape \(m, h\) = \(10, h\)"):
        G.projector(c, w0[:5], 1.0)
    with pytest.raises(ValueError, match="square"):
        G.projector(c[:, :5], w0, 1.0)
    with pytest.raises(ValueError, match="1 <= h <= m"):
        G.projector(c[:2, :2], np.eye(2, 3), 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        G.projector(c, w0, -0.5)
    with pytest.raises(ValueError, match=">= 0"):
        G.projector(c, w0, np.nan)
    with pytest.raises(ValueError, match="scalar"):
        G.projector(c, w0, np.array([1.0, 2.0]))
    nan_c = c.copy()
    nan_c[2, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        G.projector(nan_c, w0, 1.0)
    with pytest.raises(ValueError, match="h must be an integer"):
        G.principal_angle_rate(c, 0)
    with pytest.raises(ValueError, match="strictly increasing"):
        G.integrate(c, w0, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="same shape"):
        G.ssl_matrix(np.ones((4, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="orthonormal columns"):
        R.riemannian_gd(G.loss, 2 * w0, 0.1, 10, args=(c,))
    with pytest.raises(ValueError, match="multiple of record_every"):
        R.riemannian_gd(G.loss, w0, 0.1, 10, args=(c,), record_every=3)
    with pytest.raises(ValueError, match="lr must be"):
        R.riemannian_gd(G.loss, w0, -0.1, 10, args=(c,))
    with pytest.raises(ValueError, match="unknown retraction"):
        R.retract(w0, "cayley")
    with pytest.raises(ValueError, match="shape of w"):
        R.riemannian_step(w0, w0[:, :2], 0.1)
    with pytest.raises(ValueError, match="1 <= h <= m"):
        R.qr_retraction(np.ones((2, 3)))


def test_docstring_examples():
    for module in (G, R):
        with enable_x64(False):
            result = doctest.testmod(module, extraglobs={"jnp": jnp, "optax": optax}, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0
