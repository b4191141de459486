"""`GPU_DRYRUN=1 make gpu-check`: the prepared GPU check runs every step for a few iterations here (on the CPU), so
the script that a session lent a GPU runs once is known to work before it gets there."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_runs_every_step_and_writes_at_most_8_flat_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "GPU_DRYRUN": "1", "OUT": str(out), "PY": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu/check.sh")], env=env, capture_output=True, text=True,
                          timeout=1600)
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["ran"] and summary["dry_run"]
    assert set(summary["steps"]) == {"tests", "train", "ntk_default", "ntk_highest", "deep", "deep_barlow_twins"}
    assert summary["tests"]["passed"] >= 1 and summary["tests"]["failed"] == 0
    assert summary["deep_runs"]["barlow_twins"]["checks"]  # a real results.json, with its checks
    assert summary["headline"]["train_step"]["float32"]["jax_step_ms"] > 0
    assert summary["headline"]["ntk"]["default"]["achieved_flops_per_s"] > 0
    assert set(summary["targets"]) == {"jax_over_torch_step_time", "ntk_fraction_of_gemm_at_largest_n",
                                       "min_steps_detected"}
    files = list(out.iterdir())
    assert len(files) <= 8 and all(f.is_file() for f in files)  # what the device tool brings back
    assert {"gpu_check.json", "bench_train_gpu.json", "bench_ntk_gpu.json", "log.txt"} <= {f.name for f in files}
