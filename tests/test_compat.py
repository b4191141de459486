"""stepwise._compat: the JAX version policy, the neural-tangents shim and each of its repairs, the dtype workarounds.

Every neural-tangents result is compared with an independent reference (``jax.jacrev`` contractions, NumPy/SciPy
closed forms, eager vs jit); the tests make no assumption about which implementations work on the JAX in use.
"""

import re
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from flax import nnx

import stepwise._compat as compat
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
# The JAX version policy.


def test_min_jax_is_pyprojects_lower_bound():
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    lower = re.search(r'"jax>=([0-9.]+)', text)
    assert lower is not None
    assert compat._version_tuple(lower.group(1)) == compat.MIN_JAX


def test_jax_older_than_supported_is_refused(monkeypatch):
    major, minor = compat.MIN_JAX
    older = f"{major}.{minor - 1}.9"  # the last patch release of the minor before MIN_JAX
    monkeypatch.setattr(jax, "__version__", older)
    with pytest.raises(ImportError, match=rf"needs jax>={major}\.{minor} .* but jax {re.escape(older)} is installed"):
        compat.check_jax_version()
    with pytest.raises(ImportError, match=rf"but jax {re.escape(older)} is installed"):
        compat.import_neural_tangents()
    assert older in compat.nt_unavailable_reason()


def test_jax_newer_than_tested_warns_once_then_imports_and_probes(monkeypatch):
    working = compat.nt_working_implementations()  # on the real version
    monkeypatch.setattr(compat, "_warned_untested", set())
    monkeypatch.setattr(jax, "__version__", "0.99.0")
    with pytest.warns(compat.UntestedJaxWarning, match=r"jax 0\.99\.0 is newer than every version"):
        nt = compat.import_neural_tangents()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: no second warning
        assert compat.import_neural_tangents() is nt
        compat.check_jax_version()
        compat.nt_working_implementations.cache_clear()
        try:
            assert compat.nt_working_implementations() == working  # the probe runs again under the new version
            assert (compat.nt_unavailable_reason() is None) == bool(working)
        finally:
            compat.nt_working_implementations.cache_clear()


@pytest.mark.parametrize("version", compat.TESTED_JAX)
def test_tested_jax_versions_neither_warn_nor_are_refused(monkeypatch, version):
    monkeypatch.setattr(compat, "_warned_untested", set())
    monkeypatch.setattr(jax, "__version__", version)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compat.check_jax_version()


# ----------------------------------------------------------------------------------------------------------------
# neural-tangents 0.6.5 on the JAX in use, without TensorFlow.


def _without_neural_tangents(monkeypatch):
    """Removes neural-tangents from sys.modules for one test (monkeypatch puts the imported modules back)."""
    for name in [m for m in sys.modules if m == "neural_tangents" or m.startswith("neural_tangents.")]:
        monkeypatch.delitem(sys.modules, name)


def test_neural_tangents_imports_without_tensorflow_and_leaves_jax_unchanged(monkeypatch):
    import importlib.util

    import jax.core
    import jax.interpreters.ad

    first = compat.import_neural_tangents()
    _without_neural_tangents(monkeypatch)  # a fresh import, shims and repairs included, in this test
    util = sys.modules.get("jax.util")
    before = (set(vars(jax.core)), set(vars(jax.interpreters.ad)), util and set(vars(util)))
    nt = compat.import_neural_tangents()
    assert nt is not first and nt.__version__ == "0.6.5" and nt._stepwise_repaired
    assert importlib.util.find_spec("tensorflow") is None and "tensorflow" not in sys.modules
    # The aliases existed only during the import:
    assert (set(vars(jax.core)), set(vars(jax.interpreters.ad)), util and set(vars(util))) == before
    assert sys.modules.get("jax.util") is util
    from neural_tangents._src import predict

    assert predict.jax.core.eval_context is jax.ensure_compile_time_eval  # its view of jax was repaired ...
    assert getattr(jax.core, "eval_context", None) is not jax.ensure_compile_time_eval  # ... not jax itself
    with pytest.raises(ImportError, match="needs TensorFlow"):
        nt.experimental.empirical_ntk_fn_tf  # noqa: B018
    assert compat.import_neural_tangents() is nt


def test_import_failure_becomes_one_clear_import_error(monkeypatch):
    import jax.core
    import jax.extend.core

    _without_neural_tangents(monkeypatch)
    # A JAX that has moved one more name neural-tangents needs:
    monkeypatch.delattr(jax.extend.core, "Jaxpr")
    if "Jaxpr" in vars(jax.core):
        monkeypatch.delattr(jax.core, "Jaxpr")
    with pytest.raises(ImportError, match=r"does not import on jax .* \(AttributeError: .*Jaxpr.*backend='jax'"):
        compat.import_neural_tangents()
    assert not [m for m in sys.modules if m.startswith("neural_tangents")]  # nothing half-imported is left
    reason = compat.nt_unavailable_reason()
    assert reason is not None and "does not import" in reason


def test_missing_neural_tangents_gives_the_install_command(monkeypatch):
    _without_neural_tangents(monkeypatch)
    monkeypatch.setitem(sys.modules, "neural_tangents", None)  # `import neural_tangents` -> ModuleNotFoundError
    with pytest.raises(ImportError, match=r"not installed: .*--no-deps neural-tangents==0\.6\.5"):
        compat.import_neural_tangents()


def test_nt_unavailable_reason_on_this_jax():
    working = compat.nt_working_implementations()
    assert set(working) <= {"jacobian_contraction", "ntk_vector_products"}
    assert (compat.nt_unavailable_reason() is None) == bool(working)


# A per-example network with a pytree of parameters, float64 (the suite enables x64).
def _mlp(p, x):
    h = jnp.tanh(x @ p["w1"] + p["b1"][None, :])
    return jnp.sin(h @ p["w2"]) @ p["w3"]


def _mlp_params_and_inputs(n=5, d=3, width=6, out=4):
    rng = np.random.default_rng(0)
    params = {"w1": rng.normal(size=(d, width)), "b1": rng.normal(size=(width,)),
              "w2": rng.normal(size=(width, width)) / np.sqrt(width), "w3": rng.normal(size=(width, out))}
    return jax.tree.map(jnp.asarray, params), jnp.asarray(rng.normal(size=(n, d)))


def _reference_ntk(f, params, x1, x2):
    """Full NTK, shape (n1, d, n2, d): per-example Jacobians from jax.jacrev, contracted over all parameters."""
    def jac(x):
        j = jax.vmap(jax.jacrev(lambda p, xi: f(p, xi[None])[0]), in_axes=(None, 0))(params, x)
        return jnp.concatenate([leaf.reshape(leaf.shape[:2] + (-1,)) for leaf in jax.tree.leaves(j)], axis=2)
    return jnp.einsum("iap,jbp->iajb", jac(x1), jac(x2))


def _rel(a, b):
    return float(jnp.max(jnp.abs(jnp.asarray(a) - b)) / jnp.max(jnp.abs(b)))


# float64 contractions of ~100 parameter derivatives: round-off ~100 * 1.1e-16 relative to max |K|.
NTK_TOL = 1e-10


def test_probe_agrees_with_an_independent_reference():
    """An implementation is reported working exactly when it computes the jacrev NTK of another network."""
    params, x = _mlp_params_and_inputs()
    x2 = x[:3] + 0.5
    expected = jnp.einsum("iaja->ij", _reference_ntk(_mlp, params, x, x2)) / 4  # trace over outputs / 4
    working = compat.nt_working_implementations()
    for name in ("jacobian_contraction", "ntk_vector_products"):
        try:
            got = compat.nt_empirical_ntk_fn(_mlp, name)(x, x2, params)
            matches = got.shape == expected.shape and _rel(got, expected) < NTK_TOL
        except Exception:  # noqa: BLE001 - an implementation that raises does not work
            matches = False
        assert (name in working) == matches, name


def test_structured_derivatives_refused_with_a_clear_message_where_it_fails():
    nt = compat.import_neural_tangents()
    params, x = _mlp_params_and_inputs(n=3)
    with pytest.raises(ValueError, match="'structured_derivatives' implementation is not used by stepwise"):
        compat.nt_empirical_ntk_fn(_mlp, "structured_derivatives")
    with pytest.raises(ValueError, match="unknown neural-tangents implementation 'auto'"):
        compat.nt_empirical_ntk_fn(_mlp, "auto")
    sd = nt.NtkImplementation.STRUCTURED_DERIVATIVES
    fn = nt.empirical_ntk_fn(_mlp, trace_axes=(), vmap_axes=0, implementation=sd)
    expected = _reference_ntk(_mlp, params, x, x)
    expected = jnp.moveaxis(expected, 1, 2)  # neural-tangents' layout: (n1, n2, d, d)
    if compat.nt_structured_derivatives_work():
        with standard_dtype_promotion():
            assert _rel(fn(x, None, params), expected) < NTK_TOL
        return
    with pytest.raises(compat.NtImplementationRefused,
                       match=r"STRUCTURED_DERIVATIVES implementation does not work with jax "
                             rf"{re.escape(jax.__version__)}.*use JACOBIAN_CONTRACTION, NTK_VECTOR_PRODUCTS or AUTO"):
        fn(x, None, params)
    assert isinstance(compat.NtImplementationRefused(), NotImplementedError)
    # The probe is right to refuse: neural-tangents' implementation as released fails or differs here.
    from neural_tangents._src import empirical

    original = empirical._implementation_to_ntk_fn[sd].original(
        f=_mlp, trace_axes=(), diagonal_axes=(), vmap_axes=0, _j_rules=True, _s_rules=True, _fwd=None)
    with warnings.catch_warnings(), standard_dtype_promotion():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            assert _rel(original(x, None, params), expected) >= NTK_TOL
        except (TypeError, ValueError, AttributeError, NotImplementedError):
            pass


@pytest.mark.parametrize("jit", [False, True])
def test_auto_equals_jacobian_contraction(jit):
    nt = compat.import_neural_tangents()
    params, x = _mlp_params_and_inputs()
    x2 = x[:2] - 0.3
    fns = {i: nt.empirical_ntk_fn(_mlp, trace_axes=(), vmap_axes=0, implementation=i)
           for i in (nt.NtkImplementation.AUTO, nt.NtkImplementation.JACOBIAN_CONTRACTION)}
    if jit:
        fns = {i: jax.jit(fn) for i, fn in fns.items()}
    with standard_dtype_promotion():
        auto, jc = (fns[i](x, x2, params) for i in (nt.NtkImplementation.AUTO,
                                                     nt.NtkImplementation.JACOBIAN_CONTRACTION))
    assert auto.shape == jc.shape == (5, 2, 4, 4)
    assert _rel(auto, jc) < NTK_TOL
    assert _rel(jc, jnp.moveaxis(_reference_ntk(_mlp, params, x, x2), 1, 2)) < NTK_TOL


def test_flops_for_the_auto_choice_from_the_current_cost_analysis():
    """AUTO's FLOP count (the repaired neural-tangents helper) for a 16 x 16 matmul: 2 * 16^3 multiply-adds."""
    from neural_tangents._src import empirical

    compat.import_neural_tangents()
    x = jnp.ones((16, 16))
    assert empirical._get_flops(lambda x: x @ x, True, x) == 2 * 16**3
    assert empirical._get_flops(jnp.sin, True, x) == 0.0  # XLA counts sin as a transcendental, not a flop
    refused = compat._nt_refuse_structured_derivatives(lambda **kw: lambda x: x @ x)()
    assert empirical._get_flops(refused, True, x) == (2 * 16**3 if compat.nt_structured_derivatives_work() else np.inf)


def test_ntk_vector_products_on_pytrees_without_deprecation_warnings():
    """Implementation 2 on pytree outputs (the repaired _std_basis / _unravel_array_into_pytree) vs jacrev."""
    nt = compat.import_neural_tangents()
    params, x = _mlp_params_and_inputs(n=3)

    def f(p, x):  # two outputs of different shapes
        y = _mlp(p, x)
        return {"a": y, "b": jnp.tanh(y[:, :2])}

    with warnings.catch_warnings(), standard_dtype_promotion():
        warnings.simplefilter("error")
        got = nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0,
                                  implementation=nt.NtkImplementation.NTK_VECTOR_PRODUCTS)(x, None, params)
    for name in ("a", "b"):
        g = lambda p, x, name=name: f(p, x)[name]  # noqa: E731
        assert _rel(got[name], jnp.moveaxis(_reference_ntk(g, params, x, x), 1, 2)) < NTK_TOL


def test_std_basis_and_unravel_match_numpy_on_shape_structs():
    tree = {"a": jax.ShapeDtypeStruct((2, 3), jnp.float64), "b": jax.ShapeDtypeStruct((4,), jnp.float64)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        basis = compat._nt_std_basis(tree)
    assert basis["a"].shape == (10, 2, 3) and basis["b"].shape == (10, 4)
    flat = np.concatenate([np.asarray(basis["a"]).reshape(10, 6), np.asarray(basis["b"])], axis=1)
    np.testing.assert_array_equal(flat, np.eye(10))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_max_learning_rate_matches_the_eigenvalue_formula(momentum):
    nt = compat.import_neural_tangents()
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    k = a @ a.T + np.eye(6)
    lam = np.linalg.eigvalsh(k)[-1]
    # 2 (1 + momentum) n / lambda_max; eigenvalues of a symmetric matrix agree to ~n eps ||k|| between LAPACK drivers.
    assert nt.predict.max_learning_rate(jnp.asarray(k), momentum=momentum) == pytest.approx(
        2 * (1 + momentum) * 6 / (lam + 1e-12), rel=1e-12)
    assert nt.predict.max_learning_rate(k, y_train_size=12) == pytest.approx(2 * 12 / (lam + 1e-12), rel=1e-12)


def _kernel_and_targets(n=5, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    return jnp.asarray(a @ a.T / n + 0.5 * np.eye(n)), jnp.asarray(rng.normal(size=(n, 1)))


def _mse_closed_form(k, y, fx0, t):
    """f(t) = y + expm(-t K / n)(f(0) - y): gradient flow on (1 / 2n) ||f - y||^2 in function space."""
    return np.asarray(y) + scipy.linalg.expm(-t * np.asarray(k) / y.size) @ (np.asarray(fx0) - np.asarray(y))


# K has condition number < 20 here; expm vs eigendecomposition differ by ~cond * eps relative.
MSE_TOL = 1e-10


def test_gradient_descent_mse_eager_matches_the_closed_form():
    nt = compat.import_neural_tangents()
    k, y = _kernel_and_targets()
    fx0 = jnp.zeros_like(y)
    with standard_dtype_promotion():
        got = nt.predict.gradient_descent_mse(k, y)(2.0, fx0)
    np.testing.assert_allclose(got, _mse_closed_form(k, y, fx0, 2.0), rtol=MSE_TOL, atol=MSE_TOL)


def test_gradient_descent_mse_built_inside_jit_and_vmap():
    nt = compat.import_neural_tangents()
    k, y = _kernel_and_targets()
    k2, _ = _kernel_and_targets(seed=1)
    fx0 = jnp.zeros_like(y)

    def predict(k, t):
        return nt.predict.gradient_descent_mse(k, y)(t, fx0)

    with standard_dtype_promotion():
        jitted = jax.jit(predict)(k, 2.0)
        vmapped = jax.vmap(predict, in_axes=(0, None))(jnp.stack([k, k2]), 2.0)
        eager = predict(k, 2.0)
    np.testing.assert_allclose(jitted, eager, rtol=MSE_TOL, atol=MSE_TOL)
    np.testing.assert_allclose(vmapped[0], eager, rtol=MSE_TOL, atol=MSE_TOL)
    np.testing.assert_allclose(vmapped[1], _mse_closed_form(k2, y, fx0, 2.0), rtol=MSE_TOL, atol=MSE_TOL)


def test_gradient_descent_mse_predictor_reused_across_jits():
    """Built eagerly, called in two jit traces: the cached eigendecomposition stays concrete (no leaked tracer)."""
    nt = compat.import_neural_tangents()
    k, y = _kernel_and_targets()
    fx0 = jnp.zeros_like(y)
    with standard_dtype_promotion():
        predict_fn = nt.predict.gradient_descent_mse(k, y)
        first = jax.jit(lambda fx: predict_fn(1.0, fx))(fx0)
        second = jax.jit(lambda fx, t: predict_fn(t, fx))(fx0, 3.0)
        at_inf = jax.jit(lambda fx: predict_fn(None, fx))(fx0)
    np.testing.assert_allclose(first, _mse_closed_form(k, y, fx0, 1.0), rtol=MSE_TOL, atol=MSE_TOL)
    np.testing.assert_allclose(second, _mse_closed_form(k, y, fx0, 3.0), rtol=MSE_TOL, atol=MSE_TOL)
    np.testing.assert_allclose(at_inf, y, rtol=MSE_TOL, atol=MSE_TOL)


def test_stax_kernel_of_a_dense_layer():
    stax = compat.import_neural_tangents().stax
    _, _, kernel_fn = stax.Dense(1, W_std=1.0, b_std=0.0, parameterization="standard")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)))
    with standard_dtype_promotion():
        k = kernel_fn(x, None, "ntk")
    np.testing.assert_allclose(k, x @ x.T + 1.0, rtol=1e-12)  # d(xW + b)/dW . d(x'W + b)/dW + db . db
