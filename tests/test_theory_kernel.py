"""Kernel theory (stepwise.theory.kernel) and the kernel GD loop (stepwise.training.train_kernel_bt).

References: the linear theory (the linear kernel K = X X^T must give back every linear prediction), the symmetric
form of the eigenproblem with K^(1/2) (theory note 3, form 1), naive loops, and GD on explicit features.
"""

import math

import numpy as np
import pytest
import scipy.linalg

from stepwise.compare import gram_relative_error
from stepwise.theory import kernel as kt
from stepwise.theory import linear
from stepwise.training import train_kernel_bt, train_linear_bt

# Tolerances are round-off bounds computed from the data of each test (eps x condition x size), not measured values.
EPS = np.finfo(np.float64).eps


def gram_error(f, f_ref):
    """||F F^T - G G^T||_F / ||G G^T||_F formed explicitly (n_test x n_test): no cancellation floor.

    stepwise.compare.gram_relative_error goes through d x d products, whose cancellation limits it to about
    sqrt(eps (n + d^2)) ~ 1e-8..1e-7 relative (2.7e-8 with one BLAS, 0.0 with another on the same data): below that
    it cannot tell a correct result from a wrong one, so the sharp checks here use this direct form.
    """
    gram, ref = f @ f.T, f_ref @ f_ref.T
    return float(np.linalg.norm(gram - ref) / np.linalg.norm(ref))


def _pairs(rng, n=12, m=5, noise=0.3):
    x1 = rng.normal(size=(n, m)) * np.linspace(2.0, 0.5, m)  # distinct scales -> distinct eigenvalues
    x2 = x1 + noise * rng.normal(size=(n, m))
    return x1, x2


def _rbf_setup(rng, n=10, m=3):
    x1, x2 = _pairs(rng, n, m)
    x = np.concatenate([x1, x2])
    xt = rng.normal(size=(7, m))
    return kt.rbf_kernel(x, bandwidth=2.0), kt.rbf_kernel(xt, x, bandwidth=2.0)


def test_swap_matrix():
    z = kt.swap_matrix(3)
    assert z.shape == (6, 6)
    np.testing.assert_array_equal(z @ np.arange(6), [3, 4, 5, 0, 1, 2])
    np.testing.assert_array_equal(z, z.T)
    with pytest.raises(ValueError, match="at least one pair"):
        kt.swap_matrix(0)


def test_kernels_match_loops(rng):
    a, b = rng.normal(size=(4, 2, 3)), rng.normal(size=(5, 2, 3))
    want_rbf = np.array([[math.exp(-np.sum((u - v) ** 2) / (2 * 1.5**2)) for v in b] for u in a])
    # exp(-r^2 / 2s^2) with r^2 from |u|^2 + |v|^2 - 2 u.v (or the difference): an absolute error of
    # (m + 2) eps (|u|^2 + |v|^2) in r^2 is a relative one of that / 2s^2 in the kernel (m = 6 features).
    sq = np.sum(a.reshape(4, -1) ** 2, 1)[:, None] + np.sum(b.reshape(5, -1) ** 2, 1)[None]
    np.testing.assert_allclose(kt.rbf_kernel(a, b, bandwidth=1.5), want_rbf,
                               rtol=2 * 8 * EPS * sq.max() / (2 * 1.5**2) + 4 * EPS)  # 2x, + exp's own ulps
    want_lin = np.array([[float(np.sum(u * v)) for v in b] for u in a])
    # A dot product of m = 6 terms: |error| <= m eps sum_i |u_i v_i| (relative only when there is no cancellation).
    dots = np.abs(a.reshape(4, -1)) @ np.abs(b.reshape(5, -1)).T
    np.testing.assert_allclose(kt.linear_kernel(a, b), want_lin, rtol=0, atol=6 * EPS * dots.max())
    np.testing.assert_allclose(np.diag(kt.rbf_kernel(a, bandwidth=0.3)), 1.0)
    with pytest.raises(ValueError, match="bandwidth"):
        kt.rbf_kernel(a, bandwidth=0.0)


def test_linear_kernel_gives_the_linear_theory_eigenvalues(rng):
    x1, x2 = _pairs(rng)
    k = kt.linear_kernel(np.concatenate([x1, x2]))  # (24, 24) of rank 5: singular, needs the ridge
    g_lin, _ = linear.eigh_desc(linear.cross_correlation(x1, x2))
    g_ker = kt.contrastive_eigenvalues(k)
    # The ridge r = ridge * tr(K) / 2n on the right-hand K lowers each gamma_j by r a_j^T a_j <= r / s_5 relative
    # to first order (a_j^T K a_j = 1, s_5 the smallest non-zero eigenvalue of K): 1.65e-9 here, and mode 5 lies
    # almost along K's smallest eigenvector, so it is attained (measured 0.997 r / s_5, the same on every BLAS);
    # 2x for the higher orders. Round-off adds ~eps s_1 / s_5 ~ 5e-15. A float32 path would be off by ~1e-6.
    s = np.linalg.eigvalsh(k)[::-1]
    r = kt.DEFAULT_RIDGE * np.trace(k) / k.shape[0]
    np.testing.assert_allclose(g_ker[:5], g_lin, rtol=2 * r / s[4] + 100 * EPS * s[0] / s[4])
    # The null space of K is solved apart (kt._range_space_eigh): its gammas are exactly 0 on every BLAS, so the
    # count of positive modes is the rank's (as one pencil, round-off over the ridge gave up to 1.06e-6 gamma_1 on
    # OpenBLAS Sandybridge/Prescott, above POSITIVE_TOL, and counted 6 modes).
    np.testing.assert_array_equal(g_ker[5:], 0.0)
    assert kt.positive_modes(g_ker) == 5


def test_positive_modes_of_a_singular_kernel_is_its_rank(rng):
    # The linear kernel of 2n = 400 points in 36 dimensions (the setting that set DEFAULT_RIDGE): 36 positive
    # gammas (the linear theory's Gamma is positive definite here: the views are close). Solved as one pencil the
    # 364 null-space gammas were round-off over the ridge, and 65 of them exceeded POSITIVE_TOL * gamma_1
    # (positive_modes said 101).
    x1 = rng.normal(size=(200, 36))
    x2 = x1 + 0.3 * rng.normal(size=(200, 36))
    g_lin, _ = linear.eigh_desc(linear.cross_correlation(x1, x2))
    assert np.all(g_lin > 0)
    k = kt.linear_kernel(np.concatenate([x1, x2]))
    g, a = kt.contrastive_eigh(k)
    assert kt.positive_modes(g) == 36
    np.testing.assert_array_equal(g[36:], 0.0)
    # Range modes: the ridge bias r / s_36 of the test above plus eps cond round-off; null modes stay K + rI
    # orthonormal to the round-off of forming u^T K u over r (eps ||K|| / r, times 2n for the sums).
    s = np.linalg.eigvalsh(k)[::-1]
    r = kt.DEFAULT_RIDGE * np.trace(k) / k.shape[0]
    np.testing.assert_allclose(g[:36], g_lin, rtol=2 * r / s[35] + 100 * EPS * s[0] / s[35])
    gram = a.T @ (k + r * np.eye(k.shape[0])) @ a
    np.testing.assert_allclose(gram[:36, :36], np.eye(36), rtol=0, atol=2 * k.shape[0] * EPS * s[0] / s[35])
    np.testing.assert_allclose(gram, np.eye(k.shape[0]), rtol=0, atol=k.shape[0] * EPS * s[0] / r)


def test_generalised_form_matches_symmetric_square_root_form(rng):
    k, kt_rows = _rbf_setup(rng)
    two_n = k.shape[0]
    s, u = np.linalg.eigh(k)
    root = (u * np.sqrt(s)) @ u.T
    sym = root @ kt.swap_matrix(two_n // 2) @ root / two_n
    g_ref, q = np.linalg.eigh(sym)
    g_ref, q = g_ref[::-1], q[:, ::-1]
    g, a = kt.contrastive_eigh(k, ridge=0.0)
    # Both forms solve against K (cond(K) = 1.6e5 for this RBF kernel, computed here so the bound follows the
    # data). scipy's eigh(A, B) works with L^-1 A L^-T, B = L L^T: first-order eigenvalue error
    # eps ||A|| ||B^-1|| <= eps cond(K) ||K|| (||A|| = ||K Z K|| / 2n <= ||K||^2) = 3.4e-10; measured 6e-13.
    cond = s[-1] / s[0]
    np.testing.assert_allclose(g, g_ref, rtol=0, atol=EPS * cond * s[-1])
    # a_j^T K a_j = 1, orthogonal in K: a = L^-T q loses eps cond(K) per entry, summed over 2n: 6.9e-10 (measured
    # 2e-12; float32 would give ~1e-2).
    np.testing.assert_allclose(a.T @ k @ a, np.eye(two_n), rtol=0, atol=two_n * EPS * cond)
    d = 3
    f_ref = kt_rows @ np.linalg.solve(root, q[:, :d]) / np.sqrt(g_ref[:d])  # U Lambda^-1/2 Q^T K^-1/2 k(x)
    f = kt.predict_embeddings(k, kt_rows, d, ridge=0.0)
    # Eigenvectors move by eps cond(K) gamma_1 / gap, gap = min_{j <= d} (gamma_j - gamma_{j+1}) (the whitening
    # separates each of the top d): 5.8e-10 here; measured 1.5e-14 on every OpenBLAS kernel. (The d x d form of
    # gram_relative_error reads 2.7e-8 or 0.0 on the same data depending on the BLAS: its cancellation floor.)
    gap = np.min(g_ref[:d] - g_ref[1 : d + 1])
    assert gram_error(f, f_ref) < EPS * cond * g_ref[0] / gap


def test_predicted_training_embeddings_are_whitened(rng):
    k, _ = _rbf_setup(rng)
    n = k.shape[0] // 2
    f = kt.predict_embeddings(k, k, 4)
    c = (f[:n].T @ f[n:] + f[n:].T @ f[:n]) / (2 * n)
    # C = G^-1/2 A^T (K Z K / 2n) A G^-1/2 = I exactly (the ridge cancels), so only round-off: the eigenvectors
    # carry eps cond(K) relative error, amplified by ||K|| / gamma_4 in A^T (K Z K) A: 2.5e-9 bound here,
    # measured 4e-15 (float32 would give ~1e-2).
    s = np.linalg.eigvalsh(k)
    gammas = kt.contrastive_eigenvalues(k)
    np.testing.assert_allclose(c, np.eye(4), rtol=0, atol=EPS * (s[-1] / s[0]) * s[-1] / gammas[3])


def test_linear_kernel_predicts_the_linear_final_embedding(rng):
    x1, x2 = _pairs(rng)
    xt = rng.normal(size=(9, 5))
    x = np.concatenate([x1, x2])
    f_kernel = kt.predict_embeddings(kt.linear_kernel(x), kt.linear_kernel(xt, x), 3)
    f_linear = linear.final_embedding(linear.cross_correlation(x1, x2), 3, xt)
    # K = X X^T has rank 5: the default ridge r biases a_j by at most r / s_5 relative (s_5 the smallest non-zero
    # eigenvalue of K), twice that in a Gram matrix: 3.3e-9 here; measured 6.5e-11 (proportional to the ridge).
    s = np.linalg.eigvalsh(kt.linear_kernel(x))[::-1]
    r = kt.DEFAULT_RIDGE * np.trace(kt.linear_kernel(x)) / x.shape[0]
    assert gram_error(f_kernel, f_linear) < 2 * r / s[4] + 100 * EPS * s[0] / s[4]


def test_contrastive_kernel_is_phi_gamma_phi(rng):
    x1, x2 = _pairs(rng)
    x = np.concatenate([x1, x2])
    a, b = rng.normal(size=(3, 5)), rng.normal(size=(4, 5))
    got = kt.contrastive_kernel(kt.linear_kernel(a, x), kt.linear_kernel(b, x))
    # Two orders of the same triple product a X^T Z X b^T / 2n: each entry within (2n + 2m) eps of
    # |a| |X|^T |X| |b|^T / 2n (no cancellation assumed, so an absolute bound).
    scale = np.abs(a) @ np.abs(x).T @ np.abs(x) @ np.abs(b).T / x.shape[0]
    np.testing.assert_allclose(got, a @ linear.cross_correlation(x1, x2) @ b.T, rtol=0,
                               atol=2 * (x.shape[0] + 2 * x.shape[1]) * EPS * scale.max())


def test_step_times_and_amplitudes_match_the_linear_theory(rng):
    x1, x2 = _pairs(rng)
    x = np.concatenate([x1, x2])
    gamma = linear.cross_correlation(x1, x2)
    w0 = 1e-6 * rng.normal(size=(3, 5))
    lr = 0.3 * linear.stability_limit(linear.eigh_desc(gamma)[0][0])
    f0 = x @ w0.T  # the initial embeddings of the training views
    k = kt.linear_kernel(x)
    np.testing.assert_allclose(kt.initial_amplitudes(k, f0), linear.initial_amplitudes(gamma, w0), rtol=1e-6)
    np.testing.assert_allclose(kt.step_times(k, f0, lr), linear.step_times(gamma, w0, lr), rtol=1e-6)
    pred = kt.predict(k, f0, lr)
    assert pred.d == 3 and np.all(np.diff(pred.step_times) >= 0) and np.all(pred.widths > 0)
    assert pred.eigenvalue_curves(10).shape == (11, 3) and pred.separation().shape == (2,)


def test_kernel_gd_equals_gd_on_explicit_features(rng):
    # f(x) = B k(x) with the linear kernel is f(x) = W x with W = B X: the two loops must agree step by step.
    x1, x2 = _pairs(rng)
    x = np.concatenate([x1, x2])
    b0 = 1e-3 * rng.normal(size=(3, x.shape[0]))
    gamma = linear.cross_correlation(x1, x2)
    lr = 0.3 * linear.stability_limit(linear.eigh_desc(gamma)[0][0])
    ker = train_kernel_bt(kt.linear_kernel(x), b0, lr, 300, chunk=128)
    lin = train_linear_bt(gamma, b0 @ x, lr, 300, basis="pixel")
    # The same GD in two parametrisations: each step adds O(2n eps) relative round-off, and relative errors are
    # not amplified (near the origin the map is linear, so a perturbation grows with the state; near the learned
    # fixed point it contracts): 300 steps stay within ~300 x 2n x eps = 1.6e-12 (measured 1.3e-15). The loss, a
    # sum of (1 - lambda)^2 terms, is compared relatively with the same allowance.
    bound = 300 * x.shape[0] * EPS
    np.testing.assert_allclose(ker.eigenvalues, lin.eigenvalues, rtol=0, atol=bound)
    np.testing.assert_allclose(ker.loss, lin.loss, rtol=bound, atol=1e-14)
    np.testing.assert_allclose(ker.b_final @ x, lin.w_final, rtol=0, atol=bound)
    assert ker.step.shape == (301,) and ker.lr == lr


def test_kernel_gd_reaches_the_predicted_embedding(rng):
    k, kt_rows = _rbf_setup(rng, n=15)
    g, _ = kt.contrastive_eigh(k)
    b0 = 1e-10 * rng.normal(size=(2, k.shape[0]))
    lr = 0.5 * linear.stability_limit(g[0])
    pred = kt.predict(k, (b0 @ k).T, lr)
    run = train_kernel_bt(k, b0, lr, int(pred.step_times[-1] * 1.5) + 50)
    assert run.loss[-1] < 1e-10  # not round-off: both modes learned (loss d - k on a plateau); measured 1e-32
    assert gram_relative_error(kt_rows @ run.b_final.T, kt.predict_embeddings(k, kt_rows, 2)) < 1e-2


def test_bad_input_is_refused(rng):
    k, kt_rows = _rbf_setup(rng)
    with pytest.raises(ValueError, match="symmetric"):
        kt.contrastive_eigh(k + np.triu(np.ones_like(k), 1))
    with pytest.raises(ValueError, match=r"\(2n, 2n\)"):
        kt.contrastive_eigh(k[:-1, :-1])
    with pytest.raises(ValueError, match="ridge"):
        kt.contrastive_eigh(k, ridge=-1.0)
    with pytest.raises(ValueError, match="n_test, 2n"):
        kt.predict_embeddings(k, kt_rows[:, :-1], 2)
    with pytest.raises(ValueError, match="positive"):
        kt.predict_embeddings(k, kt_rows, k.shape[0])
    with pytest.raises(ValueError, match="f0_train"):
        kt.predict(k, np.zeros((3, 2)), 0.1)
    g = kt.contrastive_eigenvalues(k)
    with pytest.raises(ValueError, match="stable GD"):
        kt.predict(k, 1e-6 * np.ones((k.shape[0], 2)), 1.0 / (4 * g[0]))
    with pytest.raises(ValueError, match="b0"):
        train_kernel_bt(k, np.zeros((2, 3)), 0.1, 5)
    with pytest.raises(ValueError, match="positive definite"):
        kt.contrastive_eigh(-k, ridge=0.0)
    assert scipy.linalg.issymmetric(k)
