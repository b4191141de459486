"""Models: shapes, the pure (params, x) -> y form (eager == jit == vmap), init_scale, a NumPy reference, gradients.

Tiny widths throughout (ResNet18 at width 0.125, i.e. 8..64 channels). On CPU the cost is XLA compilation, not
arithmetic: every new (op, shape, dtype) compiles once, initialisers included. So read-only models are built once
(`_model`), float64 variants are made by casting float32 parameters rather than re-initialising, test data come from
NumPy, and ResNet18 runs eagerly only once (float64, 16x16). The ResNet18 gradient check is marked slow.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stepwise.models import MLP, MODELS, PureModel, ResNet18, SmallCNN, build_model, param_count, pure_model

EPS = np.finfo(np.float64).eps  # float64 tolerances below are round-off bounds (fan-in x eps x magnitude)

# (name, input_shape, kwargs): one list, checked several ways below.
CASES = [
    ("mlp", (8, 8, 3), dict(hidden=(16, 12), embed_dim=6)),
    ("cnn", (8, 8, 3), dict(channels=(8, 16), embed_dim=6)),
    ("cnn", (7, 5, 3), dict(channels=(8, 16, 16), embed_dim=6, norm="group")),  # odd sizes; pooling stops at 1
    ("resnet18", (8, 8, 3), dict(width=0.125)),
    ("resnet18", (16, 16, 3), dict(width=0.125, embed_dim=6)),
]
IDS = [f"{name}-{'x'.join(map(str, shape))}-{i}" for i, (name, shape, _) in enumerate(CASES)]
SMALL = CASES[:3]  # cheap enough to run eagerly in float32 and float64
SMALL_IDS = IDS[:3]
N = 3


@functools.cache
def _cached_model(name, shape, items):
    return build_model(name, shape, **dict(items))


def _model(name, shape, **kwargs):
    """A shared model, never modified: tests that modify a model build their own."""
    return _cached_model(name, shape, tuple(sorted(kwargs.items())))


# Test data from NumPy: jax.random would compile once per new (shape, dtype), which costs more than the tests.
def _images(shape, n=N, dtype=jnp.float32, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, *shape)), dtype)


def _as_f64(tree):
    return jax.tree.map(lambda p: p.astype(jnp.float64), tree)


def _leaves_by_path(module):
    """{'backbone/layers/0/kernel': array, ...} for every nnx.Param."""
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(module, nnx.Param))
    return {"/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)): v for path, v in leaves}


def _random_like(tree, seed, scale=0.3):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(scale * rng.normal(size=x.shape), x.dtype), tree)


def _vdot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# 1. shapes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("projector", [(), (7, 5)])
@pytest.mark.parametrize(("name", "shape", "kwargs"), CASES, ids=IDS)
def test_output_shapes(name, shape, kwargs, projector):
    m = _model(name, shape, projector=projector, **kwargs)
    x = _images(shape)
    feats, out = jax.eval_shape(m.features, x), jax.eval_shape(m, x)
    feature_dim = kwargs.get("embed_dim", 64)  # ResNet18 at width 0.125 without embed_dim: 512 / 8
    assert m.feature_dim == feature_dim and feats.shape == (N, feature_dim)
    assert m.out_dim == (projector[-1] if projector else feature_dim) and out.shape == (N, m.out_dim)
    pure = pure_model(m)
    assert isinstance(pure, PureModel)
    assert (pure.out_dim, pure.feature_dim) == (m.out_dim, m.feature_dim)
    assert jax.eval_shape(pure.apply, pure.params, x).shape == out.shape
    assert jax.eval_shape(pure.features, pure.params, x).shape == feats.shape


@pytest.mark.parametrize(("name", "shape", "kwargs"), SMALL, ids=SMALL_IDS)
def test_no_projector_means_call_is_features(name, shape, kwargs):
    m = _model(name, shape, projector=(), **kwargs)
    x = _images(shape)
    np.testing.assert_array_equal(m(x), m.features(x))


# 2. the pure function: equals the module, eager == jit == vmap -----------------------------------------------


def _check_eager_jit_vmap(fn, params, x, tol):
    eager = fn(params, x)
    jitted = jax.jit(fn)(params, x)
    per_example = jax.jit(jax.vmap(fn, in_axes=(None, 0)))(params, x[:, None])  # each slice: a batch of one
    assert eager.dtype == jitted.dtype == per_example.dtype == x.dtype
    np.testing.assert_allclose(jitted, eager, rtol=tol, atol=tol)
    np.testing.assert_allclose(per_example[:, 0], eager, rtol=tol, atol=tol)


@pytest.mark.parametrize(("name", "shape", "kwargs"), SMALL, ids=SMALL_IDS)
def test_pure_equals_module_and_eager_jit_vmap_float32(name, shape, kwargs):
    m = _model(name, shape, projector=(5,), **kwargs)
    pure = pure_model(m)
    x = _images(shape)
    np.testing.assert_array_equal(pure.apply(pure.params, x), m(x))
    np.testing.assert_array_equal(pure.features(pure.params, x), m.features(x))
    _check_eager_jit_vmap(pure.apply, pure.params, x, 1e-6)


@pytest.mark.parametrize(("name", "shape", "kwargs"), [*SMALL, CASES[4]], ids=[*SMALL_IDS, IDS[4]])
def test_pure_equals_module_and_eager_jit_vmap_float64(name, shape, kwargs):
    """ResNet18 only here, and at 16x16: at 8x8 its last stage normalises GroupNorm groups of 2 values at 1x1
    resolution, nearly a sign function, which amplifies rounding differences between XLA programs ~1e4-fold
    (jit vs eager: ~1e-5 in float32, ~1e-12 in float64)."""
    m = build_model(name, shape, projector=(5,), **kwargs)
    nnx.update(m, _as_f64(nnx.state(m, nnx.Param)))
    pure = pure_model(m)
    x = _images(shape, dtype=jnp.float64)
    np.testing.assert_array_equal(pure.apply(pure.params, x), m(x))
    np.testing.assert_array_equal(pure.features(pure.params, x), m.features(x))
    # XLA may reorder each conv / dense sum under jit or vmap: per layer ~sqrt(fan-in) eps relative for random-sign
    # terms (fan-in <= 9 x 64 = 576 here), over <= 20 layers ~20 x 24 eps = 1e-13 of the output scale; 1e-12 is
    # 10x that (measured <= 1.6e-15, ResNet18 16x16). The worst case 20 x 576 eps = 2.6e-12 needs every rounding
    # to align; the 8x8 ResNet18 is excluded because its GroupNorm amplifies rounding ~1e4-fold (see docstring).
    _check_eager_jit_vmap(pure.apply, pure.params, x, 1e-12)


def test_param_dtype():
    m = MLP((2, 2, 1), hidden=(), embed_dim=2, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    assert {p.dtype for p in jax.tree.leaves(nnx.state(m, nnx.Param))} == {jnp.dtype(jnp.float64)}
    assert m(jnp.ones((1, 2, 2, 1), jnp.float64)).dtype == jnp.float64


def test_pure_model_is_decoupled_from_module():
    m = build_model(*CASES[0][:2], **CASES[0][2])
    pure = pure_model(m)
    x = _images(CASES[0][1])
    before = pure.apply(pure.params, x)
    nnx.update(m, _random_like(nnx.state(m, nnx.Param), seed=1))
    np.testing.assert_array_equal(pure.apply(pure.params, x), before)
    assert not np.array_equal(m(x), before)


# 3. init_scale ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "shape", "kwargs"), CASES[:4], ids=IDS[:4])
def test_init_scale_scales_kernels_only(name, shape, kwargs):
    s = 0.3
    base = _leaves_by_path(build_model(name, shape, projector=(5,), seed=4, **kwargs))
    small = _leaves_by_path(build_model(name, shape, projector=(5,), seed=4, init_scale=s, **kwargs))
    assert base.keys() == small.keys()
    assert {path.rsplit("/", 1)[-1] for path in base} <= {"kernel", "bias", "scale"}
    for path, w in base.items():
        kind = path.rsplit("/", 1)[-1]
        if kind == "kernel":
            np.testing.assert_array_equal(small[path], s * w, err_msg=path)
        else:  # biases start at 0, GroupNorm scales at 1, whatever init_scale
            np.testing.assert_array_equal(small[path], w, err_msg=path)
            np.testing.assert_array_equal(w, np.zeros_like(w) if kind == "bias" else np.ones_like(w), err_msg=path)


@pytest.mark.parametrize(
    ("name", "kwargs", "n_layers"),
    [
        ("mlp", dict(hidden=(16, 12), embed_dim=6), 3),
        ("mlp", dict(hidden=(16, 12), embed_dim=6, projector=(5,)), 4),
        ("cnn", dict(channels=(8, 16), embed_dim=6, norm="none"), 3),
        ("cnn", dict(channels=(8, 16), embed_dim=6, norm="none", projector=(5,)), 4),
    ],
)
@pytest.mark.parametrize("s", [0.5, 0.3])
def test_init_scale_homogeneity(name, kwargs, n_layers, s):
    """Zero biases + ReLU (positively homogeneous) + no normalisation: output scales by s**L, L = kernel layers.

    s=0.5 scales every intermediate by a power of two, exactly, so it must agree bit for bit; s=0.3 up to float32
    rounding of the scaled kernels.
    """
    shape = (8, 8, 3)
    x = _images(shape)
    y1 = _model(name, shape, **kwargs)(x)
    ys = build_model(name, shape, init_scale=s, **kwargs)(x)
    assert float(jnp.min(jnp.abs(y1))) > 0
    if s == 0.5:
        np.testing.assert_array_equal(ys, s**n_layers * y1)
    else:
        np.testing.assert_allclose(ys, s**n_layers * y1, rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(ys))))


# 4. the MLP against NumPy ---------------------------------------------------------------------------------------


def test_mlp_matches_numpy(rng):
    shape = (8, 8, 3)
    m = build_model("mlp", shape, hidden=(16, 12), embed_dim=6, projector=(7, 5))
    # float64 random parameters, biases included (they start at zero, which would leave them untested).
    nnx.update(m, _random_like(_as_f64(nnx.state(m, nnx.Param)), seed=3))

    def dense(h, layers):  # Linear, then ReLU + Linear for each further layer
        for i, layer in enumerate(layers):
            if i > 0:
                h = np.maximum(h, 0.0)
            h = h @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...])
        return h

    x = rng.normal(size=(5, *shape))
    feats = dense(x.reshape(5, -1), m.backbone.layers)
    out = dense(feats, m.projector.layers)

    def magnitude(h, layers):  # the same network on |x|, |W|, |b| (|relu(h)| <= |h|): the sum of |terms|
        for layer in layers:
            h = h @ np.abs(np.asarray(layer.kernel[...])) + np.abs(np.asarray(layer.bias[...]))
        return h

    # Each output is within (sum of fan-ins) eps of the sum of its absolute terms, whatever the summation order
    # (XLA vs BLAS): absolute bounds, since outputs can cancel to ~0 (measured 5.6e-16 against ~1e-12).
    fan_in = 192 + 16 + 12
    mag_feats = magnitude(np.abs(x).reshape(5, -1), m.backbone.layers)
    atol_feats = 2 * fan_in * EPS * mag_feats.max()
    atol_out = 2 * (fan_in + 6 + 7) * EPS * magnitude(mag_feats, m.projector.layers).max()
    np.testing.assert_allclose(m.features(jnp.asarray(x)), feats, rtol=0, atol=atol_feats)
    np.testing.assert_allclose(m(jnp.asarray(x)), out, rtol=0, atol=atol_out)
    pure = pure_model(m)
    np.testing.assert_allclose(pure.apply(pure.params, jnp.asarray(x)), out, rtol=0, atol=atol_out)


# 5-6. derivatives with respect to params --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "shape", "kwargs"), SMALL, ids=SMALL_IDS)
def test_grad_matches_finite_difference(name, shape, kwargs):
    pure = pure_model(_model(name, shape, projector=(5,), **kwargs))
    params = _random_like(_as_f64(pure.params), seed=5, scale=0.5)  # float64, nonzero biases
    x = _images(shape, n=2, dtype=jnp.float64)

    # One compiled function for both the gradient and the finite-difference values (compilation dominates here).
    f_and_grad = jax.jit(jax.value_and_grad(lambda p: jnp.sum(jnp.sin(pure.apply(p, x)))))
    _, grad = f_and_grad(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grad))
    v = _random_like(params, seed=6, scale=1.0)
    eps = 1e-6
    f_plus, _ = f_and_grad(jax.tree.map(lambda p, d: p + eps * d, params, v))
    f_minus, _ = f_and_grad(jax.tree.map(lambda p, d: p - eps * d, params, v))
    np.testing.assert_allclose(_vdot(grad, v), (f_plus - f_minus) / (2 * eps), rtol=1e-6)


@pytest.mark.slow
def test_resnet18_grad_matches_finite_difference():
    test_grad_matches_finite_difference(*CASES[4])  # 16x16: see the float64 eager/jit/vmap test for why not 8x8


@pytest.mark.parametrize(("name", "shape", "kwargs"), SMALL, ids=SMALL_IDS)
def test_jacrev_wrt_params_matches_jvp(name, shape, kwargs):
    pure = pure_model(_model(name, shape, projector=(5,), **kwargs))
    params, x = _as_f64(pure.params), _images(shape, n=2, dtype=jnp.float64)
    jac = jax.jit(jax.jacrev(pure.apply))(params, x)
    assert jax.tree.structure(jac) == jax.tree.structure(params)
    for j, p in zip(jax.tree.leaves(jac), jax.tree.leaves(params)):
        assert j.shape == (2, pure.out_dim, *p.shape)
    # Reverse mode (the full Jacobian) contracted with a direction == forward mode along it.
    v = _random_like(params, seed=7, scale=1.0)
    contracted = sum(jnp.tensordot(j, d, axes=d.ndim) for j, d in zip(jax.tree.leaves(jac), jax.tree.leaves(v)))
    _, tangent = jax.jit(lambda p, d: jax.jvp(lambda q: pure.apply(q, x), (p,), (d,)))(params, v)
    # J v summed over all P parameters (reverse) vs propagated (forward): within ~P eps of sum |J| |v| for any
    # order; absolute, since entries may cancel (measured 1.4e-14 against ~1e-10).
    n_params = sum(p.size for p in jax.tree.leaves(params))
    magnitude = sum(jnp.tensordot(jnp.abs(j), jnp.abs(d), axes=d.ndim)
                    for j, d in zip(jax.tree.leaves(jac), jax.tree.leaves(v)))
    np.testing.assert_allclose(contracted, tangent, rtol=0, atol=2 * n_params * EPS * float(jnp.max(magnitude)))


# 7. ResNet18 ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 16, 32])
def test_resnet18_sizes(size):
    pure = pure_model(_model("resnet18", (size, size, 3), width=0.125, projector=(5,)))
    out = jax.jit(pure.apply)(pure.params, _images((size, size, 3), n=2))
    assert out.shape == (2, 5) and bool(jnp.all(jnp.isfinite(out)))
    assert pure.feature_dim == 64


def test_resnet18_96x96():
    pure = pure_model(_model("resnet18", (96, 96, 3), width=0.125))
    out = jax.jit(pure.apply)(pure.params, _images((96, 96, 3), n=1))
    assert out.shape == (1, 64) and bool(jnp.all(jnp.isfinite(out)))


def test_resnet18_param_count():
    """Width 1 without a head is the CIFAR ResNet-18 backbone: 11,173,962 parameters with BatchNorm and a 10-way
    classifier, minus the classifier's 512 * 10 + 10; GroupNorm has BatchNorm's two affine vectors per layer."""
    abstract = nnx.eval_shape(lambda: ResNet18((32, 32, 3), rngs=nnx.Rngs(0)))  # shapes only, nothing allocated
    n = param_count(nnx.state(abstract, nnx.Param))
    assert abs(n - 11.17e6) / 11.17e6 < 0.01
    assert n == 11_173_962 - (512 * 10 + 10)
    assert abstract.feature_dim == 512


def test_resnet18_width_rounding():
    m = nnx.eval_shape(lambda: ResNet18((8, 8, 3), width=0.3, embed_dim=10, rngs=nnx.Rngs(0)))
    channels = [m.stem.conv.kernel.shape[-1]] + [b.conv2.conv.kernel.shape[-1] for b in m.blocks]
    assert channels == [16, 16, 16, 40, 40, 80, 80, 152, 152]  # 64 * 0.3 = 19.2 -> 16, 128 * 0.3 = 38.4 -> 40, ...
    assert (m.feature_dim, m.out_dim) == (10, 10)


def test_resnet_blocks_per_stage():
    """``blocks=1`` is a ResNet-10: one basic block per stage, the same stem, channels, strides and shortcuts."""
    m10 = nnx.eval_shape(lambda: ResNet18((32, 32, 3), width=0.125, blocks=1, rngs=nnx.Rngs(0)))
    m18 = nnx.eval_shape(lambda: ResNet18((32, 32, 3), width=0.125, rngs=nnx.Rngs(0)))
    assert len(m10.blocks) == 4 and len(m18.blocks) == 8
    assert [b.conv2.conv.kernel.shape[-1] for b in m10.blocks] == [8, 16, 32, 64]
    assert [b.conv1.conv.strides for b in m10.blocks] == [b.conv1.conv.strides for b in m18.blocks[::2]]
    assert [b.shortcut is None for b in m10.blocks] == [True, False, False, False]
    assert m10.feature_dim == m18.feature_dim == 64
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="blocks"):
            ResNet18((32, 32, 3), width=0.125, blocks=bad, rngs=nnx.Rngs(0))

def test_param_count_hand_computed():
    m = MLP((2, 2, 1), hidden=(3,), embed_dim=2, projector=(5,), rngs=nnx.Rngs(0))
    assert param_count(pure_model(m).params) == (4 * 3 + 3) + (3 * 2 + 2) + (2 * 5 + 5)


# 8. errors ------------------------------------------------------------------------------------------------------


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"unknown model 'vgg'.*'cnn', 'mlp', 'resnet18'"):
        build_model("vgg", (8, 8, 3))


def test_unknown_kwarg_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"'widht'.*valid keywords.*'width'"):
        build_model("resnet18", (8, 8, 3), widht=0.125)
    with pytest.raises(ValueError, match="'rngs'"):  # build_model owns the seed
        build_model("mlp", (8, 8, 3), rngs=nnx.Rngs(0))


def test_registry():
    assert MODELS == {"mlp": MLP, "cnn": SmallCNN, "resnet18": ResNet18}
    assert type(_model(*CASES[1][:2], **CASES[1][2])) is SmallCNN


@pytest.mark.parametrize("shape", [(4, 4, 3), (7, 32, 3)])
def test_resnet18_rejects_small_images(shape):
    with pytest.raises(ValueError, match=r"too small.*>= 8"):
        ResNet18(shape, width=0.125, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("bad", [(8, 8), (8, 8, 0), (8.0, 8, 3)])
def test_malformed_input_shape(bad):
    with pytest.raises(ValueError, match="input_shape must be"):
        MLP(bad, rngs=nnx.Rngs(0))


def test_bad_norm_and_width():
    with pytest.raises(ValueError, match="norm"):
        SmallCNN((8, 8, 3), norm="batch", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="width"):
        ResNet18((8, 8, 3), width=0.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="init_scale"):
        MLP((2, 2, 1), init_scale=0.0, rngs=nnx.Rngs(0))


def test_small_cnn_pooling_stops_at_size_one():
    m = _model(*CASES[2][:2], **CASES[2][2])  # 7x5 -> 3x2 -> 1x1 -> (no pooling)
    assert m.pool_windows == ((2, 2), (2, 2), (1, 1))


@pytest.mark.parametrize(("name", "shape", "kwargs"), CASES, ids=IDS)
def test_wrong_image_shape_at_call_time(name, shape, kwargs):
    m = _model(name, shape, **kwargs)
    pure = pure_model(m)
    h, w, c = shape
    for wrong in [(2, h, w, c + 1), (2, h + 8, w + 8, c), (h, w, c)]:
        x = jnp.zeros(wrong, jnp.float32)
        msg = re.escape(f"(N, {h}, {w}, {c})") + ".*" + re.escape(str(wrong))  # names both shapes
        with pytest.raises(ValueError, match=msg):
            m(x)
        with pytest.raises(ValueError, match=msg):
            jax.jit(pure.apply)(pure.params, x)


# 9. determinism -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "shape", "kwargs"), CASES[:4], ids=IDS[:4])
def test_seed_determinism(name, shape, kwargs):
    a = _leaves_by_path(build_model(name, shape, seed=0, **kwargs))
    b = _leaves_by_path(build_model(name, shape, seed=0, **kwargs))
    c = _leaves_by_path(build_model(name, shape, seed=1, **kwargs))
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=path)
    assert all(not np.array_equal(a[p], c[p]) for p in a if p.endswith("kernel"))


# 10. the CPU program: every convolution's input is stored once -----------------------------------------------


def test_stored_is_the_identity_in_value_and_derivatives():
    """``_stored`` (an opaque identity on the CPU) changes no value and no derivative, eagerly, under jit, vmap,
    jvp and grad (bitwise: it computes nothing)."""
    from stepwise.models.nets import _stored

    x = _images((5, 4, 3), n=2)
    t = _images((5, 4, 3), n=2, seed=1)
    np.testing.assert_array_equal(_stored(x), x)
    np.testing.assert_array_equal(jax.jit(_stored)(x), x)
    np.testing.assert_array_equal(jax.vmap(_stored)(x), x)  # a batched predicate: the cond becomes a select
    primal, tangent = jax.jvp(_stored, (x,), (t,))
    np.testing.assert_array_equal(primal, x)
    np.testing.assert_array_equal(tangent, t)
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.vdot(_stored(v), t))(x), t)
    nan = x.at[0, 0, 0, 0].set(jnp.nan)  # the other branch (x + 0.0) is the identity too
    np.testing.assert_array_equal(jax.jit(_stored)(nan), nan)


@pytest.mark.parametrize(("name", "shape", "kwargs"), [CASES[3], CASES[4]], ids=[IDS[3], IDS[4]])
def test_cpu_training_step_stores_each_convolution_input(name, shape, kwargs):
    """The compiled CPU gradient holds one conditional per stored convolution input (XLA keeps them: they are what
    stops it recomputing GroupNorm / ReLU inside the kernel-gradient transposes), and the gradient is the one of the
    same network without them."""
    from unittest import mock

    from stepwise.models import nets

    m = _model(name, shape, **kwargs)
    pure = pure_model(m)
    x = _images(shape)

    def loss(params):
        return jnp.sum(pure.apply(params, x) ** 2)

    grad = jax.jit(jax.grad(loss))
    text = grad.lower(pure.params).compile().as_text()
    n_convs = sum(isinstance(v, nnx.Conv) for _, v in nnx.iter_graph(m))
    stored = 1 + 2 * len(m.blocks)  # the stem's input and each block's two
    assert n_convs >= stored
    assert len(re.findall(r"= \S+ conditional\(", text)) >= stored
    with mock.patch.object(nets, "_stored", lambda v: v):
        plain = jax.jit(jax.grad(loss))(pure.params)
    # The same arithmetic in another fusion: XLA may round a fused recomputation differently (float32, <= 20 layers
    # of fan-in <= 9 x 64, ~20 x 24 eps = 6e-5 relative at worst for random-sign sums; measured <= 1e-6).
    for a, b in zip(jax.tree.leaves(grad(pure.params)), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))


# (input shape, channels, groups, param_dtype, compute dtype): one channel per group (the ResNet's first stages),
# several, an odd (H, W), a 3-D input, and bf16 compute with float32 parameters.
GN_CASES = [
    ((4, 8, 8, 16), 16, 16, jnp.float32, None),
    ((3, 5, 7, 40), 40, 8, jnp.float32, None),
    ((3, 5, 7, 40), 40, 8, jnp.float64, None),
    ((2, 9, 64), 64, 32, jnp.float64, None),
    ((2, 6, 6, 64), 64, 32, jnp.float32, jnp.bfloat16),
]


def _gn_pair(channels, groups, param_dtype, dtype):
    """Flax's GroupNorm and ours with the same random scale and bias."""
    from stepwise.models.nets import GroupNorm

    rng = np.random.default_rng(channels)
    scale, bias = rng.normal(size=(2, channels))
    mods = []
    for cls in (nnx.GroupNorm, GroupNorm):
        m = cls(channels, num_groups=groups, use_fast_variance=False, param_dtype=param_dtype, dtype=dtype,
                rngs=nnx.Rngs(0))
        m.scale[...] = jnp.asarray(scale, param_dtype)
        m.bias[...] = jnp.asarray(bias, param_dtype)
        mods.append(m)
    return mods


@pytest.mark.parametrize(("shape", "channels", "groups", "param_dtype", "dtype"), GN_CASES,
                         ids=[f"{'x'.join(map(str, c[0]))}-g{c[2]}-{jnp.dtype(c[3]).name}-{c[4] and 'bf16'}"
                              for c in GN_CASES])
def test_group_norm_matches_flax(shape, channels, groups, param_dtype, dtype):
    """``nets.GroupNorm`` (a hand-written derivative rule) against ``nnx.GroupNorm(use_fast_variance=False)``: the
    output, the gradients w.r.t. input, scale and bias, and a forward-mode tangent (the NTK's), in each dtype.

    Tolerance: both evaluate the same two-pass formula in a different order, and each gradient entry is a sum of at
    most m = (values per group) products of O(1) terms, so they differ by at most ~m * eps of the largest entry
    (a worst-case summation bound, independent of the BLAS). bf16: each rounding to bf16 errs by at most 2^-8
    relative (half a unit in the last place), so outputs rounded once on each side differ by up to 2^-7, and
    gradients, which pass two bf16 casts (the output's and the input's) on each side, by up to 4 x 2^-8 = 2^-6
    (Flax's order of operations differs between versions, so its bf16 output is not bitwise reproducible)."""
    from stepwise._compat import standard_dtype_promotion

    ref, ours = _gn_pair(channels, groups, param_dtype, dtype)
    x = _images(shape[1:], n=shape[0], dtype=param_dtype, seed=1) * 3 + 1
    g = _images(shape[1:], n=shape[0], dtype=param_dtype, seed=2)
    m = int(np.prod(shape[1:-1])) * channels // groups
    eps = float(jnp.finfo(param_dtype).eps)
    out_tol = 2.0**-7 if dtype is not None else 4 * m * eps

    def close(a, b, tol):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert np.max(np.abs(a - b)) <= tol * max(1.0, np.max(np.abs(b))), (np.max(np.abs(a - b)), np.max(np.abs(b)))

    def grads(mod):
        graph, state = nnx.split(mod)
        return jax.grad(lambda x, s: jnp.sum(g * nnx.merge(graph, s)(x).astype(param_dtype)), argnums=(0, 1))(x, state)

    with standard_dtype_promotion():
        y_ref, y = ref(x), ours(x)
        assert y.dtype == y_ref.dtype and y.shape == shape
        close(y, y_ref, out_tol)
        for a, b in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(ref)), strict=True):
            close(a, b, 2.0**-6 if dtype is not None else 4 * m * eps)
        t = _images(shape[1:], n=shape[0], dtype=param_dtype, seed=3)
        close(jax.jvp(ours, (x,), (t,))[1], jax.jvp(ref, (x,), (t,))[1], out_tol)


def test_group_norm_eager_jit_vmap_and_second_order():
    """``group_norm`` eager == jit == vmap (over examples, each a batch of one), and its Hessian-vector product
    equals that of the plain formula (the rule's tangent is differentiable again), in float64."""
    from stepwise.models.nets import group_norm

    x = _images((4, 5, 12), n=3, dtype=jnp.float64, seed=4)
    rng = np.random.default_rng(5)
    scale, bias = (jnp.asarray(v, jnp.float64) for v in rng.normal(size=(2, 12)))

    def f(x):
        return group_norm(x, scale, bias, 3, 1e-6)

    def plain(x):
        xg = x.reshape(3, -1, 3, 4)
        d = xg - xg.mean(axis=(1, 3), keepdims=True)
        y = d / jnp.sqrt((d * d).mean(axis=(1, 3), keepdims=True) + 1e-6)
        return (y * scale.reshape(1, 1, 3, 4) + bias.reshape(1, 1, 3, 4)).reshape(x.shape)

    y = f(x)
    np.testing.assert_allclose(y, plain(x), rtol=0, atol=64 * 80 * EPS)  # 80 values per group, O(1) entries
    np.testing.assert_allclose(jax.jit(f)(x), y, rtol=0, atol=64 * 80 * EPS)
    np.testing.assert_allclose(jax.vmap(lambda v: f(v[None])[0])(x), y, rtol=0, atol=64 * 80 * EPS)
    w = _images((4, 5, 12), n=3, dtype=jnp.float64, seed=6)

    def hvp(fn):
        return jax.jvp(jax.grad(lambda v: jnp.sum(jnp.sin(fn(v)) * w)), (x,), (w,))[1]

    np.testing.assert_allclose(hvp(f), hvp(plain), rtol=0, atol=1e3 * 80 * EPS * float(jnp.max(jnp.abs(hvp(plain)))))


def test_group_norm_rejects_what_it_does_not_compute():
    from stepwise.models.nets import GroupNorm

    m = GroupNorm(8, num_groups=4, use_fast_variance=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="two-pass variance"):
        m(jnp.ones((2, 4, 4, 8)))


@pytest.mark.parametrize(("shape", "groups", "param_shape", "match"), [
    ((8,), 4, (8,), "x must be"),
    ((2, 4, 6), 4, (6,), "divisible by groups"),
    ((2, 4, 8), 4, (4,), "one entry per channel"),
])
def test_group_norm_rejects_bad_shapes(shape, groups, param_shape, match):
    from stepwise.models.nets import group_norm

    with pytest.raises(ValueError, match=match):
        group_norm(jnp.ones(shape), jnp.ones(param_shape), jnp.zeros(param_shape), groups, 1e-6)
