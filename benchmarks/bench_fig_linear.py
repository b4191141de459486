"""Benchmark: wall time of `make fig-linear` (both datasets, fresh processes, JAX compilation included).

Target (issue: foundation): <= 60 s on the 2-core CPU machine. Writes JSON (and a bar chart next to it).

    python benchmarks/bench_fig_linear.py --out bench/fig_linear.json [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/fig_linear.json"))
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    from stepwise.io import environment, write_json_atomic

    root = Path(__file__).resolve().parents[1]
    stepwise_cmd = [sys.executable, "-m", "stepwise.cli"]
    totals, per_dataset = [], {"patches": [], "digits": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            t_total = time.perf_counter()
            for dataset in per_dataset:
                t0 = time.perf_counter()
                subprocess.run(
                    [*stepwise_cmd, "run", "linear_bt", "--data.dataset", dataset, "--out", f"{tmp}/{dataset}"],
                    cwd=root, check=True, stdout=subprocess.DEVNULL, env={**os.environ},
                )
                per_dataset[dataset].append(time.perf_counter() - t0)
            totals.append(time.perf_counter() - t_total)
    env = environment()
    result = {
        "benchmark": "fig_linear",
        "what": "wall time of `make fig-linear`: `stepwise run linear_bt` on patches then digits, each a fresh "
        "process (imports, data, JAX compilation, training, theory, figure, results.json)",
        "target_s": TARGET_S,
        "total_s": min(totals),
        "total_s_all": totals,
        "per_dataset_s": {k: min(v) for k, v in per_dataset.items()},
        "meets_target": min(totals) <= TARGET_S,
        "cpus": os.cpu_count(),
        **env,
    }
    write_json_atomic(args.out, result)

    from stepwise.plots._mpl import pyplot, save_atomic

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(list(result["per_dataset_s"]), list(result["per_dataset_s"].values()), color=["tab:blue", "tab:green"])
    ax.axhline(TARGET_S, color="tab:red", ls="--", label=f"target for both: {TARGET_S:.0f} s")
    ax.set_ylabel("wall time (s)")
    ax.set_title(f"make fig-linear: {result['total_s']:.1f} s total ({os.cpu_count()} CPUs)")
    ax.legend(frameon=False)
    fig.tight_layout()
    save_atomic(fig, args.out.with_suffix(".png"))
    print(f"fig-linear: {result['total_s']:.1f} s (target {TARGET_S:.0f} s) -> {args.out}")
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
