"""Bad output paths and resume requests on the command line (issue 16 items 1, 2, 7): refused before any compute.

One table of cases, each run for ``stepwise run linear_bt --smoke``, ``stepwise run stepwise_deep --smoke`` and
``stepwise verify --smoke``. Every case asserts exit status 2, a message naming the flag or the path, no traceback,
nothing created or changed in the test folder, and no compute: subprocess cases return within SECONDS (a smoke run
takes 15-60 s on the 2-core CPU, the refusal ~1-5 s), in-process cases (``stepwise.cli.main``) with the compute
replaced by a function that fails the test when called.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest

from stepwise import cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = f"{ROOT}/experiments/custom_architecture.py:make_model"
COMMANDS = {
    "linear_bt": ["run", "linear_bt", "--smoke"],
    "stepwise_deep": ["run", "stepwise_deep", "--smoke"],
    "verify": ["verify", "--smoke", "--model", EXAMPLE],
}
SECONDS = 12.0  # a refusal (interpreter start + argument parsing, + imports for the config-dependent checks)


def _existing_file(tmp: Path) -> list[str]:
    (tmp / "afile").write_text("mine\n")
    return ["--out", "afile"]


def _under_a_file(tmp: Path) -> list[str]:
    (tmp / "afile").write_text("mine\n")
    return ["--out", "afile/run"]


def _complete_run(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    (tmp / "run" / "results.json").write_text(json.dumps({"experiment": "linear_bt", "passed": True, "checks": []}))
    (tmp / "run" / "trajectory.npz").write_bytes(b"seed-0 data")
    return ["--out", "run"]


def _incomplete_run(tmp: Path) -> list[str]:  # an old run killed before results.json: not replaced silently
    (tmp / "run").mkdir()
    (tmp / "run" / "trajectory.npz").write_bytes(b"seed-1 data")
    return ["--out", "run"]


def _foreign_files(tmp: Path) -> list[str]:  # never replaced, even with --overwrite
    (tmp / "docs").mkdir()
    (tmp / "docs" / "thesis.tex").write_text("my thesis\n")
    return ["--out", "docs", "--overwrite"]


def _interrupted_run(tmp: Path) -> list[str]:  # its checkpoint must not be discarded by a plain rerun
    (tmp / "run.partial").mkdir()
    (tmp / "run.partial" / "checkpoint.msgpack").write_bytes(b"\x80")
    return ["--out", "run"]


def _live_writer(tmp: Path) -> list[str]:  # another process (here: the test's own) is writing this run
    import socket

    from stepwise.io import _process_start

    (tmp / "run.partial").mkdir()
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid())}
    (tmp / "run.partial" / ".owner.json").write_text(json.dumps(owner))
    return ["--out", "run"]


def _read_only_folder(tmp: Path) -> list[str]:
    if os.geteuid() == 0:
        pytest.skip("chmod does not restrict root; the /sys and EROFS cases cover unwritable paths")
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)
    return ["--out", "ro/run"]


Case = namedtuple("Case", "name setup names how")
# how: "subprocess" (exit status, stderr, wall time) or "inprocess" (cli.main with a patch; the compute is replaced
# by a function that fails the test).
CASES = [
    Case("existing_file", _existing_file, ["--out", "afile", "existing file"], "subprocess"),
    Case("empty_string", lambda tmp: ["--out", ""], ["--out is empty"], "subprocess"),
    Case("proc_path", lambda tmp: ["--out", "/proc/stepwise_run"], ["--out /proc/stepwise_run"], "subprocess"),
    Case("sys_path", lambda tmp: ["--out", "/sys/stepwise_run"], ["--out /sys/stepwise_run"], "subprocess"),
    Case("under_a_file", _under_a_file, ["afile", "is a file"], "subprocess"),
    Case("current_directory", lambda tmp: ["--out", "."], ["--out .", "current directory"], "subprocess"),
    Case("complete_run_without_overwrite", _complete_run, ["already holds a complete run", "--overwrite"],
         "subprocess"),
    Case("incomplete_run_without_overwrite", _incomplete_run, ["trajectory.npz", "--overwrite"], "subprocess"),
    Case("foreign_files_even_with_overwrite", _foreign_files, ["thesis.tex", "not a stepwise run"], "subprocess"),
    Case("interrupted_run_without_resume", _interrupted_run, ["run.partial", "--resume"], "subprocess"),
    Case("live_writer", _live_writer, ["another stepwise process", "run.partial"], "subprocess"),
    Case("resume_without_checkpoint", lambda tmp: ["--out", "run", "--resume"], ["--resume", "nothing to resume"],
         "subprocess"),
    Case("checkpoint_every_zero", lambda tmp: ["--out", "run", "--checkpoint-every", "0"], ["--checkpoint-every"],
         "subprocess"),
    Case("read_only_folder", _read_only_folder, ["ro"], "subprocess"),
    Case("read_only_filesystem", lambda tmp: ["--out", "run"], ["--out", "Read-only file system"], "erofs"),
    Case("full_disk", lambda tmp: ["--out", "run"], ["not enough free space", "--out"], "full_disk"),
]


def _tree(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``folder`` with its mode and content (None for folders)."""
    return {str(p.relative_to(folder)): (p.stat().st_mode, None if p.is_dir() else p.read_bytes())
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_output_is_refused_before_compute(tmp_path, monkeypatch, capsys, command, case):
    work = tmp_path / "work"
    work.mkdir()
    flags = case.setup(work)
    before = _tree(work)
    argv = [*COMMANDS[command], *flags]
    names = case.names
    if command == "linear_bt" and case.name in ("resume_without_checkpoint", "checkpoint_every_zero"):
        names = [flags[-1] if case.name == "resume_without_checkpoint" else "--checkpoint-every"]
    if case.how == "subprocess":
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "stepwise.cli", *argv], cwd=work, capture_output=True, text=True,
                              timeout=300, env=os.environ | {"PYTHONPATH": str(ROOT)})
        seconds = time.perf_counter() - t0
        code, err = proc.returncode, proc.stderr
        assert seconds < SECONDS, f"took {seconds:.1f} s: the run computed before refusing ({err[-500:]})"
    else:
        monkeypatch.chdir(work)
        monkeypatch.setattr(cli, "_execute", _no_compute)
        if case.how == "full_disk":
            usage = shutil.disk_usage(work)
            monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10_000_000))
        else:  # a read-only filesystem: every mkdir under the work folder fails with EROFS
            real_mkdir = pathlib.Path.mkdir

            def mkdir(self, *args, **kwargs):
                if str(self).startswith(str(work)):
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
                return real_mkdir(self, *args, **kwargs)

            monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
        code = cli.main(argv)
        err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    assert err.startswith("stepwise: error:") and err.count("\n") == 1, err  # one message
    for name in names:
        assert name in err, (name, err)
    assert _tree(work) == before  # nothing created, nothing removed, nothing changed
    assert not Path("/proc/stepwise_run.partial").exists() and not Path("/sys/stepwise_run.partial").exists()


def _no_compute(*args, **kwargs):
    raise AssertionError("the run started computing although its output folder is unusable")


def test_report_output_is_checked_before_reading_runs(tmp_path, capsys):
    (tmp_path / "afolder").mkdir()
    for out, name in ((str(tmp_path / "afolder"), "existing folder"), ("", "--out is empty"),
                      ("/proc/stepwise_report.html", "/proc")):
        assert cli.main(["report", "--runs", str(tmp_path / "no_runs"), "--out", out]) == 2
        err = capsys.readouterr().err
        assert name in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afolder"]
