"""stepwise.theory.speedup: closed forms vs an ODE solver, the per-mode GD map vs GD on the full matrix, limits.

References are obviously-correct and independent of the module's shortcuts: scipy's solve_ivp on the scalar ODE
and on the full d x m matrix ODE, and a plain NumPy loop of the matrix update W <- W - lr 4 K(C)(C - I) W Gamma M.
"""

import doctest
import math

import jax
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from stepwise import compare
from stepwise.theory import linear
from stepwise.theory import speedup as sp

A0 = np.array([1e-6, 1e-9, 3e-4])
RATES = np.array([1.0, 0.45, 0.2])


def _aligned(rng, gammas, m, a0):
    """Gamma with the given top eigenvalues (rest small, one negative) and W(0) = U S(0) V_d^T with lambda(0) = a0."""
    q, _ = np.linalg.qr(rng.normal(size=(m, m)))
    g = np.concatenate([gammas, np.linspace(0.05, -0.1, m - gammas.size)])
    gamma = (q * g) @ q.T
    u, _ = np.linalg.qr(rng.normal(size=(a0.size, a0.size)))
    w0 = (u * np.sqrt(a0 / gammas[: a0.size])) @ q[:, : a0.size].T
    return gamma, w0


def _scalar_ode_time(g, a, eps, level):
    """Time at which dlambda/dt = 8 g kappa(lambda) lambda (1 - lambda) reaches ``level``, integrated in logit."""

    def rhs(_, z):  # z = logit(lambda): dz/dt = 8 g kappa(lambda)
        lam = 1.0 / (1.0 + math.exp(-z[0]))
        return [8.0 * g * float(sp.boost_gain(np.array(lam), eps))]

    hit = lambda _, z: z[0] - math.log(level / (1 - level))
    hit.terminal = True
    sol = solve_ivp(rhs, (0.0, 1e6), [math.log(a / (1 - a))], events=hit, rtol=1e-12, atol=1e-12)
    return float(sol.t_events[0][0])


@pytest.mark.parametrize("eps", [None, 1.0, 0.1, 0.01])
@pytest.mark.parametrize("level", [0.5, 0.9])
def test_flow_closed_form_matches_scalar_ode(eps, level):
    want = [_scalar_ode_time(g, a, eps, level) for g, a in zip(RATES, A0)]
    np.testing.assert_allclose(sp.flow_crossing_times(RATES, A0, eps=eps, level=level), want, rtol=1e-8)


@pytest.mark.parametrize("variant", sp.VARIANTS)
def test_flow_closed_form_matches_matrix_ode(rng, variant):
    """The full d x m flow dW/dt = -4 K(C)(C - I) W Gamma M from aligned init: each mode's half-rise time."""
    gammas, eps = np.array([2.0, 1.1, 0.6]), 0.2
    gamma, w0 = _aligned(rng, gammas, 7, A0)
    g, v = linear.eigh_desc(gamma)
    precond = sp.input_preconditioner(g, v, 3) if variant in ("input", "input_boost") else None
    e = eps if variant in ("boost", "input_boost") else None
    rhs = lambda _, w: -sp.update_direction(w.reshape(w0.shape), gamma, precond=precond, eps=e).ravel()
    rates = sp.mode_rates(g, variant, 3)[:3]
    t_pred = sp.flow_crossing_times(rates, A0, eps=e)
    t = np.linspace(0.0, 1.2 * t_pred.max(), 4001)
    sol = solve_ivp(rhs, (0.0, t[-1]), w0.ravel(), t_eval=t, rtol=1e-11, atol=1e-16, method="DOP853")
    eigs = np.array([np.sort(np.linalg.eigvalsh(w.reshape(w0.shape) @ gamma @ w.reshape(w0.shape).T))[::-1]
                     for w in sol.y.T])
    measured = compare.crossing_times(t, eigs, 0.5, interp="logit")
    # logit interpolation between samples is exact for plain/input (logistic); boost curves are not logistic, so
    # the 4000-interval grid leaves ~1e-7 of interpolation error
    np.testing.assert_allclose(measured, np.sort(t_pred), rtol=1e-6)


@pytest.mark.parametrize("variant", sp.VARIANTS)
def test_gd_map_matches_matrix_gd(rng, variant):
    """The exact per-mode GD map against GD on the full matrix (NumPy loop) from aligned init, at a large lr."""
    gammas, eps = np.array([2.0, 1.1, 0.6]), 0.2
    gamma, w0 = _aligned(rng, gammas, 7, A0)
    g, v = linear.eigh_desc(gamma)
    e = eps if variant in ("boost", "input_boost") else None
    precond = sp.input_preconditioner(g, v, 3) if variant in ("input", "input_boost") else None
    pred = sp.predict(g, A0, variant, lr_scale=0.4, eps=e, rank=3)
    w, eigs = w0.copy(), []
    for _ in range(int(pred.last_step) + 3):
        eigs.append(np.sort(np.linalg.eigvalsh(w @ gamma @ w.T))[::-1])
        w = w - pred.lr * sp.update_direction(w, gamma, precond=precond, eps=e)
    eigs = np.array(eigs)
    measured = compare.crossing_times(np.arange(len(eigs), dtype=float), eigs, 0.5, interp="logit")
    np.testing.assert_allclose(measured, pred.step_times, rtol=1e-8)
    curves = sp.gd_eigenvalues(pred.rates, A0, pred.lr, len(eigs) - 1, eps=e)
    np.testing.assert_allclose(np.sort(curves, axis=1)[:, ::-1], eigs, rtol=1e-7, atol=1e-15)


def test_plain_map_is_the_linear_theory():
    for lr in (1e-3, 0.05, 0.2):
        np.testing.assert_array_equal(sp.map_crossing_steps(RATES, A0, lr),
                                      linear.map_crossing_steps(RATES, A0, lr))
    np.testing.assert_allclose(sp.flow_crossing_times(RATES, A0), linear.flow_crossing_times(RATES, A0), rtol=1e-15)


def test_map_crossing_equals_brute_force_iteration():
    """The geometric jump changes a crossing by ~1e-8 relative at most (iterating every step from a0)."""
    for eps, lr in ((None, 0.01), (0.1, 0.01), (0.01, 0.1), (1.0, 0.2)):
        x = 4 * lr * RATES
        lam, prev, out, k = A0.copy(), A0.copy(), np.full(3, np.nan), 0
        while np.isnan(out).any():
            prev, lam = lam, lam * (1 + x * sp.boost_gain(lam, eps) * (1 - lam)) ** 2
            for j in np.flatnonzero(np.isnan(out) & (lam >= 0.5)):
                top = min(lam[j], 1 - 1e-16)
                lo, hi = math.log(prev[j] / (1 - prev[j])), math.log(top / (1 - top))
                out[j] = k - lo / (hi - lo)
            k += 1
        np.testing.assert_allclose(sp.map_crossing_steps(RATES, A0, lr, eps=eps), out, rtol=1e-8)


def test_update_direction_reduces_to_the_gradient(rng):
    gamma, w0 = _aligned(rng, np.array([2.0, 1.0]), 5, np.array([0.3, 0.02]))
    w = w0 + 0.1 * rng.normal(size=w0.shape)  # not aligned
    np.testing.assert_allclose(sp.update_direction(w, gamma), linear.gradient(w, gamma), rtol=1e-12, atol=1e-15)
    # with a preconditioner: the gradient times M on the right; with the boost: K(C) on the left
    m = np.diag(rng.uniform(0.5, 2.0, size=5))
    np.testing.assert_allclose(sp.update_direction(w, gamma, precond=m), linear.gradient(w, gamma) @ m, rtol=1e-12)
    c = w @ gamma @ w.T
    lam, u = np.linalg.eigh(c)
    k = (u * sp.boost_gain(lam, 0.3)) @ u.T
    np.testing.assert_allclose(sp.update_direction(w, gamma, eps=0.3), k @ linear.gradient(w, gamma), rtol=1e-10)


def test_descent_direction(rng):
    """Every variant decreases the loss to first order (K, M positive definite): <grad, direction> >= 0."""
    gamma, w0 = _aligned(rng, np.array([2.0, 1.0, 0.5]), 6, np.array([0.3, 0.02, 1e-3]))
    g, v = linear.eigh_desc(gamma)
    for _ in range(5):
        w = w0 + 0.3 * rng.normal(size=w0.shape)
        for precond in (None, sp.input_preconditioner(g, v, 3)):
            for eps in (None, 0.1):
                assert np.sum(linear.gradient(w, gamma) * sp.update_direction(w, gamma, precond=precond, eps=eps)) > 0


def test_input_preconditioner_equalises_the_top_modes(rng):
    gamma, _ = _aligned(rng, np.array([2.0, 1.0, 0.5]), 6, np.array([0.1]))
    g, v = linear.eigh_desc(gamma)
    m = sp.input_preconditioner(g, v, 3)
    np.testing.assert_allclose(m, m.T, atol=1e-14)
    assert np.all(np.linalg.eigvalsh(m) > 0)
    got = np.sort(np.linalg.eigvals(gamma @ m).real)[::-1]
    np.testing.assert_allclose(got, np.sort(sp.mode_rates(g, "input", 3))[::-1], atol=1e-12)
    np.testing.assert_allclose(sp.mode_rates(g, "input", 3)[:3], 1.0)
    np.testing.assert_array_equal(sp.mode_rates(g, "boost"), g)


def test_limits():
    # a huge eps is no boost; kappa(1) = 1 (learned modes keep their step); kappa(0) = (1 + eps)/eps
    np.testing.assert_allclose(sp.flow_crossing_times(RATES, A0, eps=1e9), sp.flow_crossing_times(RATES, A0), rtol=1e-7)
    np.testing.assert_allclose(sp.boost_gain(np.array([0.0, 1.0, -0.5]), 0.25), [5.0, 1.0, 5.0])
    np.testing.assert_array_equal(sp.boost_gain(np.array([0.3]), None), [1.0])
    # already above the level: 0; a dead mode: inf
    np.testing.assert_array_equal(sp.flow_crossing_times(np.array([1.0, 0.0]), np.array([0.7, 1e-3])), [0.0, np.inf])
    np.testing.assert_array_equal(sp.map_crossing_steps(np.array([1.0, -1.0]), np.array([0.7, 1e-3]), 0.1),
                                  [0.0, np.inf])
    # t = 0: the curves start at a0
    np.testing.assert_array_equal(sp.gd_eigenvalues(RATES, A0, 0.1, 3, eps=0.1)[0], A0)


@pytest.mark.parametrize("eps", [None, 1.0, 0.1, 0.01])
def test_flow_vs_gd_within_half_the_per_step_rate(eps):
    """The discretisation bound the experiment's flow checks use: |flow / GD - 1| <= x/2 with x = 4 lr g kappa(0),
    where it gates them (x/2 < 1/2) and the crossing takes more than a step (the flow is faster; a start next to
    the level is crossed inside the first step, where logit interpolation of one step is not the flow)."""
    a = np.array([1e-12, 1e-6, 1e-3, 0.2])
    for lr in (1e-3, 1e-2, 0.02, 0.05, 0.1, 0.2):
        for g in (1.0, 0.3, 0.05):
            x = 4 * lr * g * float(sp.boost_gain(np.array(0.0), eps))
            if x / 2 >= 0.5:
                continue
            rates = np.full(a.size, g)
            gd = sp.map_crossing_steps(rates, a, lr, eps=eps)
            flow = sp.flow_crossing_times(rates, a, eps=eps) / lr
            rel = (flow / gd - 1)[gd > 1]
            assert np.all(np.abs(rel) <= x / 2), (eps, lr, g, rel, x / 2)


def test_predicted_speedups_approach_the_closed_forms():
    """At small lr_scale the GD-map reductions of t_d tend to the flow-limit formulas of the module docstring."""
    g = np.array([1.0, 0.5, 0.2, 0.05])
    a = np.full(3, 1e-10) * g[:3]
    eps = 0.1
    plain = sp.predict(g, a, "plain", lr_scale=1e-3)
    span = math.log((1 - a[2]) / a[2])
    want = {"input": g[0] / g[2], "boost": (1 + eps) * span / (eps * span + math.log(2 * (1 - a[2])))}
    want["input_boost"] = want["input"] * want["boost"]
    for variant, ratio in want.items():
        other = sp.predict(g, a, variant, lr_scale=1e-3, eps=eps, rank=3)
        assert other.lr_limit == (0.25 if "input" in variant else 0.25 / g[0])
        np.testing.assert_allclose(plain.last_step / other.last_step, ratio, rtol=5e-3)
        np.testing.assert_allclose(np.max(plain.flow_steps) / np.max(other.flow_steps), ratio, rtol=1e-12)


@pytest.mark.parametrize("variant", ["plain", "input", "boost"])
def test_stability_limit(variant):
    """Just below the limit GD settles at lambda = 1 from a nearby start; just above it oscillates away."""
    g = np.array([1.0, 0.4])
    pred = sp.predict(g, np.array([1e-3]), variant, lr_scale=0.5, eps=0.2, rank=1)
    rate = pred.rates[0]
    eps = pred.eps
    for factor, settles in ((0.98, True), (1.02, False)):
        lam = sp.gd_eigenvalues(np.array([rate]), np.array([1.001]), factor * pred.lr_limit, 3000, eps=eps)[:, 0]
        assert (abs(lam[-1] - 1) < 1e-6) == settles, (factor, lam[-5:])


def test_refusals():
    g, a = np.array([1.0, 0.5]), np.array([1e-6])
    for kwargs, match in ((dict(variant="fast", lr_scale=0.1), "unknown variant"),
                          (dict(variant="boost", lr_scale=0.1), "needs eps"),
                          (dict(variant="boost", lr_scale=0.1, eps=-1.0), "eps must be"),
                          (dict(variant="input", lr_scale=0.1), "rank"),
                          (dict(variant="plain", lr_scale=1.0), "lr_scale")):
        variant = kwargs.pop("variant")
        with pytest.raises(ValueError, match=match):
            sp.predict(g, a, variant, **kwargs)
    with pytest.raises(ValueError, match="a0"):
        sp.predict(g, np.array([1.5]), "plain", lr_scale=0.1)
    with pytest.raises(ValueError, match="level"):
        sp.flow_crossing_times(g, a, level=1.0)
    with pytest.raises(ValueError, match="rank"):
        sp.mode_rates(np.array([1.0, -0.5]), "input", 2)


def test_doctests():
    failures, tried = doctest.testmod(sp, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried >= 3 and failures == 0


# float64 without x64 (the precision policy of tests/test_precision.py, for this module's functions; the same
# builders belong in its CASES table).
_PRECISION_CASES = {
    "boost_gain": lambda: ((np.array([-0.1, 0.0, 0.3, 1.0]), 0.1), {}),
    "flow_crossing_times": lambda: ((RATES, A0), {"eps": 0.1}),
    "gd_eigenvalues": lambda: ((RATES, A0, 0.05, 30), {"eps": 0.1}),
    "input_preconditioner": lambda: ((np.array([2.0, 1.0, 0.5]), np.linalg.qr(np.arange(9.0).reshape(3, 3) ** 2)[0],
                                      2), {}),
    "map_crossing_steps": lambda: ((RATES, A0, 0.05), {"eps": 0.1}),
    "mode_rates": lambda: ((np.array([2.0, 1.0, 0.5]), "input", 2), {}),
    "predict": lambda: ((np.array([2.0, 1.0, 0.5]), A0[:2], "input_boost"), {"lr_scale": 0.3, "eps": 0.1, "rank": 2}),
    "update_direction": lambda: ((np.ones((2, 3)) * 0.1, np.diag([2.0, 1.0, 0.5])), {"precond": np.eye(3), "eps": 0.1}),
}


def test_every_public_function_has_a_precision_case():
    public = {n for n in sp.__all__ if callable(getattr(sp, n)) and not isinstance(getattr(sp, n), type)}
    assert public == set(_PRECISION_CASES)


@pytest.mark.parametrize("name", sorted(_PRECISION_CASES))
def test_float64_without_x64(name):
    fn = getattr(sp, name)
    args, kwargs = _PRECISION_CASES[name]()
    ref = fn(*args, **kwargs)
    jax.config.update("jax_enable_x64", False)
    try:
        out = fn(*args, **kwargs)
    finally:
        jax.config.update("jax_enable_x64", True)
    leaves = lambda r: [getattr(r, f) for f in r.__dataclass_fields__] if hasattr(r, "__dataclass_fields__") else [r]
    for a, b in zip(leaves(out), leaves(ref)):
        if isinstance(b, (str, type(None))):
            assert a == b
            continue
        assert np.asarray(a).dtype == np.float64
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
