"""Figure of ``make bench-ntk``, drawn from ``bench_ntk.json``: per model, the empirical-NTK compute time, the peak
resident memory (with the plan's estimate and the budget) and the achieved FLOP/s of J J^T against n, one line per
method (the ``"jax"`` backend and each working neural-tangents implementation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stepwise.plots._mpl import pyplot, save_atomic


def plot_bench_ntk(json_path: str | Path, out: str | Path | None = None) -> Path:
    """Draw the benchmark figure (default: ``bench_ntk.png`` next to the JSON). Returns its path."""
    json_path = Path(json_path)
    with open(json_path) as f:
        res = json.load(f)
    cases = [c for c in res["cases"] if "compute_s" in c]
    models = sorted({c["model"] for c in cases})
    methods = sorted({c["method"] for c in cases})
    plt = pyplot()
    fig, axes = plt.subplots(len(models) or 1, 3, figsize=(16, 4.2 * max(len(models), 1)), squeeze=False)
    gib = 2.0**30
    for row, model in zip(axes, models):
        budget = None
        for i, method in enumerate(methods):
            sel = sorted((c for c in cases if c["model"] == model and c["method"] == method), key=lambda c: c["n"])
            if not sel:
                continue
            n = np.array([c["n"] for c in sel], dtype=float)
            color = plt.cm.tab10(i)
            row[0].loglog(n, [c["compute_s"] for c in sel], "o-", color=color, label=method)
            row[1].plot(n, [c["peak_rss_bytes"] / gib for c in sel], "o-", color=color, label=f"{method} measured")
            row[1].plot(n, [(c["estimated_peak_bytes"] + c["baseline_rss_bytes"]) / gib for c in sel], "x:",
                        color=color, label=f"{method} plan + baseline")
            row[2].semilogx(n, [c["achieved_flops_per_s"] / 1e9 for c in sel], "o-", color=color, label=method)
            budget = sel[0]["budget_bytes"] / gib
        ref = np.array(sorted({c["n"] for c in cases if c["model"] == model}), dtype=float)
        if ref.size:
            first = min((c for c in cases if c["model"] == model), key=lambda c: (c["n"], c["compute_s"]))
            row[0].loglog(ref, first["compute_s"] * (ref / ref[0]) ** 2, "k--", lw=0.8, label="~ n^2")
        if budget is not None:
            row[1].axhline(budget, color="tab:red", ls="--", lw=1, label="memory budget")
        gemm = res.get("machine", {}).get("gemm_flops_per_s")
        if gemm:
            row[2].axhline(gemm / 1e9, color="black", ls="--", lw=1, label="float32 GEMM on this machine")
        row[0].set_title(f"{model}: compute time")
        row[0].set_xlabel("n")
        row[0].set_ylabel("seconds")
        row[1].set_title(f"{model}: peak resident memory")
        row[1].set_xscale("log")
        row[1].set_xlabel("n")
        row[1].set_ylabel("GiB")
        row[2].set_title(f"{model}: achieved FLOP/s of J J^T (lower bound / time)")
        row[2].set_xlabel("n")
        row[2].set_ylabel("GFLOP/s")
        for ax in row:
            ax.legend(fontsize=6)
    fig.tight_layout()
    path = save_atomic(fig, out or json_path.with_name("bench_ntk.png"))
    plt.close(fig)
    return path
