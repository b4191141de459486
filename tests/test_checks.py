"""Checks and their kinds of evidence: verdicts, the run's ``passed``, results.json and the report's grouping."""

from __future__ import annotations

import json
import math

import pytest

from stepwise import io
from stepwise.compare import KINDS, all_passed, check, kind_summary, summary_line
from stepwise.plots.report import CLAIMS, build_report, read_results


def _c(name, value, threshold, kind, op="<="):
    return check(name, value, threshold, kind=kind, op=op, reason=f"reason of {name}")


# Each op on both sides of its threshold, and at it.
@pytest.mark.parametrize("op,value,threshold,expected", [
    ("<=", 1.0, 2.0, True), ("<=", 2.0, 2.0, True), ("<=", 3.0, 2.0, False),
    ("<", 1.0, 2.0, True), ("<", 2.0, 2.0, False),
    (">=", 3.0, 2.0, True), (">=", 2.0, 2.0, True), (">=", 1.0, 2.0, False),
    (">", 3.0, 2.0, True), (">", 2.0, 2.0, False),
    ("==", 2.0, 2.0, True), ("==", 2.5, 2.0, False),
])
@pytest.mark.parametrize("kind", ["theory", "baseline", "consistency"])
def test_gated_verdict_follows_op(op, value, threshold, expected, kind):
    c = _c("x", value, threshold, kind, op)
    assert c.passed is expected and c.gated and c.kind == kind


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("op", ["<=", ">=", "<", ">"])
def test_non_finite_value_fails_every_gated_op(value, op):
    assert _c("x", value, 1.0, "theory", op).passed is False


def test_reported_is_not_gated_and_keeps_an_optional_reference():
    r = _c("slope", 0.1, 0.5, "reported", ">=")
    assert r.passed is None and not r.gated and r.threshold == 0.5
    assert check("n", 3, None, kind="reported", reason="why").threshold is None
    assert "REPORTED" in r.explain() and "not gated" in r.explain()
    d = r.to_dict()
    assert d["kind"] == "reported" and d["passed"] is None


@pytest.mark.parametrize("kwargs,match", [
    ({"kind": "theorem"}, "kind 'theorem' is not one of"),
    ({"kind": "theory", "op": "=<"}, "op '=<' is not one of"),
    ({"kind": "theory", "reason": "  "}, "needs a reason"),
    ({"kind": "theory", "threshold": None}, "needs a finite threshold"),
    ({"kind": "baseline", "threshold": math.nan}, "needs a finite threshold"),
])
def test_bad_check_arguments_are_refused(kwargs, match):
    args = {"name": "x", "value": 1.0, "threshold": 2.0, "reason": "r"} | kwargs
    with pytest.raises(ValueError, match=match):
        check(**args)


def test_kind_is_required():
    with pytest.raises(TypeError, match="kind"):
        check("x", 1.0, 2.0, reason="r")  # type: ignore[call-arg]


def test_run_passes_only_on_theory_or_baseline_evidence_with_every_gate_passed():
    t_ok, t_bad = _c("t", 1, 2, "theory"), _c("t", 3, 2, "theory")
    b_ok, c_ok, c_bad = _c("b", 1, 2, "baseline"), _c("c", 1, 2, "consistency"), _c("c", 3, 2, "consistency")
    rep = _c("r", 99, 2, "reported")
    assert all_passed([t_ok, b_ok, c_ok, rep])
    assert all_passed([b_ok])
    assert not all_passed([t_ok, t_bad])
    assert not all_passed([t_ok, c_bad]), "a failing consistency check means the code is wrong: the run fails"
    assert not all_passed([c_ok, rep]), "consistency and reported alone are no evidence for the paper"
    assert not all_passed([rep]) and not all_passed([])
    # results.json dicts, and dicts written before kinds existed (no "kind": theory)
    assert all_passed([t_ok.to_dict(), rep.to_dict()])
    assert all_passed([{"name": "old", "passed": True}]) and not all_passed([{"name": "old", "passed": False}])


def test_summary_counts_each_kind():
    checks = [_c("a", 1, 2, "theory"), _c("b", 3, 2, "theory"), _c("c", 1, 2, "baseline"),
              _c("d", 1, 2, "consistency"), _c("e", 3, 2, "consistency"), _c("f", 1, None, "reported")]
    s = kind_summary(checks)
    assert list(s) == list(KINDS)
    assert s["theory"] == {"passed": 1, "total": 2} and s["baseline"] == {"passed": 1, "total": 1}
    assert s["consistency"] == {"passed": 1, "total": 2} and s["reported"] == {"passed": 0, "total": 1}
    assert summary_line(checks) == "theory 1/2, baseline 1/1; 2 consistency (1 FAIL); 1 reported"
    assert summary_line([_c("f", 1, None, "reported")]) == "no theory or baseline check; 1 reported"


def _write_run(root, name, experiment, checks):
    out = root / name
    out.mkdir(parents=True)
    return io.write_results(out, experiment=experiment, config={"dataset": "digits"}, checks=checks, wall_time_s=1.0)


def test_results_json_carries_kinds_and_reads_back(tmp_path):
    checks = [_c("t", 1, 2, "theory"), _c("r", 5, None, "reported")]
    res = _write_run(tmp_path, "a", "linear_bt", checks)
    assert res["passed"] is True and res["verdicts"] == "theory 1/1; 1 reported"
    assert res["kinds"]["reported"] == {"passed": 0, "total": 1}
    back, problem = read_results(tmp_path / "a" / "results.json")
    assert problem == "" and [c["kind"] for c in back["checks"]] == ["theory", "reported"]
    assert back["checks"][1]["passed"] is None and back["checks"][1]["threshold"] is None


@pytest.mark.parametrize("key", ["passed", "plan"])
def test_extra_fields_may_not_overwrite_results_fields(tmp_path, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        io.write_results(tmp_path, experiment="x", config={}, checks=[_c("t", 1, 2, "theory")], wall_time_s=0.0,
                         extra={key: True})
    assert not (tmp_path / "results.json").exists()


def test_config_value_finds_the_shallowest_field_and_refuses_an_ambiguous_one():
    cfg = {"lr": 0.1, "seed": 3, "probe": {"lr": 0.5, "steps": 7}, "train": {"steps": 9, "tau": 0.2},
           "cov": {"tau": 0.5}, "a": {"b": {"steps": 1}}}
    assert io.config_value(cfg, "lr") == 0.1  # the top level first
    assert io.config_value(cfg, "probe.lr") == 0.5 and io.config_value(cfg, "a.b.steps") == 1
    assert io.config_value(cfg, "missing", "d") == "d" and io.config_value(cfg, "probe.missing", "d") == "d"
    with pytest.raises(ValueError, match=r"'tau'.*\['cov.tau', 'train.tau'\]"):
        io.config_value(cfg, "tau")
    with pytest.raises(ValueError, match="'steps'"):
        io.config_value(cfg, "steps")  # probe.steps and train.steps differ; a.b.steps is deeper and not asked
    same = {"x": {"seed": 1}, "y": {"seed": 1}}
    assert io.config_value(same, "seed") == 1  # equal values at one depth are no ambiguity


@pytest.mark.parametrize("bad,problem", [
    ({"name": "x", "passed": None, "kind": "theory"}, "expected true or false"),
    ({"name": "x", "passed": True, "kind": "guess"}, "expected one of theory"),
    ({"name": "x", "passed": "yes", "kind": "reported"}, "expected true, false or null"),
])
def test_report_names_bad_kinds_and_verdicts(tmp_path, bad, problem):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"passed": True, "checks": [bad]}))
    res, msg = read_results(path)
    assert res is None and problem in msg


def test_report_orders_runs_by_paper_and_groups_checks_by_kind(tmp_path):
    runs = tmp_path / "runs"
    # written in an order unlike the papers' (and unlike the alphabet)
    _write_run(runs, "a_grassmann", "grassmann", [_c("g", 1, 2, "consistency"), _c("g2", 1, 2, "theory")])
    _write_run(runs, "b_hltm", "hltm", [_c("h", 3, 2, "theory")])
    _write_run(runs, "c_deep", "stepwise_deep/simclr", [_c("s", 1, 2, "baseline"), _c("s2", 0.1, 0.5, "reported")])
    _write_run(runs, "d_linear", "linear_bt", [_c("l", 1, 2, "theory")])
    report = build_report(runs, tmp_path / "index.html")
    assert (report.runs, report.passed, report.unreadable) == (4, 3, 0)
    text = report.path.read_text()
    order = [text.index(f"id='{n}'") for n in ("d_linear", "c_deep", "b_hltm", "a_grassmann")]
    assert order == sorted(order), "sections follow the papers: Simon, Tian 2020, Esser"
    for paper in ("Simon et al. 2023", "Tian 2020", "Esser et al. 2023"):
        assert paper in text
    deep = text[text.index("id='c_deep'"):text.index("id='b_hltm'")]
    assert deep.index("Baselines beaten") < deep.index("Reported, not gated") and "REPORTED" in deep
    assert "theory 0/1" in text and "baseline 1/1; 1 reported" in text
    assert {p for _, p, _ in CLAIMS} >= {"Simon et al. 2023", "Tian, Chen & Ganguli 2021", "Tian 2020",
                                         "Esser et al. 2023"}
