"""The third-party workarounds in stepwise._compat keep working under the suite's strict dtype promotion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
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


# ----------------------------------------------------------------------------------------------------------------
# neural-tangents 0.6.5 on the JAX in use, without TensorFlow.


def test_neural_tangents_imports_without_tensorflow_and_leaves_jax_unchanged():
    import importlib.util
    import sys

    import jax.core

    from stepwise._compat import import_neural_tangents

    had_jaxpr = "Jaxpr" in vars(jax.core)
    nt = import_neural_tangents()
    assert nt.__version__ == "0.6.5"
    assert importlib.util.find_spec("tensorflow") is None and "tensorflow" not in sys.modules
    assert ("Jaxpr" in vars(jax.core)) == had_jaxpr  # the aliases existed only during the import
    with pytest.raises(ImportError, match="needs TensorFlow"):
        nt.experimental.empirical_ntk_fn_tf  # noqa: B018
    assert import_neural_tangents() is nt


def test_working_implementations_exclude_structured_derivatives():
    from stepwise._compat import nt_empirical_ntk_fn, nt_working_implementations

    working = nt_working_implementations()
    assert "structured_derivatives" not in working
    assert set(working) == {"jacobian_contraction", "ntk_vector_products"}  # on the JAX this suite pins (0.10)
    params = {"w": jnp.ones((2, 3))}
    x = jnp.ones((4, 2))
    with pytest.raises(Exception):  # noqa: B017 - what structured derivatives raises depends on the JAX version
        nt_empirical_ntk_fn(lambda p, x: jnp.tanh(x @ p["w"]), "structured_derivatives")(x, None, params)


def test_jax_outside_the_supported_range_is_refused(monkeypatch):
    import stepwise._compat as compat

    from pathlib import Path

    assert "jax>=0.6,<0.11" in (Path(__file__).parents[1] / "pyproject.toml").read_text()  # the same range
    monkeypatch.setattr(jax, "__version__", "0.11.0")
    with pytest.raises(ImportError, match=r"supports jax>=0\.6,<0\.11, but jax 0\.11\.0"):
        compat.import_neural_tangents()


def test_stax_kernel_of_a_dense_layer():
    from stepwise._compat import import_neural_tangents, standard_dtype_promotion

    stax = import_neural_tangents().stax
    _, _, kernel_fn = stax.Dense(1, W_std=1.0, b_std=0.0, parameterization="standard")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)))
    with standard_dtype_promotion():
        k = kernel_fn(x, None, "ntk")
    np.testing.assert_allclose(k, x @ x.T + 1.0, rtol=1e-12)  # d(xW + b)/dW . d(x'W + b)/dW + db . db
