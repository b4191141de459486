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
# float32 unit round-off times a generous growth factor for a different summation order over the reductions
# (fan-ins <= 576 here; sqrt(576) * 2^-24 ~ 1.4e-6 per layer, ~20 layers): far below any real bug (a wrong
# layout or a TF32 pass is ~1e-3 relative), far above the round-off.
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


def test_jitted_resnet_forward_and_gradient_match_the_cpu(resnet):
    pure, x = resnet

    def loss(params, x):
        z = pure.apply(params, x)
        return jnp.sum(z * z)

    with jax.default_matmul_precision("highest"):
        z_dev, z_cpu = on(DEVICE, pure.apply, pure.params, x), on(CPU, pure.apply, pure.params, x)
        grad = jax.grad(loss)
        g_dev = jax.tree.leaves(jax.tree.map(np.asarray, jax.jit(grad)(jax.device_put(pure.params, DEVICE),
                                                                     jax.device_put(x, DEVICE))))
        with jax.default_device(CPU):
            g_cpu = jax.tree.leaves(jax.tree.map(np.asarray, jax.jit(grad)(jax.device_put(pure.params, CPU),
                                                                         jax.device_put(x, CPU))))
    assert z_dev.dtype == np.float32 and rel(z_dev, z_cpu) < RTOL_F32
    flat = lambda leaves: np.concatenate([g.ravel() for g in leaves])  # noqa: E731
    assert rel(flat(g_dev), flat(g_cpu)) < RTOL_F32


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
    with jax.default_matmul_precision("highest"), enable_x64(False):
        with jax.default_device(CPU):
            ref = np.asarray(ntk.empirical_ntk(pure.apply, jax.device_put(pure.params, CPU), jax.device_put(x, CPU),
                                               backend="jax"))
        with jax.default_device(DEVICE):
            k = np.asarray(ntk.empirical_ntk(pure.apply, jax.device_put(pure.params, DEVICE),
                                             jax.device_put(x, DEVICE), backend=backend,
                                             implementation=impl))
    assert k.dtype == np.float32 and k.shape == (4, 4)
    assert rel(k, ref) < RTOL_F32
