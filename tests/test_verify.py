"""`stepwise verify`: clear errors before any training, output-layer detection, and a smoke run of the example."""

import json
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stepwise import cli
from stepwise import verify as V
from stepwise.data import ImageData

EXAMPLE = "experiments/custom_architecture.py:make_model"
VIEW = (8, 8, 1)


def _write(tmp_path, body: str, name: str = "model.py") -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


GOOD = textwrap.dedent("""
    from flax import nnx
    import jax.numpy as jnp

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(64, 4, rngs=rngs)
        def __call__(self, x):
            return self.lin(x.reshape(x.shape[0], -1))
""")


@pytest.mark.parametrize(
    "body,spec_attr,match",
    [
        (None, "make_model", "not found"),
        ("def make_model(rngs):\n    return (\n", "make_model", "could not import"),
        (GOOD + "\ndef other(rngs):\n    return Net(rngs)\n", "make_model", "no attribute 'make_model'.*other"),
        (GOOD + "\nmake_model = 3\n", "make_model", "not a callable"),
        (GOOD + "\ndef make_model():\n    return Net(nnx.Rngs(0))\n", "make_model", "exactly one argument"),
        (GOOD + "\ndef make_model(rngs, width):\n    return Net(rngs)\n", "make_model", "exactly one argument"),
        (GOOD + "\ndef make_model(rngs):\n    raise RuntimeError('boom')\n", "make_model", "raised RuntimeError: boom"),
        (GOOD + "\ndef make_model(rngs):\n    return lambda x: x\n", "make_model", "expected a flax.nnx.Module"),
        (GOOD.replace("return self.lin(x.reshape(x.shape[0], -1))", "return self.lin(x.reshape(x.shape[0], -1))[:, 0]")
         + "\ndef make_model(rngs):\n    return Net(rngs)\n", "make_model", r"to shape \(2,\); expected \(batch, d\)"),
        (GOOD.replace("x.reshape(x.shape[0], -1)", "x.reshape(2, -1)")
         + "\ndef make_model(rngs):\n    return Net(rngs)\n", "make_model", "failed on a batch of shape"),
        (GOOD.replace("nnx.Linear(64, 4", "nnx.Linear(64, 1")
         + "\ndef make_model(rngs):\n    return Net(rngs)\n", "make_model", "d >= 2"),
        (GOOD.replace("return self.lin(", "return jnp.log(-jnp.abs(x[:, 0, 0, :2])) + 0 * self.lin(")
         + "\ndef make_model(rngs):\n    return Net(rngs)\n", "make_model", "non-finite"),
    ],
)
def test_bad_models_fail_before_training(tmp_path, body, spec_attr, match):
    path = str(tmp_path / "missing.py") if body is None else _write(tmp_path, body)
    spec = f"{path}:{spec_attr}"
    with pytest.raises(V.ModelSpecError, match=match):
        factory = V.load_factory(spec)
        V.build_model_checked(factory, spec, VIEW, 0)


def test_cli_reports_bad_model_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["verify", "--model", f"{tmp_path}/nope.py:make_model", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "not found" in err and "nope.py" in err
    assert not out.exists()
    assert cli.main(["verify", "--out", str(out)]) == 2
    assert "needs --model" in capsys.readouterr().err


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="path/to/file.py:make_model"):
        V.VerifyConfig(model="no_colon")
    with pytest.raises(ValueError, match="n_pairs 5000 exceeds n_train"):
        V.VerifyConfig(model=EXAMPLE, n_pairs=5000)


def test_module_spec_form_loads_the_same_factory():
    a = V.load_factory("experiments.custom_architecture:make_model")
    b = V.load_factory(EXAMPLE)
    ya = a(nnx.Rngs(0))(jnp.ones((3, *VIEW), jnp.float32))
    yb = b(nnx.Rngs(0))(jnp.ones((3, *VIEW), jnp.float32))
    np.testing.assert_allclose(np.asarray(ya), np.asarray(yb), rtol=1e-6)


class _Reversed(nnx.Module):
    """Attribute names sort opposite to the forward order: the output layer must be found by use, not by name."""

    def __init__(self, rngs):
        self.z_first = nnx.Linear(64, 8, rngs=rngs)
        self.m_middle = nnx.Linear(8, 8, rngs=rngs)
        self.a_last = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.z_first(x.reshape(x.shape[0], -1)))
        return self.a_last(jax.nn.relu(self.m_middle(h)))


def test_output_layer_is_the_last_matrix_used():
    g, params, rest = nnx.split(_Reversed(nnx.Rngs(0)), nnx.Param, ...)

    def apply(p, x):
        return nnx.merge(g, p, rest)(x)

    x = jnp.ones((2, *VIEW), jnp.float32)
    head = V.output_layer(apply, params, x)
    assert head.startswith("['a_last']['kernel']")
    small = V.scale_leaf(params, head, 1e-6)
    y0, y1 = np.asarray(apply(params, x)), np.asarray(apply(small, x))
    bias = np.asarray(params["a_last"]["bias"][...])[None, :]
    np.testing.assert_allclose(y1 - bias, 1e-6 * (y0 - bias), rtol=1e-4, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(small["z_first"]["kernel"][...]),
                                  np.asarray(params["z_first"]["kernel"][...]))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify")
    results = V.verify(V.VerifyConfig.smoke(EXAMPLE), out)
    return out, results


def test_smoke_run_writes_results_figure_and_report(smoke_run):
    out, results = smoke_run
    on_disk = json.loads((out / "results.json").read_text())
    gated = [c for c in results["checks"] if c["kind"] != "reported"]
    assert on_disk["passed"] == results["passed"] == (
        any(c["kind"] in ("theory", "baseline") for c in gated) and all(c["passed"] for c in gated))
    assert all(c["passed"] is None and c["reason"] for c in results["checks"] if c["kind"] == "reported")
    names = {c["name"] for c in on_disk["checks"]}
    assert {"steps_detected", "rank_max_increment", "onsets_strictly_ordered"} <= names
    for c in on_disk["checks"]:
        assert {"name", "value", "threshold", "passed", "reason", "kind"} <= set(c)
    assert on_disk["config"]["model"] == EXAMPLE and on_disk["config"]["learning_rate"] > 0
    s = on_disk["summary"]
    assert s["output_layer"].startswith("['out']['kernel']")
    assert s["train_time_s"] > 0 and s["ntk_time_s"] > 0
    assert s["lr"] == pytest.approx(V.LOSS_DEFAULTS["barlow_twins"]["lr_fraction"] * s["lr_stability_limit"])
    assert (out / "verify.png").stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert "steps_detected" in html and "data:image/png;base64" in html
    data = np.load(out / "verify.npz")
    assert data["eigenvalues"].shape[0] == data["step"].shape[0]
    if "step_order_kendall_tau" in names:  # at least two modes were learned in the smoke run
        assert data["overlap_final"].shape[0] == s["k_learned"]
        assert np.all((data["overlap_final"] >= 0) & (data["overlap_final"] <= 1 + 1e-9))


def test_kernel_statistics_that_cannot_be_computed_become_a_failed_check(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("only 1 contrastive eigenvalues are positive")

    monkeypatch.setattr(V.cntk, "step_order", broken)
    res = V.verify(V.VerifyConfig.smoke(EXAMPLE), tmp_path)
    names = {c["name"]: c for c in res["checks"]}
    if "learned_modes" not in names:  # two or more modes learned: the kernel statistics were attempted
        assert names["kernel_checks_computable"]["passed"] is False
        assert "only 1 contrastive" in names["kernel_checks_computable"]["reason"]
    assert (tmp_path / "results.json").is_file() and (tmp_path / "report.html").is_file()


def test_divergence_stops_with_step_and_quantity(tmp_path):
    from stepwise.errors import DivergenceError

    # VICReg: the published Barlow Twins standardises each embedding dimension, so it is blind to the blow-up that
    # lr 0.5 causes and does not diverge (measured: VICReg's loss is nan at step 11).
    with pytest.raises(DivergenceError, match=r"diverged at step \d+: .* Try: lower the learning rate \(now 0.5\)"):
        V.verify(V.dataclasses.replace(V.VerifyConfig.smoke(EXAMPLE), loss="vicreg", steps=100, max_steps=100, lr=0.5),
                 tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()


_NET = """
from flax import nnx


class Net(nnx.Module):
    def __init__(self, rngs):
        self.out = nnx.Linear(64, 4, rngs=rngs)

    def __call__(self, x):
        return self.out(x.reshape(x.shape[0], -1))
"""


@pytest.mark.parametrize("form", ["file", "package"])
def test_model_specs_import_like_python_does(tmp_path, form):
    """A model file imports its sibling modules (its folder goes first on sys.path, as for `python file.py`), and
    `package.module:name` is found in the folder the console command runs from (as for `python -m`). Run through
    the installed `stepwise` script, whose sys.path[0] is its bin folder: a missing attribute is reported with the
    module's callables, which proves the import itself worked (it failed with ModuleNotFoundError before)."""
    import subprocess
    import sys
    import uuid

    tag = uuid.uuid4().hex[:8]
    if form == "file":
        (tmp_path / "models").mkdir()
        (tmp_path / "models" / f"blocks_{tag}.py").write_text(_NET)
        (tmp_path / "models" / "arch.py").write_text(f"from blocks_{tag} import Net\n\ndef make_model(rngs):\n"
                                                     "    return Net(rngs)\n")
        spec = "models/arch.py"
    else:
        pkg = tmp_path / f"pkg_{tag}"
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        (pkg / "blocks.py").write_text(_NET)
        (pkg / "arch.py").write_text(f"from pkg_{tag}.blocks import Net\n\n"
                                     "def make_model(rngs):\n    return Net(rngs)\n")
        spec = f"pkg_{tag}.arch"
    script = Path(sys.executable).parent / "stepwise"
    proc = subprocess.run([str(script), "verify", "--model", f"{spec}:nope", "--data.dataset", "digits",
                           "--out", str(tmp_path / "out")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "has no attribute 'nope'; its public callables are ['Net', 'make_model']" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    # and through the API, the factory builds the model
    import os

    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        factory = V.load_factory(f"{spec}:make_model")
    finally:
        os.chdir(cwd)
    from flax import nnx

    assert isinstance(factory(nnx.Rngs(0)), nnx.Module)


def test_a_figure_that_fails_never_loses_the_run(tmp_path, monkeypatch):
    """results.json is written before the figure; a plotting error is recorded (results.json, report), warned, and the
    verdicts stay (a bfloat16 model's raw eval_loss bytes once crashed the plot and lost the whole run)."""
    import stepwise.plots.verify as plots

    def broken(*args, **kwargs):
        raise ValueError("setting an array element with a sequence")

    monkeypatch.setattr(plots, "plot_verify", broken)
    import dataclasses

    cfg = dataclasses.replace(V.VerifyConfig.smoke(EXAMPLE), steps=30, data=ImageData(n_train=100, n_eval=24),
                              n_pairs=12)
    with pytest.warns(UserWarning, match="figure could not be drawn"):
        results = V.verify(cfg, tmp_path)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["checks"] == results["checks"] and len(on_disk["checks"]) >= 3
    assert on_disk["figures"] == [] and "ValueError: setting an array element" in on_disk["figure_error"]
    assert "No figure: the figure could not be drawn" in (tmp_path / "report.html").read_text()


def test_npz_stores_bfloat16_as_float32(tmp_path):
    """np.savez writes bfloat16 as raw V2 bytes; io.save_npz_atomic stores the same values as float32."""
    from stepwise import io

    x = jnp.asarray([1.5, -2.25, 3.0e-3], jnp.bfloat16)
    io.save_npz_atomic(tmp_path / "a.npz", x=x, n=np.arange(3))
    back = io.load_npz(tmp_path / "a.npz")
    assert back["x"].dtype == np.float32 and np.array_equal(back["x"], np.asarray(x, np.float32))
    assert back["n"].dtype == np.arange(3).dtype
