"""The SB-HLTM sampler: exact statistics (checklist 6 of the tian2020 note), eager == jit == vmap, bad input."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise.compare.tian2020 import hltm_sampler_checks
from stepwise.data import hltm as H


@pytest.fixture(scope="module")
def tree():
    return H.make_hltm(4, 2, (0.6, 1.0), key=jax.random.key(3))


@pytest.fixture(scope="module")
def views(tree):
    return jax.jit(H.sample_views, static_argnames="n")(tree, n=40_000, key=jax.random.key(4))


def test_structure(tree, views):
    assert tree.n_leaves == 16 and tree.level_sizes() == (1, 2, 4, 8, 16)
    assert views.x.shape == views.x_pos.shape == views.x_neg.shape == (40_000, 16)
    assert [z.shape[1] for z in views.latents] == [1, 2, 4, 8, 16]
    np.testing.assert_array_equal(views.x, views.latents[-1].astype(views.x.dtype))
    np.testing.assert_array_equal(views.latents_pos[0], views.latents[0])  # the positive shares the root
    assert set(np.unique(np.asarray(views.latents[2]))) == {0, 1}
    signs = np.concatenate([np.sign(np.asarray(p)) for p in tree.polarities])
    assert (signs > 0).any() and (signs < 0).any()  # random signs, as in the reference code
    mags = np.concatenate([np.abs(np.asarray(p)) for p in tree.polarities])
    assert mags.min() >= 0.6 and mags.max() <= 1.0


def test_sampler_statistics_match_the_exact_model(tree, views):
    checks, summary = hltm_sampler_checks(tree.polarities, H.path_polarities(tree), tree.children, views)
    for c in checks:
        assert c.passed, c.explain()
        # they test our sampler against the exact model it implements (issue 14: consistency, not theory)
        assert c.kind == "consistency", c.name
    # The predictions are not trivially 1: the deepest paths attenuate to well below the shallow ones.
    assert float(jnp.min(jnp.abs(H.path_polarities(tree)[-1]))) < 0.5


def test_path_polarities_against_a_loop(tree):
    got = H.path_polarities(tree)
    for t in range(1, tree.depth + 1):
        for j in range(2**t):
            prod, node = 1.0, j
            for level in range(t, 0, -1):
                prod *= float(tree.polarities[level - 1][node])
                node //= 2
            # float32 product of <= depth = 4 factors vs float64: <= 4 x 2^-24 = 2.4e-7 relative (measured 6e-8)
            assert float(got[t][j]) == pytest.approx(prod, rel=1e-6)


def test_checks_fail_on_a_wrong_model(tree, views):
    """The statistics detect a sampler that does not match the stated polarities."""
    other = H.make_hltm(4, 2, (0.6, 1.0), key=jax.random.key(99))
    checks, _ = hltm_sampler_checks(other.polarities, H.path_polarities(other), 2, views)
    failed = {c.name for c in checks if c.passed is False}
    assert {"hltm_corr_root_max_error", "hltm_edge_agreement_max_error"} <= failed


def test_eager_jit_vmap_agree():
    tree = H.make_hltm(2, 3, (0.6, 1.0), key=jax.random.key(3))  # small: eager mode compiles op by op
    key = jax.random.key(7)
    eager = H.sample_views(tree, 64, key=key)
    jitted = jax.jit(H.sample_views, static_argnames="n")(tree, n=64, key=key)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_array_equal(a, b)
    keys = jax.random.split(key, 3)
    mapped = jax.jit(jax.vmap(lambda k: H.sample_views(tree, 64, key=k)))(keys)
    for i in range(3):
        single = H.sample_views(tree, 64, key=keys[i])
        for a, b in zip(jax.tree.leaves(mapped), jax.tree.leaves(single)):
            np.testing.assert_array_equal(a[i], b)


def test_vmap_over_trees():
    """The experiment batches seeds and polarity ranges by vmapping over trees."""
    keys = jax.random.split(jax.random.key(8), 3)

    @jax.jit
    @jax.vmap
    def sample(k):
        tree = H.make_hltm(3, 2, (0.8, 1.0), key=k)
        return tree, H.sample_latents(tree, jnp.zeros(5, jnp.int32), key=k)

    trees, lat = sample(keys)
    assert lat[-1].shape == (3, 5, 8)
    single = H.make_hltm(3, 2, (0.8, 1.0), key=keys[1])
    for a, b in zip(trees.polarities, single.polarities):
        np.testing.assert_allclose(a[1], b, rtol=1e-6)  # float32, a few roundings (measured identical)


def test_root_population_means_are_the_exact_conditional_means(tree):
    """Each root value's leaves average to E[x | z0] = (1 - rho)/2 + rho z0: binary leaves, so the mean of n draws
    has standard error <= 0.5 / sqrt(n); 5 of those over all leaves and both roots."""
    n = 20_000
    views, clean = H.root_population(tree, n, key=jax.random.key(6))
    assert views.shape == (2, n, tree.n_leaves) and clean.shape == (2, tree.n_leaves)
    rho = np.asarray(H.path_polarities(tree)[-1])
    np.testing.assert_allclose(np.asarray(clean), [(1 - rho) / 2, (1 + rho) / 2], rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(views).mean(axis=1), np.asarray(clean), rtol=0, atol=5 * 0.5 / np.sqrt(n))


def test_same_key_other_range_rescales_the_same_tree():
    key = jax.random.key(5)
    a = H.make_hltm(3, 3, (0.7, 1.0), key=key)
    b = H.make_hltm(3, 3, (0.9, 1.0), key=key)
    for pa, pb in zip(a.polarities, b.polarities):
        np.testing.assert_array_equal(np.sign(pa), np.sign(pb))
        # float32: |p| - 0.9 cancels to an absolute ~2^-24, divided by 0.1: ~6e-7 absolute (measured 4e-7)
        np.testing.assert_allclose((np.abs(pa) - 0.7) / 0.3, (np.abs(pb) - 0.9) / 0.1, rtol=1e-5, atol=1e-5)


def test_given_polarities_and_chain():
    tree = H.hltm_from_polarities([[1.0], [-1.0]], children=1)  # a deterministic chain z2 = 1 - z0
    lat = H.sample_latents(tree, jnp.array([0, 1, 1]), key=jax.random.key(0))
    np.testing.assert_array_equal(lat[2][:, 0], [1, 0, 0])
    np.testing.assert_array_equal(lat[1][:, 0], [0, 1, 1])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: H.make_hltm(0, 2, key=jax.random.key(0)), "depth must be an integer >= 1"),
        (lambda: H.make_hltm(2.5, 2, key=jax.random.key(0)), "depth must be an integer"),
        (lambda: H.make_hltm(3, 0, key=jax.random.key(0)), "children must be"),
        (lambda: H.make_hltm(3, 2, (0.5, 1.2), key=jax.random.key(0)), r"polarities live in \[-1, 1\]"),
        (lambda: H.make_hltm(3, 2, (-0.5, 0.5), key=jax.random.key(0)), "0 <= lo"),
        (lambda: H.make_hltm(3, 2, (0.9, 0.8), key=jax.random.key(0)), "lo <= hi"),
        (lambda: H.make_hltm(3, 2, (-1.5, 0.5), key=jax.random.key(0), random_sign=False), "-1 <= lo"),
        (lambda: H.hltm_from_polarities([[0.5, 1.5]], 2), r"\[-1, 1\]"),
        (lambda: H.hltm_from_polarities([[0.5]], 2), "must have children"),
        (lambda: H.hltm_from_polarities([], 2), "depth >= 1"),
        (lambda: H.sample_views(H.make_hltm(2, key=jax.random.key(0)), 0, key=jax.random.key(0)), "n must be"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_doctests():
    # Doctest leaves its last value in builtins._, so no example ends on a tuple holding a list: tyro later puts
    # every builtin that claims to be Hashable in a set, and such a tuple claims it but cannot be hashed.
    assert doctest.testmod(H, raise_on_error=True).failed == 0
