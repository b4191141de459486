"""The third-party workarounds in stepwise._compat keep working under the suite's strict dtype promotion."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stepwise._compat import standard_dtype_promotion
from stepwise.data import color_jitter


def test_suite_runs_with_strict_promotion():
    assert jax.config.jax_numpy_dtype_promotion == "strict"
    with standard_dtype_promotion():
        assert jax.config.jax_numpy_dtype_promotion == "standard"
    assert jax.config.jax_numpy_dtype_promotion == "strict"


def test_flax_group_norm_float64_under_the_workaround():
    norm = nnx.GroupNorm(8, num_groups=4, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 3, 8)))
    with standard_dtype_promotion():
        y = norm(x)
    assert y.dtype == jnp.float64
    g = np.asarray(x).reshape(2, 9, 4, 2)
    ref = (g - g.mean(axis=(1, 3), keepdims=True)) / np.sqrt(g.var(axis=(1, 3), keepdims=True) + 1e-6)
    np.testing.assert_allclose(y, ref.reshape(2, 3, 3, 8), rtol=1e-6, atol=1e-6)


def test_dm_pix_hue_and_saturation_under_strict_promotion():
    img = jnp.asarray(np.random.default_rng(0).uniform(size=(6, 6, 3)), dtype=jnp.float32)
    out = color_jitter(jax.random.key(0), img, saturation=0.3, hue=0.1)
    assert out.dtype == jnp.float32 and out.shape == img.shape and not np.allclose(out, img)
