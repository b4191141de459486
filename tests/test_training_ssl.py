"""The SSL training engine: one jitted step, determinism, resume, data parallelism, tracking and bad input."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tiny_mlp import apply, features, init_mlp

from stepwise.data import Augmentation, make_pairs
from stepwise.errors import DivergenceError
from stepwise.losses import barlow_twins_theory
from stepwise.training import ssl

N_IMAGES, SHAPE = 48, (6, 6, 1)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(size=(N_IMAGES, *SHAPE))


AUG = Augmentation(shift=1, noise_std=0.05)


def run(images, steps=20, **kw):
    cfg = ssl.TrainConfig(steps=steps, batch_size=kw.pop("batch_size", 16), lr=kw.pop("lr", 0.05),
                          track_every=kw.pop("track_every", 5), n_snapshot=8, **kw.pop("cfg", {}))
    return ssl.train_ssl(apply, features, init_mlp(jax.random.key(1)), barlow_twins_theory, images[:40], AUG, cfg,
                         eval_images=images[40:], **kw)


def test_first_step_is_plain_sgd_on_the_documented_batch_and_views(images):
    params = init_mlp(jax.random.key(1))
    out = run(images, steps=1, track_every=1)
    key = jax.random.fold_in(jax.random.key(0), 0)
    k_idx, k_aug = jax.random.split(key)
    idx = jax.random.choice(k_idx, 40, (16,), replace=False)
    v1, v2 = make_pairs(AUG, k_aug, jnp.asarray(images[:40])[idx])
    loss, grads = jax.value_and_grad(lambda p: barlow_twins_theory(apply(p, v1), apply(p, v2)))(params)
    expected = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
    # The engine's jitted step vs eager ops: the same float64 arithmetic in another order. Products of width <= 36
    # are within ~36 eps of their sums of |terms|: ~1e-14 on the loss (~7, no cancellation) and ~1e-13 relative on
    # parameters after one step (measured 1.3e-16 and 4e-14), against rtol 1e-12 / 1e-10.
    np.testing.assert_allclose(out.train_loss[0], loss, rtol=1e-12)
    for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_tracking_records_the_documented_spectra(images):
    out = run(images, steps=10)
    np.testing.assert_array_equal(out.step, [0, 5, 10])
    assert out.cov_out.shape == (3, 8) and out.cov_feat.shape == (3, 16) and out.snapshots.shape == (3, 8, 8)
    assert out.train_loss.shape == (10,)
    # The covariance spectrum at the output equals NumPy's on the tracked embeddings of the fixed eval views.
    e1, _ = make_pairs(AUG, jax.random.fold_in(jax.random.key(0), 2**31 - 1), jnp.asarray(images[40:]))
    z = np.asarray(apply(out.params, e1))
    zc = z - z.mean(0)
    # Eigenvalues of the 8 x 8 covariance from two eigensolvers: absolutely within ~8 eps lambda_max = 2.5e-16
    # (lambda_max = 0.14); atol 1e-14 is 40x that and covers the rank-deficient zeros (8 centred samples), the
    # rtol the rest (measured 8e-17).
    np.testing.assert_allclose(out.cov_out[-1], np.linalg.eigvalsh(zc.T @ zc / 8)[::-1], rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(out.snapshots[-1], z, rtol=1e-10)  # the same apply on the same views (identical)
    # sorted in decreasing order: the differences are <= 0 exactly, the 1e-15 is only slack
    assert np.all(np.diff(out.cov_out, axis=1) <= 1e-15) and np.all(np.diff(out.bt_feat, axis=1) <= 1e-15)
    assert 0 <= out.tracking_fraction <= 1


def test_same_seed_same_run_and_other_seed_differs(images):
    a, b = run(images), run(images)
    np.testing.assert_array_equal(a.train_loss, b.train_loss)
    np.testing.assert_array_equal(a.cov_out, b.cov_out)
    c = run(images, cfg={"seed": 3})
    assert not np.array_equal(a.train_loss, c.train_loss)


def test_resume_reproduces_the_uninterrupted_run(images, tmp_path):
    full = run(images, steps=20)
    ckpt = tmp_path / "ckpt.msgpack"
    first = run(images, steps=10, checkpoint=ckpt)
    assert ckpt.is_file() and first.train_loss.shape == (10,)
    resumed = run(images, steps=20, checkpoint=ckpt, resume=True)
    np.testing.assert_array_equal(resumed.step, full.step)
    # The same compiled step on the same batches and a float64 checkpoint (measured bit-identical); the bounds of
    # the first test are the ceiling.
    np.testing.assert_allclose(resumed.train_loss, full.train_loss, rtol=1e-12)
    np.testing.assert_allclose(resumed.cov_out, full.cov_out, rtol=1e-10, atol=1e-14)
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(full.params)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_resume_works_with_momentum_state(images, tmp_path):
    cfg = {"optimizer": "momentum"}
    full = run(images, steps=12, cfg=cfg)
    run(images, steps=6, checkpoint=tmp_path / "c", cfg=cfg)
    resumed = run(images, steps=12, checkpoint=tmp_path / "c", resume=True, cfg=cfg)
    np.testing.assert_allclose(resumed.train_loss, full.train_loss, rtol=1e-12)


def test_divergence_stops_with_step_quantity_and_hint(images):
    with pytest.raises(DivergenceError) as err:
        run(images, steps=200, lr=1e6, track_every=50)
    assert err.value.step < 200 and "training loss" in str(err.value) and "learning rate" in str(err.value)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"batch_size": 41}, "larger than"),
        ({"lr": -1.0}, "learning rate"),
        ({"lr": 0.0}, "learning rate"),
        ({"cfg": {"optimizer": "lion"}}, "optimizer"),
    ],
)
def test_bad_input_fails_before_training(images, kw, match):
    with pytest.raises(ValueError, match=match):
        run(images, **kw)


def test_augmentation_that_does_not_fit_is_rejected(images):
    cfg = ssl.TrainConfig(steps=2, batch_size=8, lr=0.1)
    with pytest.raises(ValueError, match="does not fit"):
        ssl.train_ssl(apply, features, init_mlp(jax.random.key(0)), barlow_twins_theory, images[:40],
                      Augmentation(crop=(9, 9)), cfg, eval_images=images[40:])


def test_step_compiles_once(images):
    tx = ssl.make_optimizer(ssl.TrainConfig(steps=1, batch_size=8, lr=0.1))
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    step = ssl.make_train_step(apply, barlow_twins_theory, tx, AUG, 8,
                               jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    params = init_mlp(jax.random.key(0))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = ssl.TrainState(params, tx.init(params), jnp.zeros((), jnp.int32), jax.random.key(0))
    state, data = jax.device_put((state, jnp.asarray(images)), replicated)  # as train_ssl places them
    for _ in range(4):
        state, _ = step(state, data)
    assert step._cache_size() == 1


MULTI_DEVICE = textwrap.dedent(
    """
    import jax, numpy as np
    jax.config.update("jax_enable_x64", True)
    import sys; sys.path.insert(0, {tests!r})
    from test_training_ssl import run, N_IMAGES, SHAPE
    assert len(jax.devices()) == 4, jax.devices()
    images = np.random.default_rng(0).uniform(size=(N_IMAGES, *SHAPE))
    one = run(images, devices=jax.devices()[:1])
    four = run(images, devices=jax.devices())
    # Data parallel: the batch gradient is reduced across 4 devices in another order, ~16 eps relative per step,
    # 20 steps ~7e-14 unamplified (measured 1.1e-14 loss, 1.7e-14 params, 2e-15 absolute on cov_out, whose
    # zero eigenvalues make relative errors meaningless); 1e-9 leaves 1e4x for the training map's expansion.
    np.testing.assert_allclose(four.train_loss, one.train_loss, rtol=1e-9)
    np.testing.assert_allclose(four.cov_out, one.cov_out, rtol=1e-7, atol=1e-12)
    for a, b in zip(jax.tree.leaves(four.params), jax.tree.leaves(one.params)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    try:
        run(images, batch_size=18, devices=jax.devices())
    except ValueError as err:
        assert "not divisible by the 4 devices" in str(err), err
    else:
        raise AssertionError("batch 18 over 4 devices was accepted")
    print("MULTI-DEVICE OK")
    """
)


def test_data_parallel_over_four_host_devices_matches_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    code = MULTI_DEVICE.format(tests=os.path.dirname(__file__))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MULTI-DEVICE OK" in proc.stdout


def test_callers_params_survive_the_donated_steps(images):
    params = init_mlp(jax.random.key(1))
    before = [np.asarray(x).copy() for x in jax.tree.leaves(params)]
    cfg = ssl.TrainConfig(steps=3, batch_size=16, lr=0.05, track_every=3)
    ssl.train_ssl(apply, features, params, barlow_twins_theory, images[:40], AUG, cfg, eval_images=images[40:])
    for leaf, ref in zip(jax.tree.leaves(params), before):
        assert not leaf.is_deleted()
        np.testing.assert_array_equal(np.asarray(leaf), ref)


def test_cpu_step_is_compiled_without_ynnpack_fusions():
    """The training step is compiled with CPU_STEP_OPTIONS where jaxlib knows them (0.8 on): no YNNPACK fusion in
    the compiled CPU program, while plain ``jax.jit`` of the same step has them wherever jaxlib makes them."""
    from stepwise.models import build_model, pure_model
    from stepwise.training import compilation

    options = compilation.step_compiler_options()
    jaxlib_version = tuple(int(p) for p in jax.lib.__version__.split(".")[:2])
    assert options == (compilation.CPU_STEP_OPTIONS if jaxlib_version >= (0, 8) else {})
    pure = pure_model(build_model("cnn", (8, 8, 1), channels=(8,), embed_dim=4))
    tx = ssl.make_optimizer(ssl.TrainConfig(steps=1, batch_size=8, lr=0.1))
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    step = ssl.make_train_step(pure.apply, barlow_twins_theory, tx, AUG, 8,
                               jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    state = ssl.TrainState(pure.params, tx.init(pure.params), jnp.zeros((), jnp.int32), jax.random.key(0))
    data = jnp.asarray(np.random.default_rng(0).normal(size=(16, 8, 8, 1)), jnp.float32)
    compiled = step.lower(state, data).compile().as_text()
    assert "ynn_fusion" not in compiled
    if options and jax.default_backend() == "cpu":
        # the option is what removes them: the same step under plain jax.jit (jaxlib 0.10 fuses its convolutions)
        default = jax.jit(step.__wrapped__).lower(state, data).compile().as_text()
        assert "ynn_fusion" in default or jaxlib_version < (0, 10)
