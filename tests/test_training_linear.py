"""The jitted GD loop against the plain NumPy update; both bases; divergence; one compilation."""

import numpy as np
import pytest
from conftest import random_gamma
from test_theory_linear import numpy_gd

from stepwise.errors import DivergenceError
from stepwise.training import linear as T

EPS = np.finfo(np.float64).eps


@pytest.mark.parametrize("basis", ["eigen", "pixel"])
def test_train_linear_bt_matches_numpy_reference(rng, basis):
    gamma, _ = random_gamma(rng, 10, [2.0, 1.2, 0.8, 0.3, 0.1])
    w0 = 1e-3 * rng.normal(size=(3, 10))
    lr = 0.4 / 8
    eigs, losses, w_end = numpy_gd(gamma, w0, lr, 230)
    run = T.train_linear_bt(gamma, w0, lr, 230, basis=basis, chunk=64)  # several chunks plus a partial one
    assert run.eigenvalues.shape == (231, 3) and run.loss.shape == (231,)
    # JAX (XLA) vs NumPy (BLAS), 230 steps: each adds ~m eps relative round-off and relative errors are not
    # amplified (linear near 0, contracting near the learned point), so <= 230 x m x eps = 5e-13 on the O(1)
    # eigenvalues and weights (measured 5e-14). The loss, sum over 3 modes of (1 - lambda)^2, up to 2 x 3 x that.
    bound = 230 * 10 * EPS
    np.testing.assert_allclose(run.eigenvalues, eigs, rtol=0, atol=bound)
    np.testing.assert_allclose(run.loss, losses, rtol=0, atol=6 * bound)
    np.testing.assert_allclose(run.w_final, w_end, rtol=0, atol=bound)
    np.testing.assert_allclose(run.time, lr * np.arange(231))  # lr x step: 1 ulp (default rtol 1e-7)


def test_zero_steps_records_the_initial_state(rng):
    gamma, _ = random_gamma(rng, 5, [1.0, 0.5])
    w0 = rng.normal(size=(2, 5))
    run = T.train_linear_bt(gamma, w0, 0.1, 0)
    assert run.loss.shape == (1,)
    # Into the eigenbasis and back: W V V^T, two products of m = 5 terms, each within m eps of its sum of |terms|
    # (<= m max|W| for orthonormal V): 2 m^2 eps max|W| (measured 2.2e-16 .. 6.7e-16, 0.3 of the first 2 m eps guess).
    np.testing.assert_allclose(run.w_final, w0, rtol=0, atol=2 * 5 * 5 * EPS * np.abs(w0).max())


def test_divergence_stops_with_step_quantity_and_hint(rng):
    gamma, _ = random_gamma(rng, 6, [5.0, 1.0])
    w0 = rng.normal(size=(2, 6))
    with pytest.raises(DivergenceError) as err:
        T.train_linear_bt(gamma, w0, 10.0, 500, chunk=100)
    e = err.value
    assert 0 < e.step < 500 and "loss" in e.quantity
    assert "diverged at step" in str(e) and "learning rate" in str(e)


def test_bad_arguments(rng):
    gamma, _ = random_gamma(rng, 4, [1.0])
    with pytest.raises(ValueError, match="basis"):
        T.train_linear_bt(gamma, np.ones((1, 4)), 0.1, 5, basis="fourier")
    with pytest.raises(ValueError, match="steps"):
        T.train_linear_bt(gamma, np.ones((1, 4)), 0.1, -1)


def test_chunk_compiles_once(rng):
    gamma, _ = random_gamma(rng, 7, [1.0, 0.5])
    T._chunk.clear_cache()
    for seed in range(3):
        w0 = np.random.default_rng(seed).normal(size=(2, 7))
        T.train_linear_bt(gamma, w0, 0.05, 100, chunk=32)
    assert T._chunk._cache_size() == 1


def test_given_eigendecomposition_gives_the_same_run(rng):
    from stepwise.theory import linear as L

    gamma, _ = random_gamma(rng, 9, [2.0, 1.0, 0.5])
    w0 = 1e-4 * rng.normal(size=(2, 9))
    eig = L.eigh_desc(gamma)
    a = T.train_linear_bt(gamma, w0, 0.05, 120)
    b = T.train_linear_bt(gamma, w0, 0.05, 120, eig=eig)
    # Two eigendecompositions of the same Gamma (eigenvectors agree to eps ||Gamma|| / gap, gaps >= 0.5), then the
    # same 120 steps, each adding ~m eps: 120 x 9 x eps = 2.4e-13 (measured 4e-16).
    np.testing.assert_allclose(b.eigenvalues, a.eigenvalues, rtol=0, atol=120 * 9 * EPS)
    np.testing.assert_allclose(b.w_final, a.w_final, rtol=0, atol=120 * 9 * EPS)
    np.testing.assert_array_equal(L.predict(gamma, w0, 0.05, eig=eig).step_times, L.predict(gamma, w0, 0.05).step_times)
