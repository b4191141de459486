"""Strict JAX for the whole suite: x64 for the closed-form checks, no silent rank promotion, a key fixture."""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_gamma(rng, m, gammas):
    """A symmetric m x m matrix with the given leading eigenvalues (rest zero) and a random eigenbasis."""
    q, _ = np.linalg.qr(rng.normal(size=(m, m)))
    g = np.zeros(m)
    g[: len(gammas)] = gammas
    return (q * g) @ q.T, q[:, : len(gammas)]
