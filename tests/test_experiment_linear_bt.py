"""The linear_bt experiment end to end (smoke configs), its results.json contract, the report and the CLI."""

import dataclasses
import functools
import json
import math

import numpy as np
import pytest

from experiments.linear_bt import LinearBTConfig, run
from stepwise import cli, io
from stepwise.data import PairData
from stepwise.plots.report import build_report
from helpers import api_smoke_run, assert_verdicts

REQUIRED_CHECKS = {  # name -> kind of evidence
    "step_time_rel_error_median": "theory",
    "step_time_rel_error_max": "theory",
    "gated_modes": "consistency",  # a precondition set by Gamma's spectrum, not a prediction
    "loss_plateau_max_abs_error": "theory",
    "final_whitening_error": "theory",
    "final_rowspace_max_angle": "theory",
    "rank_max_increment": "theory",
    "test_gram_rel_error": "theory",
}


digits_run = api_smoke_run(functools.partial(LinearBTConfig.smoke, "digits"), run)


@pytest.mark.parametrize("dataset", ["digits", "patches"])
def test_smoke_run_passes_every_check(tmp_path, dataset, digits_run):
    out, res = digits_run if dataset == "digits" else (tmp_path, run(LinearBTConfig.smoke(dataset), tmp_path))
    assert_verdicts(res, allow_reported=False)
    assert res["passed"] is True
    assert {c["name"]: c["kind"] for c in res["checks"]} == REQUIRED_CHECKS


def test_results_json_contract(digits_run):
    out, res = digits_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == res
    assert isinstance(on_disk["passed"], bool)
    for c in on_disk["checks"]:
        assert {"name", "value", "threshold", "passed", "op", "reason", "description", "kind"} <= set(c)
        if isinstance(c["value"], float) and math.isfinite(c["value"]):
            ok = {"<=": c["value"] <= c["threshold"], ">=": c["value"] >= c["threshold"]}[c["op"]]
            assert ok == c["passed"]
    assert on_disk["config"]["data"]["dataset"] == "digits" and on_disk["config"]["d"] == 4
    assert on_disk["versions"]["jax"] and on_disk["versions"]["numpy"]
    assert on_disk["device"]["platform"] == "cpu"
    assert on_disk["wall_time_s"] > 0
    assert (out / "linear_bt.png").stat().st_size > 10_000
    data = io.load_npz(out / "trajectory.npz")
    assert data["eigenvalues"].shape == data["predicted_eigenvalues"].shape
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


def test_same_seed_same_numbers(tmp_path, digits_run):
    _, first = digits_run
    second = run(LinearBTConfig.smoke("digits"), tmp_path)
    strip = lambda r: [(c["name"], c["value"], c["passed"]) for c in r["checks"]]
    assert strip(first) == strip(second)
    assert first["summary"] == second["summary"]


def test_checks_can_fail(tmp_path):
    """A large initialisation breaks the small-init theory: the verdict must say so."""
    res = run(LinearBTConfig(data=PairData(dataset="digits", n_pairs=80, crop=5, n_test=40), d=4, init_scale=0.3),
              tmp_path)
    assert res["passed"] is False
    failed = {c["name"] for c in res["checks"] if c["passed"] is False}
    assert failed & {"step_time_rel_error_max", "loss_plateau_max_abs_error", "final_rowspace_max_angle"}
    assert all(c["kind"] == "theory" for c in res["checks"] if c["name"] in failed)


def test_config_validation():
    for bad in (dict(lr_scale=1.0), dict(lr_scale=0.0), dict(d=0), dict(init_scale=-1.0)):
        with pytest.raises(ValueError, match="invalid linear_bt config"):
            LinearBTConfig(**bad)
    with pytest.raises(ValueError, match="invalid pair data: n_pairs must be >= 2"):
        LinearBTConfig(data=PairData(n_pairs=1))


def test_input_errors_come_before_compute_and_write_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("STEPWISE_CIFAR10", raising=False)
    monkeypatch.delenv("STEPWISE_DATA", raising=False)
    out = tmp_path / "never"
    with pytest.raises(FileNotFoundError, match="STEPWISE_CIFAR10"):
        run(LinearBTConfig(data=PairData(dataset="cifar10")), out)
    with pytest.raises(ValueError, match="does not fit"):
        run(LinearBTConfig(data=PairData(dataset="digits", crop=9)), out)
    with pytest.raises(ValueError, match="too many"):
        run(LinearBTConfig(data=PairData(dataset="digits", n_pairs=1700, n_test=500)), out)
    with pytest.raises(ValueError, match="positive eigenvalues"):
        # d <= m = 4, rank <= 2
        run(LinearBTConfig(data=PairData(dataset="digits", crop=2, n_pairs=2, n_test=0), d=4), out)
    assert not out.exists()


def test_report_collects_runs(tmp_path, digits_run):
    out, _ = digits_run
    html_path, n, n_pass, _ = build_report(out.parent, tmp_path / "report" / "index.html")
    text = html_path.read_text()
    assert n >= 1 and n_pass >= 1
    assert "data:image/png;base64," in text and "step_time_rel_error_max" in text and "PASS" in text
    with pytest.raises(FileNotFoundError, match="no run folder"):
        build_report(tmp_path / "missing", tmp_path / "x.html")


def test_cli_run_report_and_errors(tmp_path, capsys, monkeypatch):
    out = tmp_path / "runs" / "cli_digits"
    assert cli.main(["run", "linear_bt", "--smoke", "--data.dataset", "digits", "--out", str(out), "--d", "3"]) == 0
    res = io.load_results(out)
    assert res["config"]["d"] == 3 and res["passed"]
    assert "PASSED" in capsys.readouterr().out
    assert cli.main(["report", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").is_file()
    assert cli.main(["run", "nope"]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    monkeypatch.delenv("STEPWISE_STL10", raising=False)
    monkeypatch.delenv("STEPWISE_DATA", raising=False)
    assert cli.main(["run", "linear_bt", "--data.dataset", "stl10", "--out", str(tmp_path / "x")]) == 2
    assert "STEPWISE_STL10" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["run", "linear_bt", "--lr-scale", "3"])
    assert cli.main(["list"]) == 0 and "linear_bt" in capsys.readouterr().out


def test_atomic_json_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "results.json"
    io.write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError):  # fails part-way through writing
        io.write_json_atomic(target, {"a": [1.0] * 1000, "b": object()})
    assert json.loads(target.read_text()) == {"a": 1}  # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["patches", "digits"])
def test_full_default_config_passes(tmp_path, dataset):
    res = run(LinearBTConfig(data=dataclasses.replace(LinearBTConfig().data, dataset=dataset)), tmp_path)
    assert res["passed"], [c for c in res["checks"] if not c["passed"]]
