"""stepwise.ntk: the project's Jacobian contraction against an independent forward-mode reference, neural-tangents
against it, blocking, symmetry, jit, the memory plan and the errors (float64: conftest enables x64)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from stepwise import ntk
from stepwise.models import MLP, ResNet18, SmallCNN, pure_model

F64 = jnp.float64


def make(kind: str, seed: int = 0):
    """A tiny float64 network of each kind and a few inputs for it."""
    if kind == "mlp":
        module = MLP((3, 3, 1), hidden=(7,), embed_dim=5, projector=(4, 3), param_dtype=F64, rngs=nnx.Rngs(seed))
    elif kind == "cnn":
        module = SmallCNN((6, 6, 2), channels=(3, 4), embed_dim=3, param_dtype=F64, rngs=nnx.Rngs(seed))
    else:  # GroupNorm ResNet-18 at width 0.125 on 8x8 images: 175k parameters, d = 2
        return resnet_with_random_params(seed), (8, 8, 3)
    return pure_model(module), module.input_shape


def resnet_with_random_params(seed):
    """The tiny ResNet-18's pure function with random float64 parameters (kernels N(0, 1/fan_in), vectors
    1 + N(0, 0.1^2)): built abstractly, since running Flax's initialisers costs ~20 s of CPU for its 60 arrays."""
    abstract = nnx.eval_shape(lambda: ResNet18((8, 8, 3), width=0.125, embed_dim=2, param_dtype=F64,
                                               rngs=nnx.Rngs(seed)))
    pure = pure_model(abstract)
    leaves, treedef = jax.tree.flatten(pure.params)
    rng = np.random.default_rng(seed)
    drawn = [rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1])) if len(leaf.shape) >= 2
             else 1 + 0.1 * rng.normal(size=leaf.shape) for leaf in leaves]
    return dataclasses.replace(pure, params=jax.tree.unflatten(treedef, [jnp.asarray(a, F64) for a in drawn]))


def inputs(shape, n, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, *shape)))


def reference_ntk(apply_fn, params, x1, x2):
    """Forward-mode Jacobian of the whole batch w.r.t. the flattened parameters, contracted in NumPy."""
    flat, unravel = ravel_pytree(params)

    @jax.jit
    def jac(x):
        return jax.jacfwd(lambda theta: apply_fn(unravel(theta), x))(flat)  # (n, d, P)

    j1, j2 = np.asarray(jac(x1)), np.asarray(jac(x2))
    return np.einsum("adp,bdp->ab", j1, j2) / j1.shape[1]


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


@pytest.fixture(scope="module")
def small_kernels():
    """kind -> (pure, x1 (4 inputs), x2 (3 inputs), jax-backend kernel): computed once for the tests below."""
    out = {}
    for kind in ("mlp", "cnn"):
        pure, shape = make(kind)
        x1, x2 = inputs(shape, 4), inputs(shape, 3, seed=2)
        out[kind] = (pure, x1, x2, ntk.empirical_ntk(pure.apply, pure.params, x1, x2, backend="jax"))
    return out


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_jax_backend_matches_forward_mode_reference(kind, small_kernels):
    pure, x1, x2, k = small_kernels[kind]
    assert k.shape == (4, 3) and k.dtype == F64
    assert rel(k, reference_ntk(pure.apply, pure.params, x1, x2)) < 1e-12


def test_blocked_equals_unblocked_and_symmetric(rng):
    pure, shape = make("mlp")
    x1, x2 = inputs(shape, 11), inputs(shape, 7, seed=3)
    whole = ntk.plan_ntk(pure.apply, pure.params, x1, x2, backend="jax")
    assert (whole.block_rows, whole.block_cols, whole.n_blocks) == (11, 7, 1)
    full = ntk.empirical_ntk(pure.apply, pure.params, x1, x2, backend="jax")
    # A budget a little above the held arrays forces small blocks (and padded, ragged edges).
    budget = whole.held_bytes + 3 * whole.jacobian_bytes_per_example * 4
    small = ntk.plan_ntk(pure.apply, pure.params, x1, x2, backend="jax", memory_budget=budget)
    assert small.n_blocks > 1 and small.peak_bytes <= budget
    blocked = ntk.empirical_ntk(pure.apply, pure.params, x1, x2, backend="jax", memory_budget=budget)
    assert rel(blocked, full) < 1e-13
    sym = ntk.empirical_ntk(pure.apply, pure.params, x1, backend="jax")
    sym_blocked = ntk.empirical_ntk(pure.apply, pure.params, x1, backend="jax", memory_budget=budget)
    np.testing.assert_array_equal(sym, sym.T)
    assert rel(sym, ntk.empirical_ntk(pure.apply, pure.params, x1, x1, backend="jax")) < 1e-13
    assert rel(sym_blocked, sym) < 1e-13
    assert np.all(np.linalg.eigvalsh(np.asarray(sym)) > -1e-10)  # a Gram matrix


def test_eager_equals_jit_of_the_pure_kernel():
    pure, shape = make("mlp")
    x1, x2 = inputs(shape, 2), inputs(shape, 3, seed=2)
    fn = ntk.ntk_fn(pure.apply, backend="jax")
    eager = fn(pure.params, x1, x2)
    jitted = jax.jit(fn)(pure.params, x1, x2)
    blocked = ntk.empirical_ntk(pure.apply, pure.params, x1, x2, backend="jax")
    assert rel(jitted, eager) < 1e-13 and rel(blocked, eager) < 1e-13


def test_errors_before_compute():
    pure, shape = make("mlp")
    x = inputs(shape, 4)
    with pytest.raises(ValueError, match="unknown NTK backend"):
        ntk.empirical_ntk(pure.apply, pure.params, x, backend="torch")
    with pytest.raises(ValueError, match="unknown NTK implementation"):
        ntk.empirical_ntk(pure.apply, pure.params, x, implementation="fastest")
    with pytest.raises(ValueError, match="the 'jax' backend has one"):
        ntk.empirical_ntk(pure.apply, pure.params, x, backend="jax", implementation="ntk_vector_products")
    with pytest.raises(ValueError, match="same shape"):
        ntk.empirical_ntk(pure.apply, pure.params, x, inputs((4, 4, 1), 2), backend="jax")
    with pytest.raises(ValueError, match="failed on one input"):
        ntk.empirical_ntk(pure.apply, pure.params, inputs((4, 4, 1), 2), backend="jax")
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        ntk.empirical_ntk(lambda p, x: pure.apply(p, x)[:, 0], pure.params, x, backend="jax")
    with pytest.raises(ValueError, match="non-empty"):
        ntk.empirical_ntk(pure.apply, pure.params, x[:0], backend="jax")
    with pytest.raises(ValueError, match=r"does not fit the memory budget .* d \* P \* itemsize = 3 \*"):
        ntk.empirical_ntk(pure.apply, pure.params, x, backend="jax", memory_budget=1000)
    with pytest.raises(ValueError, match="positive number of bytes"):
        ntk.plan_ntk(pure.apply, pure.params, x, backend="jax", memory_budget=-1)


def test_default_budget_and_float64_from_float32_params():
    module = MLP((2, 2, 1), hidden=(6,), embed_dim=3, rngs=nnx.Rngs(0))  # float32 parameters
    pure = pure_model(module)
    x = jnp.ones((3, 2, 2, 1), jnp.float32)
    k = ntk.empirical_ntk(pure.apply, pure.params, x, backend="jax")
    plan = ntk.plan_ntk(pure.apply, pure.params, x, backend="jax")
    assert k.dtype == F64 and plan.dtype == "float64"  # x64 is enabled: parameters and inputs are cast
    available = ntk.available_memory_bytes()
    assert 0 < plan.budget_bytes <= available
    assert plan.budget_bytes == pytest.approx(ntk.DEFAULT_BUDGET_FRACTION * available, rel=0.2)
    assert plan.matmul_flops == 2 * 3 * 3 * plan.n_params * plan.out_dim
    assert plan.jacobian_bytes_per_example == plan.out_dim * plan.n_params * 8


# ----------------------------------------------------------------------------------------------------------------
# neural-tangents backend (through stepwise._compat) against the jax backend.


@pytest.fixture(scope="module")
def tiny_resnet_kernels():
    """The tiny GroupNorm ResNet-18's NTK from both backends, unblocked and jitted (one compile each).

    Compiled with XLA's backend optimisations off: the same operations, compiled 3x faster (the test's time is
    the two compiles).
    """
    pure, shape = make("resnet")
    x1, x2 = inputs(shape, 3), inputs(shape, 2, seed=2)
    kernels = {}
    for backend, impl in (("jax", "auto"), ("neural_tangents", "jacobian_contraction")):
        lowered = jax.jit(ntk.ntk_fn(pure.apply, backend=backend, implementation=impl)).lower(pure.params, x1, x2)
        compiled = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
        kernels[backend] = compiled(pure.params, x1, x2)
    return kernels


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_neural_tangents_agrees_with_jax_backend(kind, small_kernels):
    pure, x1, x2, expected = small_kernels[kind]
    for implementation in ("jacobian_contraction", "ntk_vector_products"):
        got = ntk.empirical_ntk(pure.apply, pure.params, x1, x2, implementation=implementation)
        assert got.dtype == F64 and rel(got, expected) < 1e-6, implementation


def test_neural_tangents_agrees_on_resnet18(tiny_resnet_kernels):
    k = tiny_resnet_kernels
    assert k["neural_tangents"].shape == (3, 2) and k["neural_tangents"].dtype == F64
    assert rel(k["neural_tangents"], k["jax"]) < 1e-6


def test_neural_tangents_blocked_symmetric_and_auto():
    pure, shape = make("mlp")
    x = inputs(shape, 9)
    full = ntk.empirical_ntk(pure.apply, pure.params, x, backend="jax")
    plan = ntk.plan_ntk(pure.apply, pure.params, x)
    assert plan.implementation in ("jacobian_contraction", "ntk_vector_products") and plan.n_blocks == 1
    budget = plan.held_bytes + plan.block_bytes // 3
    small = ntk.plan_ntk(pure.apply, pure.params, x, implementation="jacobian_contraction", memory_budget=budget)
    assert small.n_blocks > 1 and small.peak_bytes <= budget
    blocked = ntk.empirical_ntk(pure.apply, pure.params, x, implementation="jacobian_contraction",
                                memory_budget=budget)
    np.testing.assert_array_equal(blocked, blocked.T)
    assert rel(blocked, full) < 1e-12


def test_auto_backend_is_neural_tangents_where_it_works_and_is_recorded(tmp_path):
    from stepwise._compat import nt_unavailable_reason
    from stepwise.io import load_results, write_results

    expected = "neural_tangents" if nt_unavailable_reason() is None else "jax"
    assert ntk.resolve_backend() == expected == ntk.resolve_backend("auto", "auto")
    assert ntk.resolve_backend("auto", "jacobian_contraction") == "neural_tangents"  # naming one selects NT
    assert ntk.resolve_backend("jax") == "jax"
    pure, shape = make("mlp")
    x = inputs(shape, 5)
    plan = ntk.plan_ntk(pure.apply, pure.params, x)  # default backend: "auto"
    assert plan.backend == expected
    k = ntk.empirical_ntk(pure.apply, pure.params, x)
    assert rel(k, ntk.empirical_ntk(pure.apply, pure.params, x, backend="jax")) < 1e-12
    assert {"backend": plan.backend, "implementation": plan.implementation} in ntk.backends_used()
    write_results(tmp_path, experiment="t", config={}, checks=[], wall_time_s=0.0)
    assert load_results(tmp_path)["ntk_backends"] == ntk.backends_used()


def test_auto_backend_falls_back_to_jax_when_neural_tangents_is_unavailable(monkeypatch):
    import stepwise._compat as compat

    monkeypatch.setattr(compat, "nt_unavailable_reason", lambda: "neural-tangents does not import (simulated)")
    assert ntk.resolve_backend() == "jax"
    pure, shape = make("mlp")
    x = inputs(shape, 4)
    assert ntk.plan_ntk(pure.apply, pure.params, x).backend == "jax"
    assert rel(ntk.empirical_ntk(pure.apply, pure.params, x),
               reference_ntk(pure.apply, pure.params, x, x)) < 1e-12
    with pytest.raises(ValueError, match="unknown NTK backend"):
        ntk.resolve_backend("torch")


def test_default_budget_uses_host_memory_on_a_cpu():
    assert ntk.accelerator_memory_bytes(jax.devices("cpu")[0]) is None
    if jax.devices()[0].platform == "cpu":  # MemAvailable moves between two reads: 10% (GBs) is far from 80%
        expected = ntk.DEFAULT_BUDGET_FRACTION * ntk.available_memory_bytes()
        assert abs(ntk._default_budget() - expected) <= 0.1 * expected


def test_structured_derivatives_is_refused():
    pure, shape = make("mlp")
    for call in (lambda: ntk.empirical_ntk(pure.apply, pure.params, inputs(shape, 2),
                                           implementation="structured_derivatives"),
                 lambda: ntk.ntk_fn(pure.apply, implementation="structured_derivatives")):
        with pytest.raises(ValueError, match="'structured_derivatives' implementation does not work"):
            call()


# ----------------------------------------------------------------------------------------------------------------
# Infinite width (stax) against wide networks.


def stax_distance(module, x):
    pure = pure_model(module)
    empirical = np.asarray(ntk.empirical_ntk(pure.apply, pure.params, x, backend="jax"))
    infinite = np.asarray(ntk.infinite_ntk(module, x))
    return float(np.linalg.norm(empirical - infinite) / np.linalg.norm(infinite))


def test_wide_mlp_approaches_the_stax_ntk():
    x = inputs((3, 3, 1), 5)
    widths = (16, 128, 1024)
    errors = [stax_distance(MLP((3, 3, 1), hidden=(h,), embed_dim=4, param_dtype=F64, rngs=nnx.Rngs(0)), x)
              for h in widths]
    # Finite-width fluctuations of the NTK shrink like 1 / sqrt(width): the distance must fall at every step and
    # be small at the widest.
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.1, errors


def test_wide_cnn_matches_the_stax_ntk():
    module = SmallCNN((4, 4, 2), channels=(256,), embed_dim=4, param_dtype=F64, rngs=nnx.Rngs(0))
    assert stax_distance(module, inputs((4, 4, 2), 4)) < 0.06  # measured 0.02 (0.05 at 32 channels)


def test_stax_network_refuses_what_it_cannot_mirror():
    with pytest.raises(ValueError, match="GroupNorm"):
        ntk.stax_network(SmallCNN((4, 4, 1), channels=(4,), norm="group", rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="mirrors"):
        ntk.stax_network(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
