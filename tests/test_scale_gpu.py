"""The GPU scale from the command line: configs, compute plans (XLA cost analysis), mixed precision, bad input."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiments.directpred.run  # noqa: F401 - the packages export run(); the modules are read from sys.modules
import experiments.noncontrastive_deep.run  # noqa: F401
import experiments.ntk_after_training.run  # noqa: F401
import experiments.stepwise_deep.run  # noqa: F401
from experiments.directpred import DirectPredConfig
from experiments.noncontrastive_deep import NoncontrastiveDeepConfig
from experiments.ntk_after_training import NtkAfterTrainingConfig
from experiments.stepwise_deep import DeepConfig
from experiments.stepwise_deep import config as deep_config
from stepwise import cli, scale
from stepwise.data import DataNotFoundError, detect_local_dataset, image_shape, load_images
from stepwise.io import replace_config
from stepwise.models import build_model, pure_model, scale_output_layer

deep_run = sys.modules["experiments.stepwise_deep.run"]
nc_run = sys.modules["experiments.noncontrastive_deep.run"]
dp_run = sys.modules["experiments.directpred.run"]
ntk_run = sys.modules["experiments.ntk_after_training.run"]

# A GPU-scale run shrunk to seconds on the CPU: the GPU code path (ResNet-18, bf16, patches, plan), a tiny network.
TINY_DEEP = ["--net.width", "0.125", "--train.batch-size", "16", "--data.n-train", "64", "--data.n-eval", "32",
             "--net.projector", "32", "8", "--net.embed-dim", "32", "--train.track-every", "1"]
TINY_SETUP = ["--setup.net.width", "0.125", "--setup.train.batch-size", "16", "--setup.data.n-train", "64",
              "--setup.data.n-eval", "32", "--setup.net.projector", "32", "8", "--setup.net.embed-dim", "32",
              "--setup.pred-hidden", "16", "--setup.train.track-every", "1"]


def _fake_stl10(root):
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for name in ("train_X.bin", "train_y.bin"):
        (folder / name).write_bytes(b"")
    return root


def _fake_cifar10(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(b"")
    return root


# ------------------------------------------------------------------------------------------------------------
# Configs.


@pytest.mark.parametrize("loss", ["barlow_twins", "simclr", "vicreg"])
def test_deep_gpu_config_is_resnet18_width1_bf16_on_embedded_patches(loss):
    cfg = DeepConfig.gpu(loss)
    assert (cfg.net.model, cfg.net.width, cfg.net.dtype, cfg.data.dataset) == ("resnet18", 1.0, "bfloat16", "patches")
    assert cfg.data.data_dir is None
    assert cfg.train.batch_size >= 256 and cfg.loss == loss and cfg.train.steps >= 1000
    assert cfg.train.lr < 1 / (4 * deep_config.GPU_GAMMA_1)  # below the stability limit of the network's NTK
    assert cfg.temperature == DeepConfig.for_loss(loss).temperature  # the loss's own settings are kept
    assert image_shape(cfg.data.dataset, patch_size=cfg.data.patch_size) == (32, 32, 3)


def test_gpu_configs_of_every_experiment_validate():
    for cfg in (NoncontrastiveDeepConfig.gpu(), DirectPredConfig.gpu()):
        s = cfg.setup
        assert (s.net.model, s.net.width, s.net.dtype, s.data.dataset, s.train.batch_size) == (
            "resnet18", 1.0, "bfloat16", "patches", 256)
    ntk = NtkAfterTrainingConfig.gpu()
    nets = [ntk.deep_config(loss) for loss in ntk.losses]
    assert all((n.net.model, n.net.dtype, n.data.dataset, n.train.batch_size)
               == ("resnet18", "bfloat16", "patches", 256) for n in nets)
    assert all(n.net.width == ntk.width and n.train.steps == ntk.steps and n.data.n_eval == ntk.n_eval for n in nets)
    assert DirectPredConfig.paper().setup.train.steps == 35100  # the paper-length setting is kept under its own name


def test_gpu_scale_reads_a_given_folder(tmp_path):
    stl, cifar, empty = _fake_stl10(tmp_path / "a"), _fake_cifar10(tmp_path / "b"), tmp_path / "c"
    empty.mkdir()
    assert detect_local_dataset(stl) == "stl10" and detect_local_dataset(cifar / "cifar-10-batches-py") == "cifar10"
    with pytest.raises(DataNotFoundError, match="neither STL-10 nor CIFAR-10"):
        detect_local_dataset(empty)
    deep = DeepConfig.gpu("vicreg", data_dir=str(stl))
    assert (deep.data.dataset, deep.data.crop, deep.data.data_dir) == ("stl10", 64, str(stl))
    assert deep.train.steps == DeepConfig.gpu("vicreg").train.steps // 4  # 64x64 views: 4x the FLOPs per step
    assert DeepConfig.gpu(data_dir=str(cifar)).data.dataset == "cifar10"
    assert DeepConfig.gpu(dataset="stl10").data.dataset == "stl10"  # the folder then comes from the environment
    assert NoncontrastiveDeepConfig.gpu(data_dir=str(stl)).setup.data.crop == 64
    with pytest.raises(ValueError, match="patches, cifar10 or stl10"):
        DeepConfig.gpu(dataset="digits")


def test_patches_come_in_both_gpu_sizes():
    for size in (32, 64):
        ds = load_images("patches", 22, seed=1, patch_size=size)
        assert ds.images.shape == (22, size, size, 3) and ds.images.dtype == np.float32
        assert np.all(ds.images.std(axis=(1, 2, 3)) >= 0.01)  # load_patches' flat-patch floor
    assert image_shape("stl10") == (96, 96, 3) and image_shape("digits") == (8, 8, 1)
    with pytest.raises(ValueError, match="unknown dataset"):
        image_shape("imagenet")


def test_output_layer_of_the_resnet_is_scaled_not_its_stem():
    # Regression: the parameter tree is alphabetical, so its last kernel is the ResNet's stem, not the output layer.
    pure = pure_model(build_model("resnet18", (8, 8, 3), width=0.125, embed_dim=16, projector=(16, 8)))
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 3), jnp.float32)
    apply = jax.jit(pure.apply)
    y, y_scaled = apply(pure.params, x), apply(scale_output_layer(pure.params, 1e-3), x)
    # Linear in the output kernel (zero bias): equal up to float32 rounding of the two forward passes.
    np.testing.assert_allclose(y_scaled, 1e-3 * y, rtol=1e-4, atol=1e-9 * float(jnp.abs(y).max()))


# ------------------------------------------------------------------------------------------------------------
# Mixed precision.


@pytest.mark.parametrize("name,kwargs,depth", [
    ("mlp", dict(hidden=(64, 64), embed_dim=16, projector=(32, 8)), 5),
    ("cnn", dict(channels=(16, 32), embed_dim=16, norm="group", projector=(16, 8)), 5),
    ("resnet18", dict(width=0.125, embed_dim=32, projector=(32, 8)), 21),
])
def test_bf16_network_matches_float32(name, kwargs, depth):
    shape = (16, 16, 3)
    f32 = pure_model(build_model(name, shape, **kwargs))
    bf16 = pure_model(build_model(name, shape, dtype="bfloat16", **kwargs))
    assert jax.tree.structure(bf16.params) == jax.tree.structure(f32.params)
    assert {leaf.dtype for leaf in jax.tree.leaves(bf16.params)} == {jnp.dtype(jnp.float32)}
    x = jax.random.normal(jax.random.key(1), (8, *shape), jnp.float32)
    for fn32, fn16 in ((f32.apply, bf16.apply), (f32.features, bf16.features)):
        a, b = jax.jit(fn32)(f32.params, x), jax.jit(fn16)(f32.params, x)
        assert b.dtype == jnp.float32  # the output layer and features stay float32
        # Each bf16 layer rounds to an 8-bit significand (eps 2^-7 = 7.8e-3); errors add at most linearly in depth.
        rel = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))
        assert 0 < rel < 7.8e-3 * depth, rel


def test_bf16_output_layer_keeps_small_directions_relative(rng):
    # An output layer 1e-4 smaller in all directions but one (a learned mode next to a small one), the directions
    # rotated so that each output coordinate mixes them. The float32 output layer keeps the small directions'
    # relative accuracy (their rounding error passes through the same small kernel); rounding the outputs to bf16
    # instead adds ~2^-9 x the large direction to every coordinate, ~20x the small ones. (1e-4 stays far above
    # float32's own resolution of the mix, 6e-8.)
    kw = dict(hidden=(64,), embed_dim=64, projector=(8,))
    net = pure_model(build_model("mlp", (4, 4, 1), dtype="bfloat16", **kw))
    ref = pure_model(build_model("mlp", (4, 4, 1), **kw))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    shrink = jnp.asarray((q * np.array([1.0] + [1e-4] * 7)) @ q.T, jnp.float32)
    flat = jax.tree_util.tree_flatten_with_path(net.params)[0]
    paths = [jax.tree_util.keystr(p) for p, _ in flat]
    i = paths.index("['projector']['layers'][0]['kernel'].value")
    leaves = [leaf @ shrink if k == i else leaf for k, (_, leaf) in enumerate(flat)]
    params = jax.tree.unflatten(jax.tree.structure(net.params), leaves)
    x = jax.random.normal(jax.random.key(2), (256, 4, 4, 1), jnp.float32)
    small = jnp.asarray(q[:, 1:], jnp.float32)
    z16, z32 = jax.jit(net.apply)(params, x), jax.jit(ref.apply)(params, x)
    s16, s32 = np.asarray(z16 @ small), np.asarray(z32 @ small)
    # The small directions' error is the backbone's (two bf16 layers: a few x 4e-3), as for the large one.
    assert np.linalg.norm(s16 - s32) / np.linalg.norm(s32) < 2 * 7.8e-3 * 2
    rounded = np.asarray(z32.astype(jnp.bfloat16).astype(jnp.float32) @ small)
    assert np.linalg.norm(rounded - s32) / np.linalg.norm(s32) > 1  # what a bf16 output layer would do


# ------------------------------------------------------------------------------------------------------------
# Plans.


def test_program_flops_of_a_matmul_is_exact():
    f = jax.jit(lambda a, b: a @ b)
    a, b = jax.ShapeDtypeStruct((64, 32), jnp.float32), jax.ShapeDtypeStruct((32, 16), jnp.float32)
    assert scale.program_flops(f, a, b) == 2 * 64 * 32 * 16


def test_train_step_flops_against_a_hand_count():
    # A bias-free count of the MLP step's matrix products: per view, forward (2 B D H + 2 B H E), weight gradients
    # (the same) and the hidden layer's input gradient (2 B H E; none for the images). XLA's count adds the
    # elementwise work (augmentation, ReLU, loss, SGD update): a few percent here, so the count lies within 1.3x.
    b, h, e = 64, 256, 32
    cfg = replace_config(DeepConfig.smoke(), net={"hidden": (h,), "embed_dim": e, "projector": ()},
                         train={"batch_size": b}, data={"n_train": 256})
    step, track = deep_run.costs(cfg)
    d = 8 * 8
    per_view = 2 * b * (d * h + h * e) * 2 + 2 * b * h * e
    assert 2 * per_view <= step <= 1.3 * 2 * per_view, (step, 2 * per_view)
    forward = 2 * cfg.data.n_eval * (d * h + h * e)
    assert 2 * forward <= track <= 1.3 * 2 * forward  # two views' forward passes (no projector)


def test_plan_for_another_device_and_its_estimate():
    cfg = replace_config(DeepConfig.gpu(), net={"width": 0.125, "projector": (32, 8), "embed_dim": 32},
                         train={"batch_size": 16, "steps": 10, "track_every": 5}, data={"n_train": 64, "n_eval": 32})
    plan = deep_run.plan(cfg, device_kind="NVIDIA H200", platform="gpu")
    assert plan.step_flops > 0 and plan.peak_flops == 790e12 and plan.efficiency == scale.ASSUMED_EFFICIENCY["gpu"]
    work = {w.name: w for w in plan.workloads}
    assert work["train step"].calls == 10 and work["tracking"].calls == 3
    total = sum(w.flops * w.calls for w in plan.workloads)
    assert plan.compute_s == pytest.approx(total / (0.25 * 790e12))
    assert plan.estimated_s == pytest.approx(plan.compute_s + 2 * scale.ASSUMED_COMPILE_S["gpu"])
    lines = plan.lines()
    assert lines[1].startswith("  train step:") and "NVIDIA H200" in lines[-1]
    assert json.loads(json.dumps(plan.to_dict()))["estimated_s"] == pytest.approx(plan.estimated_s)
    with pytest.raises(ValueError, match="no peak FLOP/s known"):
        deep_run.plan(cfg, device_kind="Imaginary X1", platform="gpu")
    with pytest.raises(ValueError, match="efficiency"):
        scale.make_plan("x", plan.workloads, dtype="float32", programs=1, efficiency=1.5)


def test_deep_gpu_run_is_sized_for_90_s_on_an_h200():
    # The configured run itself (ResNet-18 width 1, batch 256): XLA's cost analysis of its step and tracking at the
    # assumed efficiency and compile allowance (the GPU check measures both).
    plan = deep_run.plan(DeepConfig.gpu("barlow_twins"), device_kind="NVIDIA H200", platform="gpu")
    assert 1e12 < plan.step_flops < 2e12  # about 6 x 256 x 0.97 GFLOP (forward of one 32x32 image)
    assert plan.estimated_s <= 90, plan.lines()


# ------------------------------------------------------------------------------------------------------------
# Command line.


def test_cli_runs_a_shrunk_gpu_scale_run_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "deep"
    code = cli.main(["run", "stepwise_deep", "--scale", "gpu", "--loss", "barlow_twins", "--steps", "2", *TINY_DEEP,
                     "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("plan: stepwise_deep/barlow_twins: resnet18 (width 0.125")
    assert "train step:" in printed and "x 2 steps" in printed and "estimated time on cpu" in printed
    res = json.loads((out / "results.json").read_text())
    config = res["config"]
    assert (config["net"]["dtype"], config["data"]["dataset"], config["net"]["model"]) == ("bfloat16", "patches",
                                                                                         "resnet18")
    assert res["plan"]["workloads"][0]["flops"] > 0 and res["summary"]["achieved_flop_per_s"] > 0
    data = np.load(out / "spectrum.npz")
    assert data["eigenvalues"].shape == (3, 8) and np.all(np.isfinite(data["eigenvalues"]))


@pytest.mark.parametrize("name,flags", [
    ("stepwise_deep", ["--loss", "simclr", *TINY_DEEP]),
    ("noncontrastive_deep", TINY_SETUP),
    ("directpred", [*TINY_SETUP, "--min-modes", "2"]),
    ("ntk_after_training", ["--width", "0.125", "--batch-size", "16", "--n-eval", "16", "--n-pairs", "8"]),
])
def test_cli_prints_the_plan_of_every_gpu_experiment(name, flags, capsys):
    assert cli.main(["run", name, "--scale", "gpu", "--steps", "4", "--plan-only", *flags]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"plan: {name}") and lines[-1].startswith("  estimated time on cpu")
    flops = [float(line.split(": ")[1].split()[0]) for line in lines[1:-1]]
    assert len(flops) >= 2 and all(f > 0 for f in flops) and all(" per " in line for line in lines[1:-1])
    assert any("x 4 steps" in line for line in lines[1:-1])


@pytest.mark.parametrize("argv,match", [
    (["run", "stepwise_deep", "--scale", "tpu"], "unknown --scale 'tpu'; expected one of cpu, gpu"),
    (["run", "linear_bt", "--scale", "gpu"], "experiment 'linear_bt' has no GPU scale"),
    (["run", "stepwise_deep", "--smoke", "--scale", "gpu"], "--smoke and --scale gpu exclude each other"),
    (["run", "linear_bt", "--plan-only"], "has no compute plan"),
    (["verify", "--model", "x.py:make_model", "--scale", "big"], "unknown --scale 'big'"),
    (["run", "stepwise_deep", "--scale", "gpu", "--data.data-dir", "/nonexistent/folder"],
     "neither STL-10 nor CIFAR-10"),
])
def test_bad_scale_input_is_a_clear_error(argv, match, capsys, tmp_path):
    assert cli.main([*argv, "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stepwise: error: ") and match in err and "Traceback" not in err
    assert not (tmp_path / "never").exists()


def test_verify_gpu_config(tmp_path):
    from stepwise.verify import VerifyConfig

    cfg = VerifyConfig.gpu("m.py:make_model")
    assert (cfg.data.dataset, cfg.batch_size, cfg.data.n_train) == ("patches", 256, 10000)
    assert VerifyConfig.gpu("m.py:make_model", data_dir=str(_fake_stl10(tmp_path))).data.dataset == "stl10"


def test_ntk_is_computed_with_the_float32_network():
    ntk = NtkAfterTrainingConfig.gpu()
    dcfg = replace_config(ntk.deep_config("vicreg"), net={"width": 0.125, "projector": (16, 8), "embed_dim": 16})
    f32 = ntk_run._ntk_model(dcfg, (32, 32, 3))
    bf16 = dcfg.build_model((32, 32, 3))
    x = jax.random.normal(jax.random.key(3), (4, 32, 32, 3), jnp.float32)
    ref = replace_config(dcfg, net={"dtype": "float32"}).build_model((32, 32, 3))
    np.testing.assert_array_equal(f32.apply(bf16.params, x), ref.apply(bf16.params, x))
    assert not np.array_equal(bf16.apply(bf16.params, x), ref.apply(bf16.params, x))
