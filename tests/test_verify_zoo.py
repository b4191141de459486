"""`stepwise verify --smoke` end to end on an MLP-Mixer and a bfloat16 CNN (issue 17 items 2 and 5); the
BatchNorm ResNet, the dropout ViT and the several-output model are in tests/test_verify_stateful.py."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise import cli, io
from stepwise import verify as V
from stepwise.data import ImageData

ZOO = str(Path(__file__).with_name("verify_zoo.py"))


def _run(tmp_path, factory: str) -> tuple[dict, Path]:
    out = tmp_path / factory
    # Standard promotion, as a user's run has (LayerNorm and bfloat16 layers promote with float32 inside Flax).
    with jax.numpy_dtype_promotion("standard"):
        code = cli.main(["verify", "--model", f"{ZOO}:{factory}", "--smoke", "--out", str(out), "--no-progress"])
    assert code in (0, 1)  # checks computed; a 60-step smoke run need not pass them
    results = json.loads((out / "results.json").read_text())
    assert code == (0 if results["passed"] else 1)
    assert results["checks"] and all({"name", "value", "threshold", "passed", "kind"} <= set(c)
                                     for c in results["checks"])
    assert results["figures"] == ["verify.png"] and "figure_error" not in results
    assert (out / "report.html").is_file()
    return results, out


def test_mlp_mixer_smoke_cli(tmp_path):
    results, out = _run(tmp_path, "make_mixer")
    assert results["summary"]["d"] == 8 and results["summary"]["stateful_layers"] is None
    assert results["summary"]["output_layer"].startswith("['head']['kernel']")


def test_bfloat16_cnn_smoke_cli_analyses_in_float(tmp_path):
    results, out = _run(tmp_path, "make_bf16_cnn")
    data = io.load_npz(out / "verify.npz")
    # every saved array is a NumPy float / int / bool array (bfloat16 would be stored as raw 2-byte records)
    for name, a in data.items():
        assert a.dtype.kind in "fiub", (name, a.dtype)
    assert np.all(np.isfinite(data["eigenvalues"])) and np.all(np.isfinite(data["eval_loss"]))
    assert results["summary"]["gammas_init_ntk"][0] > 0


def test_float32_copy_widens_only_narrow_floats():
    params = {"a": jnp.array([1.5, -2.25], jnp.bfloat16), "b": jnp.array([0.1], jnp.float16),
              "c": jnp.array([0.3], jnp.float32), "d": jnp.array([3], jnp.int32)}
    wide = V.float32_copy(params)
    assert {k: str(v.dtype) for k, v in wide.items()} == {"a": "float32", "b": "float32", "c": "float32", "d": "int32"}
    for k in params:  # exact: every bfloat16 / float16 value is a float32 value
        np.testing.assert_array_equal(np.asarray(wide[k], np.float64), np.asarray(params[k], np.float64))
    assert wide["c"] is params["c"] or np.array_equal(wide["c"], params["c"])


def test_an_indefinite_kernel_is_refused_with_a_message_naming_no_missing_option():
    k = np.diag([1.0, 1.0, 1.0, 1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="not positive semi-definite") as info:
        V._contrastive_eigh(k, "at initialisation", k)
    assert "ridge (e.g." not in str(info.value)


# --features: the backbone checked next to the embedding (issue 17 item 3).


@pytest.mark.parametrize("path,width", [("backbone", 32), ("pooled", 16)])
def test_features_checks_the_backbone_next_to_the_embedding(tmp_path, path, width):
    out = tmp_path / path
    code = cli.main(["verify", "--model", f"{ZOO}:make_backbone_projector", "--features", path, "--smoke",
                     "--out", str(out), "--no-progress"])
    assert code in (0, 1)
    results = json.loads((out / "results.json").read_text())
    by_name = {c["name"]: c for c in results["checks"]}
    for name in ("backbone_steps_detected", "backbone_participation_ratio", "backbone_embedding_similarity"):
        assert by_name[name]["kind"] == "reported" and by_name[name]["passed"] is None
    backbone = results["summary"]["backbone"]
    assert backbone["path"] == path and backbone["width"] == width
    data = io.load_npz(out / "verify.npz")
    assert data["backbone_eigenvalues"].shape[0] == data["step"].shape[0]
    assert by_name["backbone_steps_detected"]["value"] == backbone["n_steps"]
    # recomputed from the saved spectrum
    from stepwise.compare import hidden
    pr = hidden.participation_ratio(data["backbone_eigenvalues"])
    assert by_name["backbone_participation_ratio"]["value"] == pytest.approx(pr[-1], rel=1e-12)
    assert 0.0 <= by_name["backbone_embedding_similarity"]["value"] <= 1.0 + 1e-12
    assert by_name["backbone_embedding_similarity"]["threshold"] == pytest.approx(
        backbone["k_similarity"] / results["config"]["data"]["n_eval"])


@pytest.mark.parametrize("factory,path,match", [
    ("make_backbone_projector", "trunk", r"model has no attribute 'trunk'; its callable attributes: backbone, pooled, "
                                         r"proj1, proj2"),
    ("make_backbone_projector", "backbone.l9", r"model.backbone has no attribute 'l9'; its callable attributes: "
                                               r"l1, l2"),
    ("make_backbone_projector", "proj2", r"model.proj2\(x\) failed on a batch of views"),
    ("make_backbone_projector", "backbone.l1.kernel", r"is a Param, not a submodule or method"),
    ("make_resnet_bn", "block1", r"model.block1\(x\) failed on a batch of views"),  # takes the stem's output
])
def test_bad_features_are_refused_before_training(tmp_path, capsys, factory, path, match):
    out = tmp_path / "run"
    code = cli.main(["verify", "--model", f"{ZOO}:{factory}", "--features", path, "--smoke", "--out", str(out),
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and not out.exists()
    import re
    assert re.search(match, err), err


def test_features_path_syntax_is_validated():
    with pytest.raises(ValueError, match="dotted attribute path"):
        V.VerifyConfig(model="m.py:f", features="backbone-1")


def test_backbone_embedding_similarity_against_direct_cases():
    from stepwise.compare import hidden
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20, 3))
    # features that contain the embedding's top-2 principal directions (plus others of smaller variance): 1
    f = np.concatenate([10 * z, 0.01 * rng.normal(size=(20, 5))], axis=1)
    sim, ref = hidden.backbone_embedding_similarity(f, z, 2)
    assert sim == pytest.approx(1.0, abs=1e-6) and ref == pytest.approx(2 / 20)
    # features orthogonal to the embedding's centred span: 0
    zc = z - z.mean(axis=0)
    q, _ = np.linalg.qr(np.concatenate([np.ones((20, 1)), zc, rng.normal(size=(20, 4))], axis=1))
    sim0, _ = hidden.backbone_embedding_similarity(q[:, 4:8], z, 2)
    assert sim0 == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="same n points"):
        hidden.backbone_embedding_similarity(f[:10], z, 2)
    np.testing.assert_allclose(hidden.participation_ratio(np.array([[1.0, 1.0, 0.0], [1.0, 0.0, -1e-9], [0, 0, 0]])),
                               [2.0, 1.0, 0.0])


# Training length adapts (issue 17 item 4): longer while the spectrum still moves at the end, up to max_steps.


def test_training_extends_while_the_spectrum_moves_and_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    import dataclasses

    from stepwise.compare import diagnose

    base = dataclasses.replace(V.VerifyConfig.smoke(f"{ZOO}:make_backbone_projector"), steps=20, max_steps=40,
                               track_every=10, n_pairs=8, data=ImageData(n_train=200, n_eval=16))
    original, calls = diagnose.spectrum_change_at_end, []

    def still_moving_once(t, eigenvalues, *args, **kwargs):  # the first length reads as still learning
        calls.append(float(t[-1]))
        return 1.0 if len(calls) == 1 else original(t, eigenvalues, *args, **kwargs)

    monkeypatch.setattr(diagnose, "spectrum_change_at_end", still_moving_once)
    extended = V.verify(base, tmp_path / "extended")
    monkeypatch.setattr(diagnose, "spectrum_change_at_end", original)
    assert calls[:2] == [20.0, 40.0]
    lengths = extended["summary"]["training_lengths"]
    assert [x["steps"] for x in lengths] == [20, 40] and lengths[0]["spectrum_change_at_end"] == 1.0
    assert extended["summary"]["steps_trained"] == 40 and extended["summary"]["step_budget"] == 40
    assert sorted(p.name for p in (tmp_path / "extended").iterdir()) == ["report.html", "results.json", "verify.npz",
                                                                        "verify.png"]  # no checkpoint left behind
    fixed = V.verify(dataclasses.replace(base, steps=40), tmp_path / "fixed")
    assert fixed["summary"]["training_lengths"][0]["steps"] == 40
    a, b = io.load_npz(tmp_path / "extended" / "verify.npz"), io.load_npz(tmp_path / "fixed" / "verify.npz")
    for name in ("step", "eigenvalues", "eval_loss"):  # resumed at 20 == trained straight to 40, bit for bit
        np.testing.assert_array_equal(a[name], b[name])


def test_max_steps_at_or_below_steps_means_a_fixed_length():
    assert V.VerifyConfig(model="m.py:f", steps=100, max_steps=50).step_budget == 100
    assert V.VerifyConfig(model="m.py:f", steps=100).step_budget == 400
    assert V.VerifyConfig.smoke("m.py:f").step_budget == 60  # smoke runs never extend
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        V.VerifyConfig(model="m.py:f", max_steps=0)


# The compute plan (issue 13: `verify --scale gpu` prints its plan first; `--plan-only` stops there).


def test_plan_only_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["verify", "--model", f"{ZOO}:make_backbone_projector", "--smoke", "--plan-only",
                     "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and not out.exists()
    assert "up to 60 steps (60 first)" in text and "train step:" in text and "x 60 steps" in text
    assert "NTK (96 points)" in text and "x 2 kernels" in text and "estimated time on" in text


def test_plan_counts_the_step_budget_and_both_kernels():
    import dataclasses

    from stepwise import scale

    cfg = dataclasses.replace(V.VerifyConfig.smoke(f"{ZOO}:make_resnet_bn"), steps=20, max_steps=50)
    p = V.plan(cfg, device_kind="NVIDIA H200", platform="gpu")
    names = [w.name for w in p.workloads]
    assert names == ["train step", "tracking", "NTK (96 points)"]
    step, track, ntk = p.workloads
    assert step.calls == 50 and track.calls == -(-50 // cfg.track_every) + 1 and ntk.calls == 2
    assert step.flops > 0 and track.flops > 0 and ntk.dtype == "float32" and "eval-mode costs" in p.title
    assert p.total_flops == pytest.approx(sum(w.flops * w.calls for w in p.workloads))
    assert scale.ComputePlan is type(p)


def test_gpu_scale_with_a_model_for_other_images_is_refused_before_compute(tmp_path, capsys):
    # the GPU scale trains on 32x32 RGB patches; this model takes 8x8 grey digits
    code = cli.main(["verify", "--model", f"{ZOO}:make_resnet_bn", "--scale", "gpu", "--plan-only"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "(2, 32, 32, 3)" in err


@pytest.mark.parametrize("name,kwargs", [("barlow_twins", {}), ("simclr", {}), ("vicreg", {}),
                                         ("barlow_twins_theory", {"center": True}),
                                         ("infonce_floored", {"temperature": 0.2, "norm_floor": 3.0})])
def test_loss_names_mean_the_named_loss(name, kwargs):
    from stepwise.losses import get_loss

    z1, z2 = np.random.default_rng(0).normal(size=(2, 16, 4))
    got = V._loss(V.VerifyConfig(model="m.py:f", loss=name))(jnp.asarray(z1), jnp.asarray(z2))
    want = get_loss(name, **kwargs)(jnp.asarray(z1), jnp.asarray(z2))
    assert float(got) == float(want)
