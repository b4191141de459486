"""The training-step benchmark (benchmarks/bench_train.py): the JAX side, timing and result assembly run without
PyTorch (a benchmark-only dependency); the PyTorch twins are checked against the JAX networks only where torch is
installed."""

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import bench_train as bench
from stepwise.models import build_model, param_count, pure_model

ROOT = Path(__file__).resolve().parents[1]
TINY = bench.BenchConfig("mlp", (4, 4, 2), 8, (("hidden", (8,)), ("embed_dim", 4)))


def tiny_images(cfg=TINY, n=24, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *cfg.input_shape)).astype(np.float32)


def test_jax_step_runs_and_advances_the_state():
    jb = bench.make_jax_step(TINY, images=tiny_images())
    assert jb.params == param_count(jb.pure.params) == 16 * 2 * 8 + 8 + 8 * 4 + 4
    seconds = jb.run(3)
    assert seconds > 0
    assert int(jb.state.step) == 3
    # the module keeps its weights (the step donates copies), for the PyTorch twin and the parity check
    kernel = np.asarray(jb.module.backbone.layers[0].kernel[...])
    assert np.all(np.isfinite(kernel))
    state, loss = jb.step(jb.state, jb.data)
    assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))


def test_variants_compute_the_same_step():
    images = tiny_images()
    ref = bench.make_jax_step(TINY, images=images)
    s_ref, l_ref = ref.step(ref.state, ref.data)
    for variant in bench.VARIANTS:
        other = bench.make_jax_step(TINY, images=images, variant=variant)
        s, loss = other.step(other.state, other.data)
        np.testing.assert_allclose(float(loss), float(l_ref), rtol=1e-5)
        for a, b in zip(jax.tree.leaves(s.params), jax.tree.leaves(s_ref.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown variant"):
        bench.make_jax_step(TINY, images=images, variant="nope")


def test_assemble_results_ratios_and_geometric_mean():
    per = {
        "mlp_digits": {"jax_ms_per_step": 3.0, "torch_ms_per_step": 6.0, "params": 10},
        "resnet18_w025_32": {"jax_ms_per_step": 500.0, "torch_ms_per_step": 250.0},
        "cnn_digits": {"jax_ms_per_step": 16.0, "torch_ms_per_step": 16.0},
    }
    r = bench.assemble_results(per, extra_key=1)
    assert r["configs"]["mlp_digits"]["ratio_vs_torch"] == pytest.approx(0.5)
    assert r["configs"]["resnet18_w025_32"]["ratio_vs_torch"] == pytest.approx(2.0)
    assert r["configs"]["mlp_digits"]["params"] == 10  # other keys are kept
    assert r["ratio_vs_torch"] == pytest.approx(1.0)  # (0.5 * 2 * 1) ** (1/3)
    assert r["ratio_vs_torch_per_config"] == {k: c["ratio_vs_torch"] for k, c in r["configs"].items()}
    assert r["cpu_default_ratio"] == pytest.approx(0.5)
    assert r["extra_key"] == 1
    assert bench.geometric_mean([2.0, 8.0]) == pytest.approx(4.0)
    assert bench.assemble_results({"x": {"jax_ms_per_step": 1, "torch_ms_per_step": 2}})["cpu_default_ratio"] is None
    with pytest.raises(ValueError, match="no configs"):
        bench.assemble_results({})
    with pytest.raises(ValueError, match="positive"):
        bench.assemble_results({"x": {"jax_ms_per_step": 0.0, "torch_ms_per_step": 1.0}})


def test_write_outputs_json_schema_and_chart(tmp_path):
    per = {
        name: {"jax_ms_per_step": 2.0 * (i + 1), "torch_ms_per_step": 1.5 * (i + 1), "params": 100 * (i + 1),
               "batch": cfg.batch, "input_shape": list(cfg.input_shape)}
        for i, (name, cfg) in enumerate(bench.CONFIGS.items())
    }
    results = bench.assemble_results(per, host={"cpus": 2})
    json_path, png_path = bench.write_outputs(results, tmp_path / "out")
    assert json_path == tmp_path / "out" / "bench_train.json" and png_path.suffix == ".png"
    assert png_path.stat().st_size > 1000
    data = json.loads(json_path.read_text())
    assert math.isclose(data["ratio_vs_torch"], 2.0 / 1.5)
    for name, cfg in bench.CONFIGS.items():
        c = data["configs"][name]
        assert {"jax_ms_per_step", "torch_ms_per_step", "ratio_vs_torch", "params", "batch", "input_shape"} <= set(c)
        assert c["batch"] == cfg.batch and c["input_shape"] == list(cfg.input_shape)


def test_time_side_by_side_alternates_and_takes_the_median():
    calls = []

    def fake(name, seconds_per_step):
        def run(k):
            calls.append((name, k))
            return k * seconds_per_step

        return run

    out = bench.time_side_by_side({"a": fake("a", 0.002), "b": fake("b", 0.004)}, rounds=3, round_seconds=0.01,
                                  steps=5)
    assert out["a"]["ms_per_step"] == pytest.approx(2.0) and out["b"]["ms_per_step"] == pytest.approx(4.0)
    assert out["a"]["steps_per_round"] == 5 and len(out["a"]["ms_per_step_rounds"]) == 3
    timed = [name for name, k in calls if k == 5][2:]  # after the two warm-up rounds
    assert timed == ["a", "b", "b", "a", "a", "b"]
    assert bench.calibrate_steps(lambda k: k * 0.01, round_seconds=1.0) == 100


def test_same_padding_matches_xla():
    for size in (4, 7, 8, 32):
        for kernel, stride in ((3, 1), (3, 2), (1, 2), (1, 1)):
            (pads,) = jax.lax.padtype_to_pads((size,), (kernel,), (stride,), "SAME")
            assert bench._same_padding(size, kernel, stride) == tuple(pads)


def test_configs_build_the_documented_networks():
    assert set(bench.CONFIGS) == {"mlp_digits", "cnn_digits", "resnet18_w025_32"}
    mlp = bench.CONFIGS["mlp_digits"]
    assert (mlp.model, mlp.input_shape, mlp.batch, mlp.kwargs) == (
        "mlp", (8, 8, 1), 256, {"hidden": (256, 256), "embed_dim": 16})
    module = build_model(mlp.model, mlp.input_shape, **mlp.kwargs)
    assert module.out_dim == 16


def test_cli_reports_missing_torch(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    assert bench.main(["--out", str(tmp_path), "--configs", "mlp_digits"]) == 2
    assert "pip install torch==2.13.0" in capsys.readouterr().err
    assert not (tmp_path / "bench_train.json").exists()


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--help"])
    assert exit_info.value.code == 0
    assert "--configs" in capsys.readouterr().out


def test_runs_as_a_file_from_any_folder(tmp_path):
    # `python benchmarks/bench_train.py` puts the repository root on the path itself (its workers import from it)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--configs" in proc.stdout, proc.stderr


def test_the_library_does_not_import_torch():
    # PyTorch is a benchmark-only dependency: only benchmarks/ may import it
    offenders = [str(f.relative_to(ROOT)) for f in (ROOT / "stepwise").rglob("*.py")
                 if any(line.strip().startswith(("import torch", "from torch")) for line in f.read_text().splitlines())]
    assert offenders == []


# ----------------------------------------------------------------------------------------------------------------
# With PyTorch installed (make bench-train installs it; make test does not).

TWIN_CONFIGS = [
    TINY,
    bench.BenchConfig("cnn", (8, 8, 1), 8, (("channels", (8, 16)), ("embed_dim", 4), ("projector", (6, 5)))),
    # 10 -> 5 -> 3 -> 2: stride-2 SAME padding both asymmetric (0, 1) and symmetric (1, 1)
    bench.BenchConfig("resnet18", (10, 10, 3), 4, (("width", 0.125), ("embed_dim", 4))),
]


@pytest.mark.parametrize("cfg", TWIN_CONFIGS, ids=lambda c: f"{c.model}{c.input_shape}")
def test_torch_twin_computes_the_same_network(cfg):
    torch = pytest.importorskip("torch")
    module = build_model(cfg.model, cfg.input_shape, seed=3, **cfg.kwargs)
    net = bench.torch_network(module, cfg.input_shape)
    assert bench.torch_param_count(net) == param_count(pure_model(module).params)
    x = tiny_images(cfg, n=6, seed=1)
    pure = pure_model(module)
    z_jax = np.asarray(jax.jit(pure.apply)(pure.params, jnp.asarray(x)))
    with torch.no_grad():
        z_torch = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(z_torch, z_jax, rtol=1e-4, atol=1e-5)
    z = torch.from_numpy(z_jax.copy())
    np.testing.assert_allclose(float(bench.torch_bt_loss(z[:3], z[3:])),
                               float(bench._loss_fn()(jnp.asarray(z_jax[:3]), jnp.asarray(z_jax[3:]))), rtol=1e-5)


def test_torch_augmentation_and_step():
    torch = pytest.importorskip("torch")
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    gen = torch.Generator().manual_seed(0)
    out = bench.torch_augment(x, gen)
    assert out.shape == x.shape
    # a shift by at most one pixel with edge padding, plus noise of std 0.1: every pixel is within noise of a
    # pixel of its 3x3 (edge-clamped) neighbourhood
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    neighbours = torch.stack([padded[..., i:i + 4, j:j + 4] for i in range(3) for j in range(3)])
    assert float((neighbours - out).abs().min(dim=0).values.max()) < 0.6
    jb = bench.make_jax_step(TINY, images=tiny_images())
    tb = bench.make_torch_step(jb.module, TINY, images=tiny_images())
    assert tb.params == jb.params
    assert tb.run(2) > 0
    assert np.isfinite(float(tb.forward())) and np.isfinite(float(tb.forward_backward()))
    check = bench.parity(jb, tb, TINY, n=4)
    assert check["output_max_abs_diff"] < 1e-5 and check["loss_rel_diff"] < 1e-5
