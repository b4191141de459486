"""`make test-compat`: stepwise's fast test subset on every supported Python x JAX pair -> docs/compat.json.

Each leg is a throwaway virtual environment outside the tree, cached under ``~/.cache/stepwise-compat/<leg>``
(``$STEPWISE_COMPAT_CACHE`` overrides the folder), installed the way ``make install`` installs ``.venv``
(``pip install -e '.[test]'`` with jax/jaxlib pinned to the leg's version by a constraint, then neural-tangents
0.6.5 with ``--no-deps`` and frozendict). A cached environment is reused as it is when its stamp says it was made
for the same Python, JAX, repository and pyproject.toml; made for another Python or JAX it is rebuilt; otherwise
the install commands run again in it (pip changes only what is out of date).

In each leg: which neural-tangents NTK implementations work (``stepwise._compat.nt_working_implementations``),
then one pytest run of tests/test_compat.py, tests/test_ntk.py, tests/test_losses.py, one training test, and
every experiment's smoke test (the ``test_smoke*`` tests of tests/test_experiment_<name>.py for each folder of
experiments/; `stepwise verify`'s smoke test is left out: 13 of the 25 minutes of a leg on a loaded 2-core machine,
for code paths the stepwise_deep and NTK tests already cover). The leg's entry in the "legs" list of docs/compat.json
is replaced; other legs and other keys of that file are kept (it is written atomically).

    python3 tools/compat_matrix.py                      # every leg (make test-compat): about 5 min a leg on 2 cores
    python3 tools/compat_matrix.py --newest-only        # Python 3.13 + newest JAX only (.ci/run)
    python3 tools/compat_matrix.py --legs py311-jax0.7.2,py312-jax0.11.2
    python3 tools/compat_matrix.py --list
    python3 tools/compat_matrix.py --table              # the README's table, from docs/compat.json

Exits 1 when a leg fails (its Python is missing, the install fails, the installed JAX is not the leg's, or a test
fails or errors), 2 on bad arguments. Standard library only: it runs under any Python 3.11+.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPAT_JSON = REPO / "docs" / "compat.json"
CACHE = Path(os.environ.get("STEPWISE_COMPAT_CACHE", Path.home() / ".cache" / "stepwise-compat"))
STAMP = ".stepwise-compat.json"
NT_VERSION = "0.6.5"  # stepwise._compat.NT_VERSION; the Makefile installs the same
LEG_TIMEOUT_S = 3600  # pytest of one leg: far above the few minutes it takes, so only a hang trips it


@dataclasses.dataclass(frozen=True)
class Leg:
    name: str
    python: str  # minor version, e.g. "3.11"
    jax: str | None  # exact jax and jaxlib version; None: the newest pip resolves
    why: str


# jax 0.7.2 is the oldest JAX the dependencies allow: flax 0.12 needs jax>=0.7.1 and equinox (diffrax's) excludes
# 0.7.0 and 0.7.1. One leg per JAX minor release at its last patch; JAX >= 0.11 needs Python >= 3.12.
LEGS = (
    Leg("py311-jax0.7.2", "3.11", "0.7.2", "oldest supported JAX (pyproject's lower bound)"),
    Leg("py311-jax0.8.3", "3.11", "0.8.3", "JAX 0.8"),
    Leg("py311-jax0.9.2", "3.11", "0.9.2", "JAX 0.9"),
    Leg("py311-jax0.10.2", "3.11", "0.10.2", "JAX 0.10 (make install on Python 3.11)"),
    Leg("py312-jax0.11.2", "3.12", "0.11.2", "the GPU image's JAX, with the flax 0.12.x pip pairs with it"),
    Leg("py313-newest", "3.13", None, "newest JAX and flax (what pip gives a new user; CI's leg)"),
)
NEWEST = "py313-newest"

WHOLE_FILES = ("tests/test_compat.py", "tests/test_ntk.py", "tests/test_losses.py")
TRAINING_SMOKE = "tests/test_training_ssl.py::test_first_step_is_plain_sgd_on_the_documented_batch_and_views"


class LegError(RuntimeError):
    """A leg that cannot run (no such Python, failed install, wrong JAX installed)."""


def smoke_tests() -> list[str]:
    """Node ids of every experiment's smoke test(s), found by name so that a new experiment is included by itself."""
    files = [REPO / "tests" / f"test_experiment_{d.name}.py"
             for d in sorted((REPO / "experiments").iterdir()) if (d / "__init__.py").exists()]
    ids = []
    for path in files:
        if not path.exists():
            raise LegError(f"{path.relative_to(REPO)} is missing: every experiment needs a smoke test")
        names = [node.name for node in ast.parse(path.read_text()).body
                 if isinstance(node, ast.FunctionDef) and node.name.startswith("test_smoke")]
        if not names:
            raise LegError(f"{path.relative_to(REPO)} has no test_smoke* test")
        ids += [f"{path.relative_to(REPO)}::{name}" for name in names]
    return ids


def selection() -> list[str]:
    return [*WHOLE_FILES, TRAINING_SMOKE, *smoke_tests()]


def run(cmd: list[str], *, env: dict | None = None, cwd: Path | None = None, capture: bool = True,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, text=True, capture_output=capture, timeout=timeout, check=False)


def find_python(minor: str) -> tuple[list[str], dict]:
    """A command (and environment) that runs Python `minor`: `pythonX.Y` on PATH, else the newest pyenv X.Y.*."""
    candidates = [(["python" + minor], dict(os.environ)), (["python3"], dict(os.environ))]
    if shutil.which("pyenv"):
        listed = run(["pyenv", "versions", "--bare"]).stdout.split()
        versions = sorted((v for v in listed if v.startswith(minor + ".") and v.replace(".", "").isdigit()),
                          key=lambda v: tuple(map(int, v.split("."))))
        candidates += [(["python" + minor], {**os.environ, "PYENV_VERSION": v}) for v in reversed(versions)]
    for cmd, env in candidates:
        if shutil.which(cmd[0], path=env.get("PATH")) is None:
            continue
        out = run([*cmd, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"], env=env)
        if out.returncode == 0 and out.stdout.strip() == minor:
            return cmd, env
    raise LegError(f"Python {minor} not found (tried python{minor}, python3 and pyenv): install it, e.g. "
                   f"`pyenv install {minor}`")


def pip(py: Path, *args: str, log) -> None:
    cmd = [str(py), "-m", "pip", *args]
    print("  $", shlex.join(cmd), flush=True)
    out = run(cmd)
    log.write(f"$ {shlex.join(cmd)}\n{out.stdout}{out.stderr}\n")
    if out.returncode != 0:
        tail = "\n".join(line for line in out.stderr.splitlines() if not line.startswith("WARNING: Location"))
        raise LegError(f"pip failed ({out.returncode}): {shlex.join(cmd)}\n{tail[-3000:]}")


def stamp_for(leg: Leg) -> dict:
    return {"python": leg.python, "jax": leg.jax or "newest", "repo": str(REPO),
            "pyproject_sha256": hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()}


def ensure_env(leg: Leg, rebuild: bool) -> Path:
    """The leg's virtual environment, created, refreshed or reused (see the module docstring); its python."""
    venv = CACHE / leg.name
    py = venv / "bin" / "python"
    want = stamp_for(leg)
    try:
        have = json.loads((venv / STAMP).read_text())
    except (OSError, ValueError):
        have = None
    if have == want and py.exists() and not rebuild:
        print(f"  reusing {venv}", flush=True)
        return py
    made_for_other = have is not None and (have.get("python"), have.get("jax")) != (want["python"], want["jax"])
    if py.exists() and not rebuild and not made_for_other:
        version = run([str(py), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()
        made_for_other = version != leg.python
    if venv.exists() and (rebuild or made_for_other or not py.exists()):
        print(f"  removing {venv} (rebuild)", flush=True)
        shutil.rmtree(venv)
    fresh = not venv.exists()
    if fresh:
        cmd, env = find_python(leg.python)
        print(f"  creating {venv} with {' '.join(cmd)}", flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        made = run([*cmd, "-m", "venv", str(venv)], env=env)
        if made.returncode != 0:
            raise LegError(f"python{leg.python} -m venv failed: {made.stderr.strip()}")
    (venv / STAMP).unlink(missing_ok=True)  # a half-finished install must not look finished
    with open(venv / "install.log", "a") as log, tempfile.TemporaryDirectory() as tmp:
        constraint = Path(tmp) / "constraints.txt"
        constraint.write_text(f"jax=={leg.jax}\njaxlib=={leg.jax}\n" if leg.jax else "")
        quiet = ["--quiet", "--disable-pip-version-check"]
        if fresh:
            pip(py, "install", *quiet, "--upgrade", "pip", log=log)
        pip(py, "install", *quiet, "-c", str(constraint), "-e", f"{REPO}[test]", log=log)
        # As the Makefile: neural-tangents' declared requirements are those of its TF port, never imported.
        pip(py, "install", *quiet, "--no-deps", f"neural-tangents=={NT_VERSION}", log=log)
        pip(py, "install", *quiet, "-c", str(constraint), "frozendict>=2.3.8", log=log)
    (venv / STAMP).write_text(json.dumps(want, indent=1) + "\n")
    return py


PROBE = r"""
import importlib.metadata as md, json, platform, sys
from pathlib import Path
import stepwise
versions = {}
for dist in ("jax", "jaxlib", "flax", "neural-tangents"):
    try:
        versions[dist] = md.version(dist)
    except md.PackageNotFoundError:
        versions[dist] = None
out = {"python": platform.python_version(), "stepwise": str(Path(stepwise.__file__).resolve().parent), **versions}
try:
    from stepwise import _compat
    out["nt_implementations_working"] = list(_compat.nt_working_implementations())
except Exception as err:  # the leg records why none works; the tests then say what that breaks
    out["nt_implementations_working"] = []
    out["nt_error"] = f"{type(err).__name__}: {err}"
print("PROBE " + json.dumps(out))
"""


def probe(leg: Leg, py: Path) -> dict:
    """Installed versions and working neural-tangents implementations, from outside the tree (so the import of
    stepwise goes through the editable install, which must point at this repository)."""
    out = run([str(py), "-c", PROBE], cwd=Path(tempfile.gettempdir()))
    lines = [line for line in out.stdout.splitlines() if line.startswith("PROBE ")]
    if out.returncode != 0 or not lines:
        raise LegError(f"probe failed in {py}:\n{out.stderr[-3000:]}")
    found = json.loads(lines[-1][len("PROBE "):])
    if Path(found["stepwise"]) != REPO / "stepwise":
        raise LegError(f"{py} imports stepwise from {found['stepwise']}, not from {REPO}")
    if leg.jax and (found["jax"], found["jaxlib"]) != (leg.jax, leg.jax):
        raise LegError(f"{leg.name} needs jax/jaxlib {leg.jax}, installed: {found['jax']}/{found['jaxlib']}")
    return found


def run_tests(leg: Leg, py: Path, tests: list[str]) -> dict:
    """One pytest run of the subset; counts from its JUnit XML."""
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "--durations=10", *tests]
        print("  $", shlex.join([str(py), *args]), flush=True)
        start = time.perf_counter()
        try:
            rc = subprocess.run([str(py), *args, f"--junitxml={junit}"], cwd=REPO, timeout=LEG_TIMEOUT_S,
                                check=False).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        wall = time.perf_counter() - start
        failed_ids, counts = [], {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        if junit.exists():
            for suite in ET.parse(junit).getroot().iter("testsuite"):
                for key in counts:
                    counts[key] += int(suite.get(key, 0))
                for case in suite.iter("testcase"):
                    if case.find("failure") is not None or case.find("error") is not None:
                        failed_ids.append(f"{case.get('classname')}::{case.get('name')}")
    failed = counts["failures"] + counts["errors"]
    home = str(Path.home())
    shown = str(py).replace(home, "~", 1) if str(py).startswith(home) else str(py)
    return {
        "tests_passed": counts["tests"] - failed - counts["skipped"],
        "tests_failed": failed + (1 if rc not in (0, 1) and not failed else 0),  # a crash, timeout, or no tests
        "tests_skipped": counts["skipped"],
        "wall_time_s": round(wall, 1),
        "pytest_exit_code": rc,
        "failed_tests": failed_ids,
        "command": shlex.join([shown, *args]),
    }


def run_leg(leg: Leg, tests: list[str], rebuild: bool) -> dict:
    print(f"== {leg.name}: Python {leg.python}, jax {leg.jax or 'newest'} ({leg.why})", flush=True)
    entry: dict = {"name": leg.name, "python": leg.python, "jax": leg.jax}
    start = time.perf_counter()
    try:
        py = ensure_env(leg, rebuild)
        entry["install_time_s"] = round(time.perf_counter() - start, 1)
        found = probe(leg, py)
        entry.update(python=found["python"], jax=found["jax"], jaxlib=found["jaxlib"], flax=found["flax"],
                     neural_tangents=found["neural-tangents"],
                     nt_implementations_working=found["nt_implementations_working"])
        if "nt_error" in found:
            entry["nt_error"] = found["nt_error"]
        entry.update(run_tests(leg, py, tests))
    except LegError as err:
        print(f"  LEG FAILED: {err}", file=sys.stderr, flush=True)
        entry["error"] = str(err)
    entry["date"] = datetime.date.today().isoformat()
    entry["ok"] = "error" not in entry and entry.get("tests_failed") == 0 and entry.get("pytest_exit_code") == 0
    return entry


def write_legs(entries: list[dict]) -> None:
    """Replace these legs' entries in docs/compat.json (keeping other legs and other keys), atomically."""
    try:
        data = json.loads(COMPAT_JSON.read_text())
    except FileNotFoundError:
        data = {}
    ran = {e["name"] for e in entries}
    order = [leg.name for leg in LEGS]
    legs = [e for e in data.get("legs", []) if e.get("name") not in ran and e.get("name") in order] + entries
    data["legs"] = sorted(legs, key=lambda e: order.index(e["name"]))
    COMPAT_JSON.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=COMPAT_JSON.parent, prefix=".compat.", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, COMPAT_JSON)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def markdown_table() -> str:
    """The README's table, from docs/compat.json."""
    rows = ["| Python | jax / jaxlib | flax | neural-tangents implementations working "
            "| tests passed / failed / skipped | wall time |", "| --- | --- | --- | --- | --- | --- |"]
    for e in json.loads(COMPAT_JSON.read_text()).get("legs", []):
        impls = ", ".join(f"`{i}`" for i in e.get("nt_implementations_working") or []) or "none"
        jax_ = e.get("jax") if e.get("jax") == e.get("jaxlib") else f"{e.get('jax')} / {e.get('jaxlib')}"
        counts = (f"{e.get('tests_passed', '-')} / {e.get('tests_failed', '-')} / {e.get('tests_skipped', '-')}"
                  if "error" not in e else "did not run")
        wall = f"{e['wall_time_s'] / 60:.1f} min" if "wall_time_s" in e else "-"
        rows.append(f"| {e['python']} | {jax_} | {e.get('flax', '-')} | {impls} | {counts} | {wall} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legs", help="comma-separated leg names (default: all; see --list)")
    parser.add_argument("--newest-only", action="store_true", help=f"only {NEWEST} (CI)")
    parser.add_argument("--rebuild", action="store_true", help="recreate the legs' environments from scratch")
    parser.add_argument("--list", action="store_true", help="print the legs and the test selection, run nothing")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/compat.json")
    parser.add_argument("--table", action="store_true", help="print the README's table from docs/compat.json")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table())
        return 0
    by_name = {leg.name: leg for leg in LEGS}
    if args.newest_only and args.legs:
        parser.error("--newest-only and --legs exclude each other")
    names = [NEWEST] if args.newest_only else (args.legs.split(",") if args.legs else list(by_name))
    unknown = [n for n in names if n not in by_name]
    if unknown:
        parser.error(f"unknown legs {unknown}; known: {', '.join(by_name)}")
    try:
        tests = selection()
    except LegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.list:
        for leg in LEGS:
            print(f"{leg.name:18} Python {leg.python}  jax {leg.jax or 'newest':8} {leg.why}")
        print("tests:", *tests, sep="\n  ")
        return 0
    entries = [run_leg(by_name[n], tests, args.rebuild) for n in names]
    if not args.no_write:
        write_legs(entries)
        print(f"wrote {COMPAT_JSON.relative_to(REPO)}")
    print(f"\n{'leg':18} {'python':8} {'jax':9} {'flax':8} {'NT impls':42} {'pass':>5} {'fail':>5} {'skip':>5} "
          f"{'time':>7}")
    for e in entries:
        print(f"{e['name']:18} {e['python']:8} {str(e.get('jax')):9} {str(e.get('flax')):8} "
              f"{','.join(e.get('nt_implementations_working', [])) or '-':42} {e.get('tests_passed', '-'):>5} "
              f"{e.get('tests_failed', '-'):>5} {e.get('tests_skipped', '-'):>5} {e.get('wall_time_s', '-'):>6}s"
              f"  {'ok' if e['ok'] else 'FAILED ' + e.get('error', ', '.join(e.get('failed_tests', [])))[:200]}")
    return 0 if all(e["ok"] for e in entries) else 1


if __name__ == "__main__":
    sys.exit(main())
