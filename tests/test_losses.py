"""SSL losses against naive loop references, hand-computed values, the linear theory, and jit / vmap / dtypes."""

import doctest
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise import losses
from stepwise.losses import LOSSES, barlow_twins, barlow_twins_theory, get_loss, infonce_floored, simclr, vicreg
from stepwise.losses import ssl as ssl_module
from stepwise.theory import linear
from stepwise.training.noncontrastive import symmetric_loss

# Tolerances: float64 round-off bounds. These losses are sums over n = 7 samples and d = 5 features of squares,
# hinges and log-sum-exps of O(1..10) logits, without catastrophic cancellation at the test values: relative error
# ~(n d + max|logit|) eps ~ 1e-14. Where a hand value is itself tiny or cancels, the bound says so.
EPS = np.finfo(np.float64).eps
# ----------------------------------------------------------------------------------------------------------------
# Obviously-correct references: explicit Python loops over samples and features, float64 NumPy.


def ref_barlow_twins_theory(z1, z2):
    n, d = z1.shape
    loss = 0.0
    for a in range(d):
        for b in range(d):
            c = sum(z1[i, a] * z2[i, b] + z2[i, a] * z1[i, b] for i in range(n)) / (2 * n)
            loss += (c - (1.0 if a == b else 0.0)) ** 2
    return loss


def _standardise_biased(z, eps):
    n, d = z.shape
    out = np.empty_like(z)
    for k in range(d):
        mean = sum(z[i, k] for i in range(n)) / n
        var = sum((z[i, k] - mean) ** 2 for i in range(n)) / n
        for i in range(n):
            out[i, k] = (z[i, k] - mean) / math.sqrt(var + eps)
    return out


def ref_barlow_twins(z1, z2, lambda_offdiag=5e-3, eps=1e-5):
    n, d = z1.shape
    a, b = _standardise_biased(z1, eps), _standardise_biased(z2, eps)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss += (1.0 - c) ** 2 if i == j else lambda_offdiag * c**2
    return loss


def ref_simclr(z1, z2, temperature=0.5, norm_floor=1e-12):
    """NT-Xent of Chen et al. 2020, Eq. 1: cosine similarity (the norm clipped at 1e-12 as F.normalize does)."""
    n = z1.shape[0]
    u = [v / max(np.linalg.norm(v), norm_floor) for v in list(z1) + list(z2)]
    total = 0.0
    for a in range(2 * n):
        p = (a + n) % (2 * n)
        denominator = sum(math.exp(float(u[a] @ u[b]) / temperature) for b in range(2 * n) if b != a)
        total += -math.log(math.exp(float(u[a] @ u[p]) / temperature) / denominator)
    return total / (2 * n)


def ref_vicreg(z1, z2, sim_weight=25.0, var_weight=25.0, cov_weight=1.0, eps=1e-4, gamma=1.0, convention="reference"):
    n, d = z1.shape

    def v_and_c(z):
        mean = [sum(z[i, k] for i in range(n)) / n for k in range(d)]
        cov = [[sum((z[i, k] - mean[k]) * (z[i, m] - mean[m]) for i in range(n)) / (n - 1) for m in range(d)]
               for k in range(d)]
        v = sum(max(0.0, gamma - math.sqrt(cov[k][k] + eps)) for k in range(d)) / d
        c = sum(cov[k][m] ** 2 for k in range(d) for m in range(d) if k != m) / d
        return v, c

    (v1, c1), (v2, c2) = v_and_c(z1), v_and_c(z2)
    sq_dist = [sum((z1[i, k] - z2[i, k]) ** 2 for k in range(d)) for i in range(n)]
    if convention == "reference":  # facebookresearch/vicreg: F.mse_loss and std_loss halved
        invariance, variance = sum(sq_dist) / (n * d), (v1 + v2) / 2
    else:  # Bardes et al. Eqs. 5-6
        invariance, variance = sum(sq_dist) / n, v1 + v2
    return sim_weight * invariance + var_weight * variance + cov_weight * (c1 + c2)


def ref_infonce_floored(z1, z2, temperature=0.2, norm_floor=1.0):
    """The same NT-Xent with each embedding divided by max(|z|, norm_floor)."""
    return ref_simclr(z1, z2, temperature=temperature, norm_floor=norm_floor)


REFERENCES = {
    "barlow_twins_theory": ref_barlow_twins_theory,
    "barlow_twins": ref_barlow_twins,
    "simclr": ref_simclr,
    "infonce_floored": ref_infonce_floored,
    "vicreg": ref_vicreg,
}

# Every loss with its defaults and a couple of other hyper-parameter values; the same list drives every check.
CASES = [
    ("barlow_twins_theory", {}),
    ("barlow_twins", {}),
    ("barlow_twins", {"lambda_offdiag": 1.0, "eps": 0.0}),
    ("barlow_twins", {"lambda_offdiag": 0.3, "eps": 0.5}),
    ("simclr", {}),
    ("simclr", {"temperature": 0.1}),
    ("simclr", {"temperature": 2.0}),
    ("infonce_floored", {}),
    ("infonce_floored", {"temperature": 0.5, "norm_floor": 1.5}),  # views of norm ~2 and ~0.2: both sides
    ("vicreg", {}),
    ("vicreg", {"convention": "paper"}),
    ("vicreg", {"sim_weight": 1.0, "var_weight": 3.0, "cov_weight": 0.5, "eps": 1e-2, "gamma": 2.0}),
    ("vicreg", {"sim_weight": 2.0, "gamma": 1.7, "convention": "paper"}),
    ("vicreg", {"eps": 0.0}),
]
CASE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in hp.items()) or 'default'}" for name, hp in CASES]


def _views(rng, n=7, d=5, scale=1.0):
    z1 = scale * rng.normal(size=(n, d))
    z2 = z1 + 0.5 * scale * rng.normal(size=(n, d))  # correlated views, as real positive pairs are
    return z1, z2


# ----------------------------------------------------------------------------------------------------------------
# 1. Against the loop references.


@pytest.mark.parametrize(("name", "hparams"), CASES, ids=CASE_IDS)
def test_matches_loop_reference(rng, name, hparams):
    for z1, z2 in (_views(rng), _views(rng, scale=0.1)):
        got = get_loss(name, **hparams)(jnp.asarray(z1), jnp.asarray(z2))
        assert got.dtype == jnp.float64 and got.shape == ()
        # loop (Python floats) vs vectorised: both within ~(n d + max|logit|) eps ~ 1e-14 (measured <= 1.7e-15)
        np.testing.assert_allclose(float(got), REFERENCES[name](z1, z2, **hparams), rtol=1e-10)


def test_registry_and_exports():
    assert set(LOSSES) == {"barlow_twins_theory", "barlow_twins", "simclr", "infonce_floored", "vicreg"}
    assert set(losses.__all__) == {"LOSSES", "PUBLISHED", "THEORY_FORMS", "barlow_twins", "barlow_twins_theory",
                                   "get_loss", "infonce_floored", "simclr", "vicreg"}
    # The published names are the published losses, with the published defaults; the theory forms are separate.
    assert losses.PUBLISHED == ("barlow_twins", "simclr", "vicreg")
    assert set(losses.THEORY_FORMS) == set(LOSSES) - set(losses.PUBLISHED)
    assert get_loss("barlow_twins").func.__kwdefaults__ == {"lambda_offdiag": 5e-3, "eps": 1e-5}
    assert simclr.__kwdefaults__ == {"temperature": 0.5}  # no norm floor: cosine similarity (clip 1e-12 only)
    assert vicreg.__kwdefaults__["sim_weight"] == 25.0 and vicreg.__kwdefaults__["var_weight"] == 25.0
    assert vicreg.__kwdefaults__["cov_weight"] == 1.0
    with pytest.raises(ValueError, match=r"'norm_floor'.*'simclr'"):
        get_loss("simclr", norm_floor=3.0)
    assert LOSSES["vicreg"] is vicreg
    f = get_loss("vicreg", convention="paper", gamma=2.0)
    assert f.func is vicreg and f.keywords == {"convention": "paper", "gamma": 2.0}


def test_doctests():
    result = doctest.testmod(ssl_module, extraglobs={"jnp": jnp})
    assert result.attempted >= 4 and result.failed == 0


# ----------------------------------------------------------------------------------------------------------------
# 2. Hand-computed values (jitted: one compilation per call instead of one per primitive).


@functools.cache
def _compiled(fn, hparams):
    return jax.jit(functools.partial(fn, **dict(hparams)))


def _jitted(fn):
    def call(z1, z2, **hparams):
        return _compiled(fn, tuple(sorted(hparams.items())))(jnp.asarray(z1), jnp.asarray(z2))

    return call


jit_barlow_twins_theory, jit_barlow_twins, jit_simclr, jit_infonce_floored, jit_vicreg = map(
    _jitted, (barlow_twins_theory, barlow_twins, simclr, infonce_floored, vicreg)
)


def _hadamard_columns():
    """(4, 3) columns 2-4 of the 4x4 Hadamard matrix: entries +-1, each column mean 0, columns orthogonal."""
    h = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=np.float64)
    return h[:, 1:]


def test_barlow_twins_theory_hand_values():
    n, d = 6, 4
    e = np.eye(n, d)  # first d rows are I_d, the rest 0: e^T e = I_d
    z = math.sqrt(n) * e
    # C = (n I + n I) / (2n) = I  ->  L = 0, up to sqrt(n)^2 = n (1 + eps): L ~ d (2 eps)^2 (measured 1.7e-31).
    assert float(jit_barlow_twins_theory(z, z)) == pytest.approx(0.0, abs=1e-14)
    # Zero embeddings: C = 0  ->  L = ||I_d||^2 = d (the first plateau).
    assert float(jit_barlow_twins_theory(np.zeros((n, d)), np.zeros((n, d)))) == d
    # z = c sqrt(n) e: C = c^2 I  ->  L = d (1 - c^2)^2.
    c = 0.3
    # ~10 roundings of terms without cancellation (1 - c^2 = 0.91): 10 eps = 2.2e-15
    assert float(jit_barlow_twins_theory(c * z, c * z)) == pytest.approx(d * (1 - c**2) ** 2, rel=1e-14)
    # Anti-aligned views z2 = -z1: C = -I  ->  L = d (1 + 1)^2 = 4d.
    assert float(jit_barlow_twins_theory(z, -z)) == pytest.approx(4.0 * d, rel=1e-14)


def test_barlow_twins_hand_values():
    z = _hadamard_columns()  # n = 4, biased variance 1, decorrelated
    eps = 1e-5
    # zn = z / sqrt(1 + eps), C = z^T z / (n (1 + eps)) = I / (1 + eps)  ->  L = d (1 - 1/(1 + eps))^2.
    # 1 - C_ii ~ 1e-5 cancels: C_ii's ~(n + 2) eps absolute error is (n + 2) eps / 1e-5 relative, doubled by the
    # square: 2.6e-10 (measured 1.1e-11).
    assert float(jit_barlow_twins(z, z, eps=eps)) == pytest.approx(3 * (eps / (1 + eps)) ** 2,
                                                                  rel=4 * (4 + 2) * EPS / (eps / (1 + eps)))
    # z2 = -z1: C = -I/(1 + eps)  ->  L = d (1 + 1/(1 + eps))^2 (~4d).
    assert float(jit_barlow_twins(z, -z, eps=eps)) == pytest.approx(3 * (1 + 1 / (1 + eps)) ** 2, rel=1e-12)
    # Standardisation removes scale and shift: same value for 1e3 z + 7.
    # exact in binary at every step (entries 1007 / 993, mean 7, variance 1e6, std 1e3): 0 on any hardware
    assert float(jit_barlow_twins(1e3 * z + 7.0, 1e3 * z + 7.0, eps=0.0)) == pytest.approx(0.0, abs=1e-20)
    # Perfectly correlated off-diagonal: both features equal -> C = [[1, 1], [1, 1]] (eps = 0), L = 2 lambda.
    col = np.array([[1.0], [-1.0], [2.0], [-2.0]])
    zz = np.concatenate([col, col], axis=1)
    assert float(jit_barlow_twins(zz, zz, lambda_offdiag=0.25, eps=0.0)) == pytest.approx(0.5, rel=1e-13)


def test_simclr_hand_values():
    n = 4
    z = np.eye(n)  # identical views, orthogonal unit embeddings
    # Anchor a: positive similarity 1, 2n - 2 negatives with similarity 0, the other copy of itself is its partner:
    # l = -log(e^{1/tau} / (e^{1/tau} + 2n - 2)) = log(1 + (2n - 2) e^{-1/tau}), the same for every anchor.
    for tau in (0.5, 0.2):
        want = math.log1p((2 * n - 2) * math.exp(-1 / tau))
        # log-sum-exp of logits <= 1 / tau = 5 minus the positive logit: that cancellation leaves an absolute
        # ~4 eps / tau = 2e-15 on a value >= 0.04, so relative 5e-14 (measured 3e-15)
        assert float(jit_simclr(z, z, temperature=tau)) == pytest.approx(want, rel=1e-13)
    # small tau -> 0: lse(logits) - 1/tau cancels to ~4 eps / tau = 1e-13 absolute (the value is 6 e^-100)
    assert float(jit_simclr(z, z, temperature=0.01)) == pytest.approx(0.0, abs=1e-12)
    # All embeddings equal: every logit is 1/tau, so l = log(2n - 1) for every anchor and any tau.
    ones = np.ones((n, 3))
    for tau in (0.1, 0.5, 3.0):
        assert float(jit_simclr(ones, 2.0 * ones, temperature=tau)) == pytest.approx(math.log(2 * n - 1), rel=1e-13)
    # Zero embeddings: normalised to 0, all logits 0 -> log(2n - 1) too.
    assert float(jit_simclr(np.zeros((n, 3)), np.zeros((n, 3)))) == pytest.approx(math.log(2 * n - 1), rel=1e-13)
    # Cosine similarity ignores the norm of each embedding.
    z2 = np.diag([1.0, 2.0, 3.0, 4.0])
    assert float(jit_simclr(z, z2)) == pytest.approx(float(jit_simclr(z, z)), rel=1e-13)


def test_vicreg_hand_values():
    n, d = 4, 3
    z = math.sqrt((n - 1) / n) * _hadamard_columns()  # unbiased variance exactly 1, covariance exactly 0
    # Invariance 0 (z1 = z2); std = sqrt(1 + eps) >= gamma = 1 -> variance 0; off-diagonal Cov = 0 -> 0.
    for convention in ("reference", "paper"):  # exact: equal-magnitude +-entries cancel exactly in any order
        assert float(jit_vicreg(z, z, convention=convention)) == pytest.approx(0.0, abs=1e-15)
    # Shift the second view by s: invariance mean (z1 - z2)^2 = s^2 (reference) or sum_k s^2 = d s^2 (paper);
    # the variance and covariance of each view are shift-invariant, so nothing else changes.
    s = 0.3
    assert float(jit_vicreg(z, z + s, convention="reference")) == pytest.approx(25.0 * s**2, rel=1e-13)
    assert float(jit_vicreg(z, z + s, convention="paper")) == pytest.approx(25.0 * d * s**2, rel=1e-13)
    # Collapse (constant embeddings): each feature's hinge is relu(1 - sqrt(1e-4)) = 0.99, so v(Z) = 0.99 per view;
    # reference: 25 * (0.99 + 0.99) / 2 = 24.75; paper: 25 * (0.99 + 0.99) = 49.5; invariance and covariance 0.
    c = np.full((n, d), 3.0)
    assert float(jit_vicreg(c, c)) == pytest.approx(24.75, rel=1e-13)
    assert float(jit_vicreg(c, c, convention="paper")) == pytest.approx(49.5, rel=1e-13)
    # Two identical features of unbiased variance 1: Cov = [[1, 1], [1, 1]] -> c(Z) = (1 + 1) / d = 1 per view.
    col = math.sqrt((n - 1) / n) * _hadamard_columns()[:, :1]
    zz = np.concatenate([col, col], axis=1)
    assert float(jit_vicreg(zz, zz, var_weight=0.0)) == pytest.approx(2.0, rel=1e-13)


# ----------------------------------------------------------------------------------------------------------------
# 3. The theory's loss and gradient.


def test_barlow_twins_theory_is_the_linear_model(rng):
    n, m, d = 9, 6, 3
    x1 = rng.normal(size=(n, m))
    x2 = x1 + 0.3 * rng.normal(size=(n, m))
    w = 0.5 * rng.normal(size=(d, m))
    gamma = linear.cross_correlation(x1, x2)
    x1j, x2j = jnp.asarray(x1), jnp.asarray(x2)

    def loss_of_w(w):
        return barlow_twins_theory(x1j @ w.T, x2j @ w.T)

    # two orders of the same sums (n = 9, m = 6): ~(n + m) eps relative to the sum of |terms| (measured 4e-15)
    assert float(loss_of_w(jnp.asarray(w))) == pytest.approx(linear.loss(w, gamma), rel=1e-12)
    np.testing.assert_allclose(jax.grad(loss_of_w)(jnp.asarray(w)), linear.gradient(w, gamma), rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------------------------------------------------
# 4. eager == jit == vmap.


@pytest.mark.parametrize(("name", "hparams"), CASES, ids=CASE_IDS)
def test_eager_jit_vmap_agree(rng, name, hparams):
    fn = get_loss(name, **hparams)
    batch = 3
    z1 = jnp.asarray(rng.normal(size=(batch, 7, 5)))
    z2 = z1 + 0.5 * jnp.asarray(rng.normal(size=(batch, 7, 5)))
    jit_fn = jax.jit(fn)
    eager = np.array([float(fn(z1[b], z2[b])) for b in range(batch)])
    jitted = np.array([float(jit_fn(z1[b], z2[b])) for b in range(batch)])
    vmapped = np.asarray(jax.vmap(fn)(z1, z2))
    # XLA may reorder under jit / vmap: the header's ~1e-14 relative (measured <= 4.5e-15)
    np.testing.assert_allclose(jitted, eager, rtol=1e-12)
    np.testing.assert_allclose(vmapped, eager, rtol=1e-12)
    if not hparams:  # jit of vmap (the training-step form) once per loss; each compilation costs ~0.2 s
        np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(fn))(z1, z2)), eager, rtol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# 5. Finite gradients in degenerate cases.


@functools.cache
def _value_and_grad(name):
    """One compiled value-and-gradient per loss, shared by the tests below (all on (7, 5) float64 views)."""
    return jax.jit(jax.value_and_grad(LOSSES[name], argnums=(0, 1)))


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("scale", [1e-20, 0.0])
def test_gradients_finite_for_tiny_and_zero_embeddings(rng, name, scale):
    z1, z2 = (jnp.asarray(z) for z in _views(rng, scale=scale))
    value, (g1, g2) = _value_and_grad(name)(z1, z2)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(g1)) and np.all(np.isfinite(g2))


def test_simclr_tiny_embeddings_tend_to_uniform_logits(rng):
    # Below the 1e-12 norm clip the similarities vanish: the loss is log(2n - 1) up to O(1e-16), and the gradient
    # is finite and non-zero (training can leave this regime).
    z1, z2 = (jnp.asarray(z) for z in _views(rng, scale=1e-20))
    value, (g, _) = _value_and_grad("simclr")(z1, z2)
    assert float(value) == pytest.approx(math.log(13), rel=1e-12)  # the O(1e-16) of the comment above, 1e3x
    assert np.all(np.isfinite(g)) and np.any(g != 0)


def test_infonce_floored_small_norm_regime(rng):
    # Far below the floor eps the loss is NT-Xent on the dot products of z / eps; its expansion to first order in
    # the logits is log(2n - 1) - (1/tau) mean_a [u_a . u_p(a) - mean_{b != a} u_a . u_b] (u = z / eps): the
    # linear, spectral-contrastive regime in which small initialisation matters.
    eps, tau, n = 3.0, 0.2, 7
    z1, z2 = (1e-4 * z for z in _views(rng, n=n))
    u = np.concatenate([z1, z2]) / eps
    dots = u @ u.T
    partner = np.roll(np.arange(2 * n), n)
    first_order = math.log(2 * n - 1) - np.mean(
        dots[np.arange(2 * n), partner] - (dots.sum(1) - np.diag(dots)) / (2 * n - 1)) / tau
    got = float(jit_infonce_floored(jnp.asarray(z1), jnp.asarray(z2), temperature=tau, norm_floor=eps))
    # Compare the deviations from log(2n - 1) (~4e-9): rel 1e-9 on the loss itself (2.6e-9 absolute) would
    # almost let a missing first-order term pass. The deviation is known to the second-order term (~max|dots| /
    # tau relative, 2e-9 here) plus the loss's round-off (~8 eps log(2n - 1) absolute).
    base = math.log(2 * n - 1)
    rel = np.abs(dots).max() / tau + 8 * EPS * base / abs(first_order - base)
    assert got - base == pytest.approx(first_order - base, rel=10 * rel)
    # ... and it depends on the scale of the embeddings (quadratically), unlike standard (cosine) NT-Xent.
    smaller = float(jit_infonce_floored(jnp.asarray(0.5 * z1), jnp.asarray(0.5 * z2), temperature=tau,
                                        norm_floor=eps))
    assert abs(got - math.log(2 * n - 1)) > 1e-9
    assert smaller - math.log(2 * n - 1) == pytest.approx(0.25 * (got - math.log(2 * n - 1)), rel=1e-4)
    # cosine similarity ignores the scale 0.5 (exact in binary): the same values to a few ulps
    assert float(jit_simclr(jnp.asarray(0.5 * z1), jnp.asarray(0.5 * z2), temperature=tau)) == pytest.approx(
        float(jit_simclr(jnp.asarray(z1), jnp.asarray(z2), temperature=tau)), rel=1e-12)
    # Above the floor it is standard SimCLR.
    big1, big2 = (100.0 * z for z in _views(rng, n=n))
    assert float(jit_infonce_floored(big1, big2, temperature=tau, norm_floor=eps)) == pytest.approx(
        float(jit_simclr(big1, big2, temperature=tau)), rel=1e-13)
    with pytest.raises(ValueError, match="norm_floor"):
        infonce_floored(jnp.asarray(z1), jnp.asarray(z2), norm_floor=0.0)


def test_barlow_twins_constant_feature_is_finite(rng):
    z1, z2 = _views(rng)
    z1[:, 2] = 4.0  # a constant feature: zero variance, standardised to 0 thanks to eps
    z1, z2 = jnp.asarray(z1), jnp.asarray(z2)
    value, (g, _) = _value_and_grad("barlow_twins")(z1, z2)
    assert np.isfinite(float(value)) and np.all(np.isfinite(g))
    # C_22 = 0 (the feature standardises to 0), so it contributes (1 - 0)^2 = 1 on the diagonal.
    np.testing.assert_allclose(float(value), ref_barlow_twins(np.asarray(z1), np.asarray(z2)), rtol=1e-10)
    value, (g, _) = _value_and_grad("vicreg")(z1, z2)
    assert np.isfinite(float(value)) and np.all(np.isfinite(g))


# ----------------------------------------------------------------------------------------------------------------
# 6. Symmetries.


@pytest.mark.parametrize(("name", "hparams"), CASES, ids=CASE_IDS)
def test_swap_and_row_permutation_invariance(rng, name, hparams):
    fn = get_loss(name, **hparams)
    z1, z2 = (jnp.asarray(z) for z in _views(rng))
    base = float(fn(z1, z2))
    perm = jnp.asarray(rng.permutation(z1.shape[0]))
    # the same sums in another order: the header's ~1e-14 relative (measured 1.6e-15)
    np.testing.assert_allclose(float(fn(z2, z1)), base, rtol=1e-12)
    np.testing.assert_allclose(float(fn(z1[perm], z2[perm])), base, rtol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# 7. dtypes.


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_float32_in_float32_out(rng, name):
    z1, z2 = (jnp.asarray(z, dtype=jnp.float32) for z in _views(rng))
    value, g = jax.jit(jax.value_and_grad(LOSSES[name]))(z1, z2)
    assert value.dtype == jnp.float32 and g.dtype == jnp.float32
    want = LOSSES[name](z1.astype(jnp.float64), z2.astype(jnp.float64))
    np.testing.assert_allclose(float(value), float(want), rtol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# 8. Errors.


def test_get_loss_unknown_name():
    with pytest.raises(ValueError, match=r"unknown loss 'byol'.*barlow_twins.*simclr.*vicreg"):
        get_loss("byol")


def test_get_loss_unknown_hparam():
    with pytest.raises(ValueError, match=r"'tau'.*'simclr'.*temperature"):
        get_loss("simclr", tau=0.1)
    with pytest.raises(ValueError, match=r"'lambda_offdiag'.*'barlow_twins_theory'.*center"):
        get_loss("barlow_twins_theory", lambda_offdiag=1.0)


@pytest.mark.parametrize(
    ("name", "hparams", "match"),
    [
        ("simclr", {"temperature": 0.0}, "temperature"),
        ("infonce_floored", {"norm_floor": -1.0}, "norm_floor"),
        ("barlow_twins", {"eps": -1.0}, "eps"),
        ("vicreg", {"convention": "code"}, "convention"),
        ("vicreg", {"var_weight": -1.0}, "var_weight"),
    ],
)
def test_bad_hparam_values(name, hparams, match):
    with pytest.raises(ValueError, match=match):
        get_loss(name, **hparams)
    z = jnp.ones((3, 2))
    with pytest.raises(ValueError, match=match):
        LOSSES[name](z, z, **hparams)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize(
    ("shape1", "shape2"), [((4, 3), (4, 2)), ((4, 3), (5, 3)), ((4,), (4,)), ((2, 4, 3), (2, 4, 3)), ((1, 3), (1, 3))]
)
def test_bad_shapes(name, shape1, shape2):
    with pytest.raises(ValueError, match=r"shape|n = 2"):
        LOSSES[name](jnp.ones(shape1), jnp.ones(shape2))


def test_mixed_dtypes_rejected():
    with pytest.raises(TypeError, match="dtype"):
        simclr(jnp.ones((3, 2), jnp.float32), jnp.ones((3, 2), jnp.float64))


def test_barlow_twins_theory_centred_is_the_cross_covariance_form(rng):
    from stepwise.losses import barlow_twins_theory, get_loss

    z1, z2 = rng.normal(size=(9, 4)) + 3.0, rng.normal(size=(9, 4)) - 1.0
    centred = barlow_twins_theory(z1 - z1.mean(0), z2 - z2.mean(0))
    # centring entries ~3 +- 1 (or ~8 after the shift) costs ~8 eps absolute per entry, ~1e-14 relative in L
    np.testing.assert_allclose(barlow_twins_theory(z1, z2, center=True), centred, rtol=1e-12)
    np.testing.assert_allclose(get_loss("barlow_twins_theory", center=True)(z1 + 5.0, z2), centred, rtol=1e-12)
    assert not np.isclose(barlow_twins_theory(z1, z2), centred)
    with pytest.raises(ValueError, match="center"):
        get_loss("barlow_twins_theory", center="yes")


# ----------------------------------------------------------------------------------------------------------------
# 9. Exactly zero embedding rows (issue 16 item 4): every loss, and BYOL / SimSiam's cosine loss, has a finite value
# and gradient there, and the gradient is the reference's (central differences of the loop references above), at
# zero rows and away from them.


def _byol_cosine(p1, p2, a1, a2):
    return symmetric_loss("cosine", p1, p2, a1, a2)


def ref_byol_cosine(p1, p2, a1, a2, eps=1e-12):
    """Grill et al. 2020 Eq. 2, both directions summed: 2 - 2 cos(p, a) per pair, mean over pairs; the norm is
    clipped at eps (BYOL's code normalises with torch.nn.functional.normalize)."""

    def unit(v):
        return v / max(math.sqrt(sum(float(x) ** 2 for x in v)), eps)

    def pair(p, a):
        return sum(2.0 - 2.0 * float(unit(p[i]) @ unit(a[i])) for i in range(p.shape[0])) / p.shape[0]

    return pair(p1, a2) + pair(p2, a1)


ZERO_CASES = CASES + [("byol_cosine", {})]
ZERO_IDS = CASE_IDS + ["byol_cosine"]
ZERO_ROW = 2
WHERE = {
    "none": lambda arrays: None,  # away from zero: the gradient must be unchanged
    "one-row": lambda arrays: arrays[0].__setitem__(ZERO_ROW, 0.0),
    "pair-rows": lambda arrays: [a.__setitem__(ZERO_ROW, 0.0) for a in arrays],
    "first-view": lambda arrays: arrays[0].fill(0.0),  # a collapsed view: every feature constant
    "all": lambda arrays: [a.fill(0.0) for a in arrays],
}


def _zero_case(rng, name, where, dtype=np.float64):
    """The inputs of loss ``name`` (2 views, or p1, p2, a1, a2 for the cosine loss) with the rows of ``where`` zero."""
    n_arrays = 4 if name == "byol_cosine" else 2
    arrays = [a.astype(dtype) for a in _views(rng, n=5, d=3)]
    arrays = (arrays + [a + 0.3 * rng.normal(size=a.shape).astype(dtype) for a in arrays])[:n_arrays]
    WHERE[where](arrays)
    return arrays


@functools.cache
def _zero_value_and_grad(name, hparams):
    fn = _byol_cosine if name == "byol_cosine" else get_loss(name, **dict(hparams))
    return jax.jit(jax.value_and_grad(fn, argnums=tuple(range(4 if name == "byol_cosine" else 2))))


def _central_differences(ref, arrays, s0):
    """d ref / d entry by central differences, step h = 1e-5 max(|row|, s0) per entry, and those steps.

    s0 is the scale below which a row is not normalised by its own norm (the norm floor of SimCLR and the cosine
    loss; 1 for the losses that see a row only through batch statistics), so a zero row's step stays inside the
    floor, where those losses are linear in the row."""
    grads, steps = [], []
    for k, a in enumerate(arrays):
        g, hs = np.empty_like(a), np.empty_like(a)
        for i, j in np.ndindex(a.shape):
            h = 1e-5 * max(float(np.linalg.norm(a[i])), s0)
            plus, minus = [b.copy() for b in arrays], [b.copy() for b in arrays]
            plus[k][i, j] += h
            minus[k][i, j] -= h
            g[i, j], hs[i, j] = (ref(*plus) - ref(*minus)) / (2 * h), h
        grads.append(g)
        steps.append(hs)
    return grads, steps


@pytest.mark.parametrize("where", sorted(WHERE))
@pytest.mark.parametrize(("name", "hparams"), ZERO_CASES, ids=ZERO_IDS)
def test_zero_rows_value_and_gradient(rng, name, hparams, where):
    arrays = _zero_case(rng, name, where)
    value, grads = _zero_value_and_grad(name, tuple(sorted(hparams.items())))(*map(jnp.asarray, arrays))
    assert np.isfinite(float(value)) and all(np.all(np.isfinite(g)) for g in grads)
    ref = functools.partial(ref_byol_cosine if name == "byol_cosine" else REFERENCES[name], **hparams)
    constant_features = where in ("first-view", "all")
    if name == "barlow_twins" and hparams.get("eps") == 0.0 and constant_features:
        # Eq. 2 is 0/0 for a constant feature; the loss takes the standardised column as 0, its value for every
        # eps > 0. The reference with the smallest positive eps computes that (var + 5e-324 = var for var > 0).
        # Not differentiable there (a perturbed constant column standardises to a unit vector): value only.
        np.testing.assert_allclose(float(value), ref(*arrays, eps=5e-324), rtol=1e-10)
        return
    f = ref(*arrays)
    np.testing.assert_allclose(float(value), f, rtol=1e-10)  # the loop-vs-vectorised bound of section 1
    s0 = 1.0
    if name == "simclr" or name == "byol_cosine":
        s0 = 1e-12
    elif name == "infonce_floored":
        s0 = hparams.get("norm_floor", 1.0)
    fd, steps = _central_differences(ref, arrays, s0)
    for g, want, h in zip(grads, fd, steps):
        # Central differences err by ~(h / s)^2 relative (third-order term; h / s <= 1e-5, times a curvature of at
        # most ~1 / tau = 10: <= 1e-9) plus the rounding of the two loop sums, each within ~n d^2 eps (|f| + 10)
        # (the 10 bounds the largest logit 1 / tau), divided by 2 h. The bound takes 1e-6 for the first (1e3x
        # margin) and 1e3 eps (|f| + 10) / h for the second (20x margin over n d^2 = 45).
        row_scale = np.max(np.abs(want), axis=1, keepdims=True)
        tol = 1e-6 * row_scale + 1e3 * EPS * (abs(f) + 10.0) / h
        assert np.all(np.abs(np.asarray(g) - want) <= tol), (np.asarray(g), want)


@pytest.mark.parametrize("where", ["one-row", "pair-rows", "all"])
@pytest.mark.parametrize(("name", "hparams"), ZERO_CASES, ids=ZERO_IDS)
def test_zero_rows_float32(rng, name, hparams, where):
    # float32 in, float32 out, finite; the value within float32 round-off of the float64 one: ~(n d + 1 / tau)
    # eps32 ~ 25 x 6e-8 = 1.5e-6 relative, bounded by 1e-5.
    arrays = _zero_case(rng, name, where, dtype=np.float32)
    fn = _zero_value_and_grad(name, tuple(sorted(hparams.items())))
    value, grads = fn(*map(jnp.asarray, arrays))
    assert value.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in grads)
    assert np.isfinite(float(value)) and all(np.all(np.isfinite(g)) for g in grads)
    want, _ = fn(*(jnp.asarray(a, jnp.float64) for a in arrays))
    np.testing.assert_allclose(float(value), float(want), rtol=1e-5)


def test_byol_cosine_gradient_at_a_zero_prediction(rng):
    # Below the norm floor eps the normalisation is p / eps, so with p1[i] = 0 the loss's gradient in that row is
    # d/dp [(2 - 2 (p / eps) . a_hat) / n] = -2 a_hat / (n eps), a_hat = a2[i] / |a2[i]| (p1 meets a2 only).
    p1, p2, a1, a2 = _zero_case(rng, "byol_cosine", "one-row")
    _, (g, *_) = _zero_value_and_grad("byol_cosine", ())(*map(jnp.asarray, (p1, p2, a1, a2)))
    want = -2.0 * a2[ZERO_ROW] / np.linalg.norm(a2[ZERO_ROW]) / (p1.shape[0] * 1e-12)
    np.testing.assert_allclose(np.asarray(g[ZERO_ROW]), want, rtol=1e-13)  # a few roundings of O(1) terms
