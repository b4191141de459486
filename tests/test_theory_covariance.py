"""The covariance operator of Tian et al. 2020 against autodiff of the exact population loss (float64)."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise.compare.tian2020 import covariance_checks
from stepwise.theory import covariance as C

# Tolerances are round-off bounds: a ReLU net of depth <= 3 and width <= 6 is a chain of <= 3 products of length
# <= 6, each entry within ~18 eps of the sum of its absolute terms (<= ~2 here), i.e. <= 1e-14; sums over the
# population add their own length. Relative bounds only where nothing cancels.
EPS = np.finfo(np.float64).eps

def random_net(rng, widths):
    return [jnp.asarray(rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)) for n_in, n_out in zip(widths, widths[1:])]


def gaussian_population(rng, z, a, n0, noise=0.5):
    """Z instance centres (the clean views) with A noisy views each."""
    centres = rng.normal(size=(z, n0))
    views = centres[:, None] + noise * rng.normal(size=(z, a, n0))
    return jnp.asarray(views), jnp.asarray(centres)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    weights = random_net(rng, (5, 6, 4, 3))
    views, clean = gaussian_population(rng, 4, 3, 5)
    return weights, views, clean


def jacrev_connection(weights, x, layer, linear_top=True):
    """Reference K_l: jax.jacrev of f_L with respect to W_l, one input at a time, reshaped row-major."""

    def f_of_w(w, xi):
        ws = [*weights[: layer - 1], w, *weights[layer:]]
        return C.relu_net(ws, xi[None], linear_top=linear_top)[0]

    jac = jax.jit(jax.vmap(lambda xi: jax.jacrev(f_of_w)(weights[layer - 1], xi)))(x)  # (N, n_L, n_l, n_{l-1})
    return jac.reshape(x.shape[0], jac.shape[1], -1).transpose(0, 2, 1)


@pytest.mark.parametrize("linear_top", [True, False])
def test_connection_matches_autodiff_and_reconstructs_output(setup, linear_top):
    weights, views, _ = setup
    x = views.reshape(-1, 5)
    for layer in (1, 2, 3):
        k = C.connection(weights, x, layer, linear_top=linear_top)
        # jacrev vs the closed form: the same products in another order, <= 18 eps x 2 = 8e-15 (measured 0)
        np.testing.assert_allclose(k, jacrev_connection(weights, x, layer, linear_top), rtol=0, atol=1e-13)
        # f_L(x) = K_l(x)^T vec(W_l): the network is positively homogeneous in each W_l. One more contraction of
        # length <= 30: (18 + 30) eps x 2 = 2e-14 (measured 2.2e-16).
        np.testing.assert_allclose(jnp.einsum("npo,p->no", k, weights[layer - 1].reshape(-1)),
                                   C.relu_net(weights, x, linear_top=linear_top), rtol=0, atol=1e-13)


def test_connection_two_layer_formula(setup):
    """The note's hand formula for a 2-layer net, row-major: K[(i, j), k] = W2[k, i] D_i x_j."""
    rng = np.random.default_rng(1)
    w1, w2 = rng.normal(size=(6, 5)), rng.normal(size=(3, 6))
    x = rng.normal(size=(7, 5))
    gate = (x @ w1.T > 0).astype(float)
    ref = np.einsum("ki,ni,nj->nijk", w2, gate, x).reshape(7, 30, 3)
    # single products W2[k, i] x_j: 2 roundings of values <= 3 each, 1.3e-15 (measured 0)
    np.testing.assert_allclose(C.connection([jnp.asarray(w1), jnp.asarray(w2)], jnp.asarray(x), 1), ref, rtol=0,
                               atol=1e-14)


def test_connection_eager_jit_vmap(setup):
    weights, views, _ = setup
    x = views.reshape(-1, 5)
    eager = C.connection(weights, x, 2)
    jitted = jax.jit(C.connection, static_argnames=("layer", "linear_top"))(weights, x, layer=2)
    mapped = jax.vmap(lambda xi: C.connection(weights, xi[None], 2)[0])(x)
    # XLA may reorder under jit / vmap: the header's 18 eps x max|K| (measured identical; the old rtol = atol =
    # 1e-14 was within 2x of that bound)
    bound = 4 * 18 * EPS * float(jnp.max(jnp.abs(eager)))
    np.testing.assert_allclose(jitted, eager, rtol=0, atol=bound)
    np.testing.assert_allclose(mapped, eager, rtol=0, atol=bound)


def test_population_loss_matches_a_python_loop(setup):
    """expected_loss (vectorised) against a loop over all iid triples (z, a, a', z', a'')."""
    weights, views, clean = setup
    alpha = C.between_pair_weights(weights, clean, tau=0.7)
    f = np.asarray(C.relu_net(weights, views.reshape(-1, 5))).reshape(4, 3, 3)
    p = np.array([0.1, 0.2, 0.3, 0.4])
    total, magnitude = 0.0, 0.0
    for z in range(4):
        for a in range(3):
            for ap in range(3):
                for zn in range(4):
                    for an in range(3):
                        r_pos = 0.5 * np.sum((f[z, a] - f[z, ap]) ** 2)
                        r_neg = 0.5 * np.sum((f[z, a] - f[zn, an]) ** 2)
                        total += p[z] * p[zn] / 27 * float(alpha[z, zn]) * (r_pos - r_neg)
                        magnitude += p[z] * p[zn] / 27 * abs(float(alpha[z, zn])) * (r_pos + r_neg)
    # 432 terms r+ - r- that largely cancel: both sums are within ~432 eps of the sum of |terms| (measured 4e-16
    # relative to the total).
    assert float(C.expected_loss(weights, views, probs=jnp.asarray(p), alpha=alpha)) == pytest.approx(
        total, abs=2 * 432 * EPS * magnitude)


def test_all_covariance_checks_pass(setup):
    weights, views, clean = setup
    checks, summary = covariance_checks(weights, views, clean=clean, tau=0.3)
    for c in checks:
        assert c.passed, c.explain()
    # Theorems 1 and 2 and the loss-weight formula are the paper's statements (theory); PSD, rank, the law of total
    # variance and the two-point outer product hold by construction of OP (consistency: they test the code).
    kinds = {c.name: c.kind for c in checks}
    assert kinds == {"op_identity_rel_error": "theory", "weighted_identity_rel_error": "theory",
                     "aug_weight_residue": "theory", "loss_weight_formula_rel_error": "theory",
                     "op_min_eigenvalue_rel": "consistency", "op_rank_excess": "consistency",
                     "variance_decomposition_rel_error": "consistency"}
    values = {c.name: c.value for c in checks}
    # Identities: relative round-off of gradients over 12 views x <= 30 parameters, ~400 eps = 1e-13 (measured 6e-16)
    assert values["op_identity_rel_error"] < 1e-12 and values["weighted_identity_rel_error"] < 1e-12
    # The rank bound (Z - 1) n_L = 9 is far below P (30, 24, 12 parameters) and reached: a real constraint.
    assert summary["per_layer"]["rank_bound"] == [9, 9, 9] and summary["per_layer"]["rank"] == [9, 9, 9]
    # "Visibly fails": the augmentation-dependent InfoNCE weight leaves an O(1) residue.
    assert values["aug_weight_residue"] > 0.1


def test_binary_instance_rank_and_outer_product():
    """Z = 2 (a binary root, as in the SB-HLTM): OP = p0 p1 dK dK^T with rank <= n_L; non-uniform p."""
    rng = np.random.default_rng(2)
    weights = random_net(rng, (6, 8, 2))
    views, clean = gaussian_population(rng, 2, 4, 6)
    checks, summary = covariance_checks(weights, views, clean=clean, probs=jnp.asarray([0.3, 0.7]), tau=0.5)
    for c in checks:
        assert c.passed, c.explain()
    assert {c.name: c.kind for c in checks}["binary_root_outer_product_rel_error"] == "consistency"
    assert summary["per_layer"]["rank"] == [2, 2] and summary["per_layer"]["rank_bound"] == [2, 2]


def test_identity_needs_draws_with_replacement(setup):
    """The note's pitfall: excluding x+ = x changes the expectation; the identity is then off (so it can fail)."""
    weights, views, _ = setup
    f_of = lambda ws: C.relu_net(ws, views.reshape(-1, 5)).reshape(4, 3, 3)

    def loss_without_replacement(ws):
        f = f_of(ws)
        r_pos = C.pair_distance(f[:, :, None], f[:, None, :])
        off_diag = (1.0 - jnp.eye(3))[None]
        e_pos = jnp.sum(r_pos * off_diag) / (4 * 6)
        e_neg = jnp.mean(C.pair_distance(f[:, :, None, None], f[None, None]))
        return e_pos - e_neg

    g = jax.jit(jax.grad(loss_without_replacement))(list(weights))[0]
    op = C.covariance_operator(C.mean_connection(weights, views, 1))
    pred = C.predicted_update(op, weights[0])
    assert float(jnp.linalg.norm(-g - pred) / jnp.linalg.norm(pred)) > 1e-2


def test_weighted_operator_with_unit_weights_is_op(setup):
    weights, views, _ = setup
    kbar = C.mean_connection(weights, views, 2)
    p = jnp.asarray([0.4, 0.3, 0.2, 0.1])
    # two sums over the 4 x 4 instance pairs of outer products of Kbar: ~16 n_L eps max|Kbar|^2, absolute
    # (entries cancel), 4x (measured 1.1e-16)
    atol = 4 * 16 * 3 * EPS * float(jnp.max(jnp.abs(kbar))) ** 2
    np.testing.assert_allclose(C.weighted_covariance_operator(kbar, jnp.ones((4, 4)), p),
                               C.covariance_operator(kbar, p), rtol=0, atol=atol)


def test_variance_decomposition_against_numpy_loop(setup):
    weights, views, _ = setup
    k = np.asarray(C.view_connections(weights, views, 3))
    z, a = k.shape[:2]
    mean = k.mean(axis=(0, 1))
    total = sum((k[i, j] - mean) @ (k[i, j] - mean).T for i in range(z) for j in range(a)) / (z * a)
    # 12 views x n_L = 3 products of centred entries: ~36 eps max|K|^2 absolute (entries cancel); the old
    # atol 1e-14 sat below that worst case (measured 5.6e-17)
    atol = 4 * z * a * k.shape[-1] * EPS * np.abs(k).max() ** 2
    np.testing.assert_allclose(C.total_variance(jnp.asarray(k)), total, rtol=0, atol=atol)


def test_gradient_form_with_many_negatives(rng):
    """Note 1.2 (checklist 1): dL/dr+ = sum_k beta_k and dL/dr-_k = -beta_k for InfoNCE with H = 5."""
    r_pos = jnp.asarray(rng.uniform(0, 2, size=(7,)))
    r_neg = jnp.asarray(rng.uniform(0, 2, size=(7, 5)))
    for tau in (0.1, 1.0):
        grad = jax.jit(jax.grad(lambda rp, rn: jnp.sum(C.infonce_loss(rp, rn, tau=tau)), argnums=(0, 1)))
        g_pos, g_neg = grad(r_pos, r_neg)
        beta = C.contrastive_weights("infonce", r_pos, r_neg, tau=tau)
        # Softmax weights exp(l_k - lse) carry ~(H + max|l|) eps relative, max|l| = max r / tau <= 2 / tau. Autodiff
        # gives dL/dr+ = 1 - softmax_0, which cancels when softmax_0 ~ 1 (tau = 0.1): that error becomes absolute,
        # i.e. relative to sum(beta) it grows as 1 / sum(beta) (measured 2e-13 relative, 0.2 of the old rtol 1e-12).
        softmax_err = 8 * (6 + 2 / tau) * EPS
        np.testing.assert_allclose(g_pos, beta.sum(-1), rtol=softmax_err, atol=softmax_err)
        np.testing.assert_allclose(g_neg, -beta, rtol=softmax_err)
    g_pos, g_neg = jax.grad(lambda rp, rn: jnp.sum(C.soft_triplet_loss(rp, rn, tau=0.3, margin=0.2)),
                            argnums=(0, 1))(r_pos, r_neg[:, 0])
    beta = C.contrastive_weights("soft_triplet", r_pos, r_neg[:, :1], tau=0.3, margin=0.2)[:, 0]
    # sigmoid((r+ - r- + r0) / tau): a few roundings amplified by |argument| <= 7 (measured 3e-16)
    np.testing.assert_allclose(g_pos, beta, rtol=1e-12)
    np.testing.assert_allclose(g_neg, -beta, rtol=1e-12)
    np.testing.assert_allclose(C.contrastive_weights("simple", r_pos, r_neg), jnp.ones((7, 5)))


def test_exact_cov_loss_weights_are_detached(rng):
    r_pos = jnp.asarray(rng.uniform(0, 2, size=(3,)))
    r_neg = jnp.asarray(rng.uniform(0, 2, size=(3, 2)))
    clean = jnp.asarray(rng.uniform(0, 2, size=(3, 2)))
    g_clean = jax.grad(lambda c: jnp.sum(C.exact_cov_loss(r_pos, r_neg, c, tau=0.5)))(clean)
    assert float(jnp.max(jnp.abs(g_clean))) == 0.0
    g_neg = jax.grad(lambda rn: jnp.sum(C.exact_cov_loss(r_pos, rn, clean, tau=0.5)))(r_neg)
    np.testing.assert_allclose(g_neg, -jax.nn.sigmoid(-clean / 0.5), rtol=1e-12)  # the same sigmoid (measured 0)


def test_bad_inputs_raise_before_compute(setup):
    weights, views, clean = setup
    with pytest.raises(ValueError, match="input columns"):
        C.relu_net([weights[0], weights[0]], views[0])
    with pytest.raises(ValueError, match="layer must be"):
        C.connection(weights, views[0], 4)
    with pytest.raises(ValueError, match="views must have shape"):
        C.mean_connection(weights, views[0], 1)
    kbar = C.mean_connection(weights, views, 1)
    with pytest.raises(ValueError, match="sum to 1"):
        C.covariance_operator(kbar, jnp.asarray([0.5, 0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="symmetric"):
        C.weighted_covariance_operator(kbar, jnp.triu(jnp.ones((4, 4))))
    with pytest.raises(ValueError, match="at most one"):
        C.expected_loss(weights, views, alpha=jnp.ones((4, 4)), weight_fn=lambda rp, rn: rp)
    with pytest.raises(ValueError, match="unknown loss"):
        C.contrastive_weights("byol", jnp.ones(2), jnp.ones((2, 1)))
    with pytest.raises(ValueError, match="tau > 0"):
        C.infonce_loss(jnp.ones(2), jnp.ones((2, 1)), tau=0.0)


def test_doctests():
    import stepwise.theory.covariance as module

    # Doctest leaves its last value in builtins._, so no example ends on a tuple holding a list: tyro later puts
    # every builtin that claims to be Hashable in a set, and such a tuple claims it but cannot be hashed.
    assert doctest.testmod(module, raise_on_error=True).failed == 0
