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

ZOO = str(Path(__file__).with_name("verify_zoo.py"))


def _run(tmp_path, factory: str) -> tuple[dict, Path]:
    out = tmp_path / factory
    # Standard promotion, as a user's run has (LayerNorm and bfloat16 layers promote with float32 inside Flax).
    with jax.numpy_dtype_promotion("standard"):
        code = cli.main(["verify", "--model", f"{ZOO}:{factory}", "--smoke", "--out", str(out), "--no-progress"])
    assert code in (0, 1)  # checks computed; a 60-step smoke run need not pass them
    results = json.loads((out / "results.json").read_text())
    assert code == (0 if results["passed"] else 1)
    assert results["checks"] and all({"name", "value", "threshold", "passed", "kind"} <= set(c) for c in results["checks"])
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
        V._contrastive_eigh(k, "at initialisation")
    assert "ridge (e.g." not in str(info.value)
