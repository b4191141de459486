"""The device subset: what `make gpu-check` runs on the GPU, and `make test` on the CPU.

Every test runs on JAX's default device (the GPU there, the CPU here) and compares with the same computation
pinned to the CPU: jit, a data-parallel training run over all local devices, both NTK backends, determinism. The
comparisons are in float32 at ``precision="highest"`` (no TF32 / bf16 passes on a GPU), so the tolerances are those
of float32 round-off in a different summation order; the CPU-vs-CPU case is the same check with a trivially
matching order, which keeps the code path tested where no GPU exists.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stepwise import ntk
from stepwise.data import Augmentation
from stepwise.losses import barlow_twins_theory
from stepwise.models import MLP, ResNet18, pure_model
from stepwise.training import ssl

CPU = jax.devices("cpu")[0]
DEVICE = jax.devices()[0]
F32 = jnp.float32
# The MLP training comparison: float32 unit round-off times a generous growth factor for another summation order
# (fan-ins <= 36, two layers, a 12-step trajectory): far below a real difference (O(1) after one step). The ResNet
# and NTK comparisons take their bound from the CPU's own float32 error against float64 (see their docstrings).
RTOL_F32 = 1e-4


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def on(device, fn, *args):
    """``fn(*args)`` jitted with its inputs committed to ``device``."""
    with jax.default_device(device):
        args = jax.device_put(args, device)
        return np.asarray(jax.jit(fn)(*args))


@pytest.fixture(scope="module")
def resnet():
    """GroupNorm ResNet-18 at width 0.125 on 8x8 images, d = 4, float32; built abstractly with random parameters
    (kernels N(0, 1/fan_in), vectors 1 + N(0, 0.1^2)): Flax's initialisers cost ~20 s of CPU for its 60 arrays."""
    abstract = nnx.eval_shape(lambda: ResNet18((8, 8, 3), width=0.125, embed_dim=4, param_dtype=F32,
                                               rngs=nnx.Rngs(0)))
    pure = pure_model(abstract)
    leaves, treedef = jax.tree.flatten(pure.params)
    rng = np.random.default_rng(0)
    drawn = [rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1])) if len(leaf.shape) >= 2
             else 1 + 0.1 * rng.normal(size=leaf.shape) for leaf in leaves]
    pure = dataclasses.replace(pure, params=jax.tree.unflatten(treedef, [jnp.asarray(a, F32) for a in drawn]))
    x = rng.normal(size=(4, 8, 8, 3)).astype(np.float32)
    return pure, x


def test_device_is_what_jax_reports():
    assert DEVICE.platform in ("cpu", "gpu", "tpu") and len(jax.local_devices()) >= 1


def _f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def test_jitted_resnet_forward_and_gradient_match_the_cpu(resnet):
    """Float32 on the device is as close to a float64 CPU reference as float32 on the CPU is.

    The gradient of this GroupNorm ResNet amplifies round-off (normalisation over 2x2 maps divides by small
    deviations): float32 vs float32 on another device differed by 1.0e-4 of the largest entry on an H200, so no
    fixed float32 tolerance fits every network. The bound is the CPU's own float32 error on the same problem times
    10 (another summation order, cuDNN's algorithms); a TF32 or bf16 pass (unit round-off 2^-11 or 2^-8 against
    float32's 2^-24) would exceed it by orders of magnitude.
    """
    pure, x = resnet

    def loss(params, x):
        z = pure.apply(params, x)
        return jnp.sum(z * z)

    flat = lambda tree: np.concatenate([np.asarray(g, np.float64).ravel() for g in jax.tree.leaves(tree)])  # noqa: E731
    with jax.default_matmul_precision("highest"):
        z_dev, z_cpu = on(DEVICE, pure.apply, pure.params, x), on(CPU, pure.apply, pure.params, x)
        z_ref = on(CPU, pure.apply, _f64(pure.params), x.astype(np.float64))
        g_dev = flat(on_tree(DEVICE, jax.grad(loss), pure.params, x))
        g_cpu = flat(on_tree(CPU, jax.grad(loss), pure.params, x))
        g_ref = flat(on_tree(CPU, jax.grad(loss), _f64(pure.params), x.astype(np.float64)))
    assert z_dev.dtype == np.float32 and z_ref.dtype == np.float64
    assert rel(z_dev, z_ref) <= 10 * rel(z_cpu, z_ref) + 1e-6
    assert rel(g_dev, g_ref) <= 10 * rel(g_cpu, g_ref) + 1e-6


def on_tree(device, fn, *args):
    """``fn(*args)`` jitted on ``device``, its output pytree as NumPy."""
    with jax.default_device(device):
        return jax.tree.map(np.asarray, jax.jit(fn)(*jax.device_put(args, device)))


def _mlp_run(devices, seed=0):
    module = MLP((6, 6, 1), hidden=(32,), embed_dim=8, param_dtype=F32, rngs=nnx.Rngs(seed))
    pure = pure_model(module)
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(96, 6, 6, 1)).astype(np.float32)
    cfg = ssl.TrainConfig(steps=12, batch_size=8 * len(devices), lr=0.05, track_every=4, n_snapshot=8)
    with jax.default_matmul_precision("highest"):
        return ssl.train_ssl(pure.apply, None, pure.params, barlow_twins_theory, images[:64],
                             Augmentation(shift=1, noise_std=0.05), cfg, eval_images=images[64:], devices=devices)


def test_training_sharded_over_local_devices_matches_the_cpu():
    """The engine's data-parallel step over every local device (one GPU: a mesh of one) against the CPU."""
    devices = jax.local_devices()
    if len(devices) > 1 and DEVICE.platform == "cpu":
        devices = devices[:1]  # forced host devices: the CPU reference below runs on one
    run = _mlp_run(devices)
    ref = _mlp_run([CPU] * 1) if len(devices) == 1 else None
    assert np.all(np.isfinite(run.train_loss)) and run.train_loss.shape == (12,)
    if ref is not None:
        # 12 SGD steps amplify a round-off difference by at most the loss's local Lipschitz growth (measured
        # below 10x here): 10 * RTOL_F32 still separates it from any real difference (O(1) after one step).
        assert rel(run.train_loss, ref.train_loss) < 10 * RTOL_F32
        assert rel(run.cov_out, ref.cov_out) < 10 * RTOL_F32


def test_training_is_deterministic_on_the_device():
    a, b = _mlp_run(jax.local_devices()[:1]), _mlp_run(jax.local_devices()[:1])
    np.testing.assert_array_equal(a.train_loss, b.train_loss)
    np.testing.assert_array_equal(a.cov_out, b.cov_out)


@pytest.mark.parametrize("backend", ["jax", "neural_tangents"])
def test_ntk_backends_on_the_device_match_the_cpu_jax_backend(backend, resnet):
    from stepwise._compat import enable_x64, nt_unavailable_reason

    if backend == "neural_tangents" and nt_unavailable_reason() is not None:
        pytest.skip(nt_unavailable_reason())
    pure, x = resnet
    # One named implementation: "auto" would compile both of neural-tangents' to compare their costs.
    impl = "jacobian_contraction" if backend == "neural_tangents" else "auto"

    def kernel(device, params, x, **kw):
        with jax.default_device(device):
            return np.asarray(ntk.empirical_ntk(pure.apply, jax.device_put(params, device), jax.device_put(x, device),
                                                **kw))

    with jax.default_matmul_precision("highest"):
        ref = kernel(CPU, _f64(pure.params), x.astype(np.float64), backend="jax")  # x64 is on in the suite
        with enable_x64(False):
            cpu = kernel(CPU, pure.params, x, backend="jax")
            k = kernel(DEVICE, pure.params, x, backend=backend, implementation=impl)
    assert k.dtype == np.float32 and k.shape == (4, 4) and ref.dtype == np.float64
    # as in the gradient test: the device's float32 error within 10x the CPU's own on the same kernel
    assert rel(k, ref) <= 10 * rel(cpu, ref) + 1e-6
