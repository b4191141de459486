"""Collects the steps of ``benchmarks/gpu/check.sh`` into at most 8 flat files in ``--out`` (see check.sh).

``gpu_check.json``: per step its exit code and wall time; the device test results (JUnit counts and failures);
the headline figures (JAX / PyTorch step time per precision, well-separated steps per loss at GPU scale, NTK FLOP/s
as a fraction of the measured GEMM rate of the same precision at the largest n) with the issue's targets; each
deep run's ``results.json``; versions and device. ``ran`` is true when every step ran to its end (a deep run whose
checks fail still ran: its verdict is in its results); ``targets_met`` says whether the targets were reached.
Exit status: 0 when every step ran, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

TARGETS = {
    "jax_over_torch_step_time": ("<=", 1.0, "JAX step <= PyTorch step on the GPU (same batch, same precision)"),
    "ntk_fraction_of_gemm_at_largest_n": (">=", 0.5, "empirical NTK >= 50% of the matmul bound at n = 10000"),
    "min_steps_detected": (">=", 4, ">= 4 separated steps per loss at GPU scale"),
}


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _junit(path: Path) -> dict:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as err:
        return {"error": f"no JUnit report: {err}"}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = suite.findall("testcase")
    failed = [f"{c.get('name')}: "
              f"{(c.find('failure') if c.find('failure') is not None else c.find('error')).get('message', '')[:300]}"
              for c in cases if c.find("failure") is not None or c.find("error") is not None]
    skipped = [c.get("name") for c in cases if c.find("skipped") is not None]
    return {"tests": len(cases), "failed": len(failed), "skipped": len(skipped), "passed":
            len(cases) - len(failed) - len(skipped), "failures": failed, "skipped_names": skipped,
            "time_s": float(suite.get("time", "nan"))}


def _ntk_headline(ntk: dict | None) -> dict | None:
    if not ntk:
        return None
    done = [c for c in ntk.get("cases", []) if "compute_s" in c]
    if not done:
        return {"cases": 0}
    largest = max(done, key=lambda c: c["n"])
    gemm = (ntk.get("machine") or {}).get("gemm_flops_per_s")
    return {
        "n": largest["n"], "compute_s": largest["compute_s"], "plan_s": largest["plan_s"],
        "achieved_flops_per_s": largest["achieved_flops_per_s"], "gemm_flops_per_s": gemm,
        "fraction_of_gemm": None if not gemm else largest["achieved_flops_per_s"] / gemm,
        "device_peak_bytes": largest.get("device_peak_bytes"), "estimated_peak_bytes": largest["estimated_peak_bytes"],
        "budget_bytes": largest["budget_bytes"], "within_budget": largest.get("within_budget"),
        "skipped_or_failed": [{k: c.get(k) for k in ("n", "skipped", "error")} for c in ntk["cases"]
                              if "compute_s" not in c],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", default="0")
    parser.add_argument("--wall", type=float, default=float("nan"))
    args = parser.parse_args(argv)
    work, out = args.work, args.out
    out.mkdir(parents=True, exist_ok=True)

    steps = {}
    for line in (work / "status.tsv").read_text().splitlines():
        name, rc, seconds = line.split("\t")
        steps[name] = {"exit": int(rc), "wall_s": int(seconds)}
    summary: dict = {"dry_run": args.dry_run == "1", "wall_s": args.wall, "steps": steps,
                     "tests": _junit(work / "tests.xml")}

    train = _load(work / "bench_train_gpu.json")
    if train is not None:
        shutil.copy(work / "bench_train_gpu.json", out / "bench_train_gpu.json")
    ntk = {prec: _load(work / f"ntk_{prec}" / "bench_ntk.json") for prec in ("default", "highest")}
    if any(ntk.values()):
        (out / "bench_ntk_gpu.json").write_text(json.dumps(ntk, indent=1))
    if (work / "ntk_default" / "bench_ntk.png").exists():
        shutil.copy(work / "ntk_default" / "bench_ntk.png", out / "bench_ntk_gpu.png")

    deep = {}
    for run_dir in sorted(work.glob("deep_*")):
        loss = run_dir.name[len("deep_"):]
        results = _load(run_dir / "results.json")
        deep[loss] = results
        if (run_dir / "stepwise_deep.png").exists():
            shutil.copy(run_dir / "stepwise_deep.png", out / f"stepwise_deep_{loss}.png")
    summary["deep_runs"] = deep

    headline: dict = {}
    if train:
        headline["train_step"] = {row["mode"]: {k: row.get(k) for k in ("jax_step_ms", "torch_step_ms",
                                                                         "ratio_jax_over_torch", "jax_tflops_per_s",
                                                                         "flops_per_step")}
                                  for row in train.get("modes", [])}
    headline["ntk"] = {prec: _ntk_headline(data) for prec, data in ntk.items()}
    headline["steps_detected"] = {loss: (r or {}).get("summary", {}).get("steps_detected") for loss, r in deep.items()}
    summary["headline"] = headline

    values = {
        "jax_over_torch_step_time": min((row.get("ratio_jax_over_torch") or float("inf"))
                                        for row in (train or {}).get("modes", [{}])) if train else None,
        "ntk_fraction_of_gemm_at_largest_n": max(((h or {}).get("fraction_of_gemm") or 0.0)
                                                 for h in headline["ntk"].values()),
        "min_steps_detected": min((v for v in headline["steps_detected"].values() if v is not None), default=None),
    }
    summary["targets"] = {
        name: {"value": values[name], "op": op, "threshold": threshold, "reason": reason,
               "met": values[name] is not None and (values[name] <= threshold if op == "<=" else
                                                    values[name] >= threshold)}
        for name, (op, threshold, reason) in TARGETS.items()
    }
    summary["targets_met"] = all(t["met"] for t in summary["targets"].values())

    def ran(name: str, info: dict) -> bool:
        # `stepwise run` exits 1 when a check fails but its results were written: the step ran.
        if name.startswith("deep_"):
            return info["exit"] in (0, 1) and deep.get(name[len("deep_"):]) is not None
        if name == "tests":
            return info["exit"] in (0, 1) and "error" not in summary["tests"]
        return info["exit"] == 0

    summary["ran"] = all(ran(name, info) for name, info in steps.items())
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from stepwise.io import environment

        summary["environment"] = environment()
    except Exception as err:  # noqa: BLE001 - the summary must be written whatever failed before it
        summary["environment"] = {"error": repr(err)}
    tmp = out / "gpu_check.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    tmp.replace(out / "gpu_check.json")
    print(json.dumps({"ran": summary["ran"], "targets": {k: (v["value"], v["met"]) for k, v in
                                                         summary["targets"].items()},
                      "steps": steps, "tests": {k: summary["tests"].get(k) for k in ("passed", "failed", "skipped")}},
                     default=str))
    return 0 if summary["ran"] else 1


if __name__ == "__main__":
    sys.exit(main())
