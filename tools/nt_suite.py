"""Run neural-tangents 0.6.5's own test files against stepwise's shim and record the results (``make test-nt``).

Usage (the interpreter is the virtual environment under test; stepwise must be installed in it)::

    .venv/bin/python tools/nt_suite.py                  # what `make test-nt` runs
    make test-nt VENV=~/.cache/stepwise-compat/py313-newest

What it does:

1. Fetches neural-tangents' 0.6.5 source distribution from PyPI (``pip download --no-deps --no-binary :all:``)
   into a cache outside the tree (``$STEPWISE_NT_CACHE``, default ``~/.cache/stepwise-nt``), checks its SHA-256,
   and extracts only its ``tests/`` there. None of it is copied into the repository; the neural-tangents package
   the tests exercise is the one installed in the environment, imported through
   :func:`stepwise._compat.import_neural_tangents` (``tools/nt_pytest_plugin.py`` says exactly what the plugin
   changes in the test process).
2. Installs the suite's test-only requirements (absl-py, more-itertools) into that environment if missing; never
   as part of ``make install``.
3. Runs each file of :data:`FILES` (the parts of neural-tangents stepwise documents as supported) in its own
   single-process pytest with a JUnit report; the whole run is bounded by ``--timeout`` seconds.
4. Writes passed / failed / errors / skipped per file, the failing test ids, the versions and the wall times into
   ``docs/compat.json`` under ``"neural_tangents_suite"`` -> ``"<python>-<jax>"``, leaving every other key of that
   shared file as it is (read, update one key, atomic replace).

Exit status 0 if every file ran to completion with no failures or errors, else 1. All ten files took 51 min on
the shared 2-core CPU under load 8-14 (python 3.11, jax 0.10.2; per-file times in docs/compat.json), hence the
default bound of 90 min (``--timeout``); ``--files`` runs a subset, merged with the files recorded before.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NT_VERSION = "0.6.5"
SDIST = f"neural-tangents-{NT_VERSION}.tar.gz"
# PyPI's sha256 of neural-tangents-0.6.5.tar.gz (files on PyPI are immutable).
SDIST_SHA256 = "5565190e5b20c8578b2c8fbf1498ad9d8f6881c8c702e7af55189707a10843c3"
TEST_REQUIREMENTS = {"absl": "absl-py", "more_itertools": "more-itertools"}
# batching and monte_carlo assume the random stream JAX had before jax_threefry_partitionable became the default
# (0.5). Measured on jax 0.12.0.1 with the new stream: batching's analytic-composition tests draw x1 (8, ...) and
# x2 (2, ...) from the same key, which now makes x2 equal x1's first rows, and the kernels' x1_is_x2 flags then
# differ (8 of 34 fail); monte_carlo's test_monte_carlo_vs_analytic_ntk0 misses its 2e-2 tolerance (0.022).
OLD_RANDOM_STREAM = {"JAX_THREEFRY_PARTITIONABLE": "0"}
# The test files of what stepwise supports, with the environment each needs.
FILES: dict[str, dict[str, str]] = {
    "tests/empirical_test.py": {},  # implementations 1, 2 and AUTO, linearize, taylor_expand, Flax models
    "tests/stax/stax_test.py": {},
    "tests/stax/linear_test.py": {},
    "tests/stax/elementwise_test.py": {},
    "tests/stax/branching_test.py": {},
    "tests/stax/combinators_test.py": {},
    "tests/stax/requirements_test.py": {},
    "tests/batching_test.py": OLD_RANDOM_STREAM,
    "tests/monte_carlo_test.py": OLD_RANDOM_STREAM,
    "tests/predict_test.py": {},
}
# Not run: rules_test.py (structured-derivative rules: implementation 3), experimental/ (TensorFlow),
# the example scripts' tests (*_numerical_test, function_space, imdb, infinite_fcn, weight_space, empirical_ntk:
# they need the sdist's examples/ and datasets), elementwise_test.py at the top level (an example script's test).


def cache_dir() -> Path:
    return Path(os.environ.get("STEPWISE_NT_CACHE", Path.home() / ".cache" / "stepwise-nt"))


def fetch_tests(cache: Path) -> Path:
    """The directory holding neural-tangents 0.6.5's ``tests/`` package, fetched and extracted if needed."""
    run_dir = cache / f"neural-tangents-{NT_VERSION}-tests"
    if (run_dir / "tests" / "test_utils.py").exists():
        return run_dir
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / SDIST
    if not sdist.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"neural-tangents=={NT_VERSION}", "-d", str(cache)], check=True)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{sdist}: sha256 {digest}, expected {SDIST_SHA256}; delete it to download it again")
    prefix = f"neural-tangents-{NT_VERSION}/"
    tmp = cache / f".extract-{os.getpid()}"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix + "tests/")]
        for m in members:
            m.name = m.name[len(prefix):]
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp, members=members, **kwargs)
    os.replace(tmp, run_dir)
    return run_dir


def ensure_test_requirements() -> list[str]:
    missing = [pkg for module, pkg in TEST_REQUIREMENTS.items() if importlib.util.find_spec(module) is None]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *missing], check=True)
    return missing


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "flax", "numpy", "scipy", "neural-tangents"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def run_file(run_dir: Path, file: str, extra_env: dict[str, str], timeout: float, report: Path) -> dict:
    env = dict(os.environ, **extra_env)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tools"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "pytest", file, "-p", "nt_pytest_plugin", "-p", "no:cacheprovider",
           "-q", "-rfE", "--tb=line", f"--junitxml={report}", "-o", "junit_family=xunit2"]
    if importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", "0"]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=run_dir, env=env, timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return {"status": "timed out", "wall_s": round(time.monotonic() - start, 1), "env": extra_env}
    wall = round(time.monotonic() - start, 1)
    result = {"wall_s": wall, "env": extra_env}
    if not report.exists():
        return {**result, "status": f"pytest exited {proc.returncode} without a report",
                "output_tail": (proc.stdout + proc.stderr)[-2000:]}
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failing, skip_reasons, by_class = [], {}, {}
    for case in ET.parse(report).getroot().iter("testcase"):
        cls = case.get("classname", "").rsplit(".", 1)[-1]
        name = f"{cls}::{case.get('name')}"
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        kind = "passed" if outcome is None else {"failure": "failed", "error": "errors"}.get(outcome.tag, outcome.tag)
        by_class.setdefault(cls, {}).setdefault(kind, 0)
        by_class[cls][kind] += 1
        if outcome is None:
            counts["passed"] += 1
        elif outcome.tag == "skipped":
            counts["skipped"] += 1
            reason = (outcome.get("message") or "").strip()[:200]
            skip_reasons[reason] = skip_reasons.get(reason, 0) + 1
        else:
            counts["failed" if outcome.tag == "failure" else "errors"] += 1
            failing.append(f"{name}: {(outcome.get('message') or '').strip()[:300]}")
    report.unlink()
    status = "ok" if proc.returncode in (0, 5) and not (counts["failed"] or counts["errors"]) else "failed"
    return {"status": status, **counts, **result, "by_class": by_class, "failing": failing,
            "skip_reasons": skip_reasons}


def write_compat(out: Path, key: str, entry: dict) -> dict:
    """Merge this run's files into ``[neural_tangents_suite][key]`` of the shared JSON file; returns the entry.

    Files run earlier with the same versions are kept (so the suite can be run in parts with ``--files``); the
    totals, wall time and status are recomputed over all files recorded; every other key of the file is kept.
    """
    sys.path.insert(0, str(REPO))
    from stepwise.io import write_json_atomic

    data = json.loads(out.read_text()) if out.exists() else {}  # read just before writing: the file is shared
    suite = data.setdefault("neural_tangents_suite", {})
    previous = suite.get(key, {})
    same_versions = all(previous.get(k) == entry.get(k) for k in ("python", "jax", "jaxlib", "flax", "numpy", "scipy"))
    files = {**(previous.get("files", {}) if same_versions else {}), **entry["files"]}
    files = {f: files[f] for f in FILES if f in files}
    merged = {**entry, "files": files}
    merged["totals"] = {k: sum(r.get(k, 0) for r in files.values()) for k in ("passed", "failed", "errors", "skipped")}
    merged["wall_s"] = round(sum(r.get("wall_s", 0) for r in files.values()), 1)
    if any(r["status"] != "ok" for r in files.values()):
        merged["status"] = "failed"
    else:
        merged["status"] = "ok" if len(files) == len(FILES) else f"incomplete: {len(files)} of {len(FILES)} files run"
    suite[key] = merged
    write_json_atomic(out, data)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=5400, help="seconds for all files together")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "compat.json")
    parser.add_argument("--files", nargs="*", default=list(FILES), help="a subset of the default files")
    args = parser.parse_args(argv)
    unknown = [f for f in args.files if f not in FILES]
    if unknown:
        parser.error(f"not among the supported files: {unknown}; choose from {list(FILES)}")

    import jax

    from stepwise._compat import import_neural_tangents, nt_structured_derivatives_work

    nt = import_neural_tangents()
    if nt.__version__ != NT_VERSION:
        raise SystemExit(f"neural-tangents {nt.__version__} is installed; this suite is {NT_VERSION}'s")
    run_dir = fetch_tests(cache_dir())
    installed = ensure_test_requirements()
    env = versions()
    key = f"{platform.python_version_tuple()[0]}.{platform.python_version_tuple()[1]}-{jax.__version__}"
    print(f"neural-tangents {NT_VERSION} tests from {run_dir} on python {env['python']}, jax {env['jax']} "
          f"({sys.executable})", flush=True)

    start = time.monotonic()
    files = {}
    for file in args.files:
        left = args.timeout - (time.monotonic() - start)
        if left <= 0:
            files[file] = {"status": "not run (time budget spent)"}
            continue
        files[file] = run_file(run_dir, file, FILES[file], left, run_dir / f".report-{os.getpid()}.xml")
        r = files[file]
        print(f"  {file}: {r['status']}, {r.get('passed', 0)} passed, {r.get('failed', 0)} failed, "
              f"{r.get('errors', 0)} errors, {r.get('skipped', 0)} skipped, {r.get('wall_s', 0)} s", flush=True)
        for line in r.get("failing", [])[:20]:
            print(f"    {line}", flush=True)
    wall = round(time.monotonic() - start, 1)
    totals = {k: sum(r.get(k, 0) for r in files.values()) for k in ("passed", "failed", "errors", "skipped")}
    ok = all(r["status"] == "ok" for r in files.values())
    for r in files.values():
        r["date"] = datetime.date.today().isoformat()
    entry = {
        **env,
        "structured_derivatives": "works" if nt_structured_derivatives_work() else "refused",
        "nt_num_generated_cases": int(os.environ.get("NT_NUM_GENERATED_CASES", "4")),
        "files": files,
        "adaptations": [
            "neural_tangents imported through stepwise._compat.import_neural_tangents (shimmed and repaired)",
            "jax.tree_map and jax.core.Primitive aliased in the test process (the test files use them)",
            "where STRUCTURED_DERIVATIVES is refused: StructuredDerivativesTest skipped; loops over "
            "nt.NtkImplementation run over AUTO, JACOBIAN_CONTRACTION, NTK_VECTOR_PRODUCTS; "
            "_DEFAULT_TESTING_NTK_IMPLEMENTATION = JACOBIAN_CONTRACTION (see tools/nt_pytest_plugin.py)",
            "FlaxOtherTest, FlaxCnnTest: run on CPU (neural-tangents skips them there for speed)",
            "batching_test, monte_carlo_test: JAX_THREEFRY_PARTITIONABLE=0 (their inputs and Monte-Carlo "
            "tolerances assume the old random stream; see tools/nt_suite.py)",
        ],
    }
    merged = write_compat(args.out, key, entry)
    print(f"{'ok' if ok else 'FAILED'}: {totals} in {wall} s (test requirements installed now: {installed or 'none'})")
    print(f"-> {args.out} [neural_tangents_suite][{key}]: {merged['status']}, {merged['totals']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
