"""Bad-input rows of issue 16 item 6: a corrupt or incomplete results.json is a row of the report, not an abort.

Each case writes one good run and one bad results.json beside it; the report must still be written, name the bad
file and its problem, include the good run, and count one unreadable run (the CLI exits 1 on that count).
"""

import json

import pytest

from stepwise.plots.report import build_report, build_run_report

GOOD = {"experiment": "good_run", "passed": True, "wall_time_s": 1.5,
        "checks": [{"name": "slope", "passed": True, "value": 1.0, "op": "<=", "threshold": 2.0}]}

# (case, bytes of the bad results.json, words the problem must contain). All nine aborted the report (a
# JSONDecodeError, KeyError or TypeError traceback without the file's name) before this change.
CASES = [
    ("invalid_json", b'{"passed": true, "checks": [', "not valid JSON"),
    ("empty_file", b"", "empty file"),
    ("not_utf8", b"\xff\xfe\x00garbage", "not UTF-8"),
    ("not_an_object", b"[1, 2, 3]", "expected an object"),
    ("missing_passed", json.dumps({"checks": []}).encode(), "no 'passed' field"),
    ("missing_checks", json.dumps({"passed": True}).encode(), "no 'checks' field"),
    ("checks_not_a_list", json.dumps({"passed": True, "checks": {"a": 1}}).encode(), "'checks' is"),
    ("check_missing_name", json.dumps({"passed": False, "checks": [{"passed": True}]}).encode(),
     "check 0 has no 'name' field"),
    ("check_missing_passed", json.dumps({"passed": False, "checks": [{"name": "x"}]}).encode(),
     "check 0 has no 'passed' field"),
]


def write_runs(root, bad_bytes):
    (root / "a_good").mkdir(parents=True)
    (root / "a_good" / "results.json").write_text(json.dumps(GOOD))
    (root / "b_bad").mkdir()
    bad = root / "b_bad" / "results.json"
    bad.write_bytes(bad_bytes)
    return bad


@pytest.mark.parametrize("case,data,problem", CASES, ids=[c[0] for c in CASES])
def test_bad_results_json_is_a_row(tmp_path, case, data, problem):
    bad = write_runs(tmp_path / "runs", data)
    out = tmp_path / "report.html"
    report = build_report(tmp_path / "runs", out)
    text = out.read_text()
    assert report.path == out and (report.runs, report.passed, report.unreadable) == (1, 1, 1)
    assert str(bad) in text and problem in text.replace("&#x27;", "'")
    assert "UNREADABLE" in text and "a_good" in text and "slope" in text


def test_all_good_runs_count_no_unreadable(tmp_path):
    (tmp_path / "runs" / "a_good").mkdir(parents=True)
    (tmp_path / "runs" / "a_good" / "results.json").write_text(json.dumps(GOOD))
    report = build_report(tmp_path / "runs", tmp_path / "report.html")
    assert (report.runs, report.passed, report.unreadable) == (1, 1, 0)
    assert "UNREADABLE" not in report.path.read_text()


def test_one_run_report_names_the_file_and_problem(tmp_path):
    bad = write_runs(tmp_path / "runs", b"")
    with pytest.raises(ValueError, match="empty file") as info:
        build_run_report(bad.parent, tmp_path / "one.html")
    assert str(bad) in str(info.value) and not (tmp_path / "one.html").exists()
