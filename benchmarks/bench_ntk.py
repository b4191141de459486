"""Empirical-NTK benchmark: time and peak memory of :func:`stepwise.ntk.empirical_ntk` per backend and size.

``python benchmarks/bench_ntk.py --out DIR`` (or ``python -m benchmarks.bench_ntk``, or ``make bench-ntk``) writes
``DIR/bench_ntk.json`` and the figure ``DIR/bench_ntk.png`` (:mod:`benchmarks.bench_ntk_plot`). For each network of
:data:`MODELS`, each method (the ``"jax"`` backend and every neural-tangents implementation that works with the JAX
in use, see :func:`stepwise._compat.nt_working_implementations`) and each n of :data:`SIZES`, one fresh worker
process computes the (n, n) kernel of n standard-normal float32 inputs with itself (``x2=None``: blocks on and
above the diagonal), under the default memory budget, and reports:

* ``plan_s``: planning, i.e. compiling the block functions (XLA) and reading their memory analysis;
* ``compute_s``: evaluating the blocks and assembling the kernel (after planning; nothing is recompiled);
* ``peak_rss_bytes``: the worker's peak resident memory (``getrusage``), and ``baseline_rss_bytes`` before
  planning (Python, JAX, the model and inputs): one process per case, so the peak is that case's own;
* ``plan``: the :class:`stepwise.ntk.NtkPlan` (block sizes, estimated peak, budget);
* ``flops_lower_bound``: ``2 * n^2 * P * d``, the matrix-multiply cost of ``J J^T`` for the full kernel, and
  ``achieved_flops_per_s`` = that / ``compute_s``. A symmetric request needs only about half of those products,
  so this figure can exceed what the products alone run at; compare it with ``machine.gemm_flops_per_s``, a
  float32 2048 x 2048 matrix product timed in the same session;
* ``kernel_trace`` and ``kernel_fro``: the same inputs and weights for every method, so equal values across
  methods show that they computed the same kernel.

A case is skipped (and recorded with the reason) when the time predicted from the same method's previous size
(compute time scaling as n^2) exceeds ``--max-case-seconds``. The machine's load average is recorded per case:
other processes on a shared machine inflate the times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["MODELS", "QUICK_MODELS", "SIZES", "BenchModel", "main", "methods", "run", "run_case"]


@dataclasses.dataclass(frozen=True)
class BenchModel:
    """``stepwise.models.build_model(model, input_shape, **kwargs)`` in float32."""

    model: str
    input_shape: tuple[int, int, int]
    model_kwargs: tuple[tuple[str, Any], ...]
    description: str

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_kwargs)


MODELS: dict[str, BenchModel] = {
    "mlp": BenchModel(
        "mlp", (8, 8, 1), (("hidden", (256, 256)), ("embed_dim", 16)),
        "CPU default of stepwise_deep: MLP 64-256-256-16 on 8x8x1 digits (86,544 parameters, d = 16)",
    ),
    "resnet": BenchModel(
        "resnet18", (16, 16, 3), (("width", 0.125), ("embed_dim", 16)),
        "CPU-scale CIFAR ResNet-18 with GroupNorm, width 0.125 (8, 16, 32, 64 channels) -> 16 on 16x16x3 images "
        "(176,792 parameters, d = 16)",
    ),
}
QUICK_MODELS: dict[str, BenchModel] = {
    "mlp": BenchModel("mlp", (4, 4, 1), (("hidden", (16,)), ("embed_dim", 4)), "tiny MLP for the tests"),
}
SIZES = (250, 500, 1000, 2000)
QUICK_SIZES = (8,)
MAX_CASE_SECONDS = 600.0


def methods() -> dict[str, tuple[str, str]]:
    """Method name -> (backend, implementation): ``jax`` and each working neural-tangents implementation."""
    from stepwise._compat import nt_working_implementations

    return {"jax": ("jax", "auto"), **{f"nt_{name}": ("neural_tangents", name)
                                       for name in nt_working_implementations()}}


# ----------------------------------------------------------------------------------------------------------------
# One case, in its own process.


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run_case(model: str, method: str, n: int, *, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Computes one kernel in this process and returns the measurements (see the module docstring)."""
    import jax
    import numpy as np

    from stepwise import ntk
    from stepwise.models import build_model, param_count, pure_model

    cfg = (QUICK_MODELS if quick else MODELS)[model]
    backend, implementation = methods()[method]
    pure = pure_model(build_model(cfg.model, cfg.input_shape, seed=seed, **cfg.kwargs))
    x = jax.numpy.asarray(np.random.default_rng(seed).normal(size=(n, *cfg.input_shape)).astype(np.float32))
    jax.block_until_ready((pure.params, x))
    baseline = _rss_bytes()
    t0 = time.perf_counter()
    plan = ntk.plan_ntk(pure.apply, pure.params, x, backend=backend, implementation=implementation)
    t1 = time.perf_counter()
    k = jax.block_until_ready(ntk.empirical_ntk(pure.apply, pure.params, x, backend=backend,
                                                implementation=implementation))
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    device = jax.devices()[0]
    # On an accelerator the blocks live in its memory: its allocator's peak is the figure the plan budgets.
    stats = (device.memory_stats() or {}) if device.platform != "cpu" else {}
    device_peak = stats.get("peak_bytes_in_use")
    k = np.asarray(k, np.float64)
    flops = 2.0 * n * n * param_count(pure.params) * plan.out_dim
    accelerator = {} if device_peak is None else {
        "device_peak_bytes": int(device_peak), "device_bytes_limit": int(stats.get("bytes_limit", 0)),
        "within_budget": int(device_peak) <= plan.budget_bytes,
    }
    return {
        "model": model, "method": method, "backend": backend, "implementation": plan.implementation, "n": n,
        "params": param_count(pure.params), "out_dim": plan.out_dim, "dtype": plan.dtype,
        "plan_s": t1 - t0, "compute_s": t2 - t1, "baseline_rss_bytes": baseline, "peak_rss_bytes": peak,
        "estimated_peak_bytes": plan.peak_bytes, "budget_bytes": plan.budget_bytes,
        "within_budget": peak - baseline <= plan.budget_bytes,
        "flops_lower_bound": flops, "achieved_flops_per_s": flops / (t2 - t1),
        "kernel_trace": float(np.trace(k)), "kernel_fro": float(np.linalg.norm(k)),
        "kernel_finite": bool(np.all(np.isfinite(k))), "plan": plan.to_dict(), "device": device.device_kind,
        **accelerator,
    }


def _worker_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_ntk _worker")
    parser.add_argument("--model", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    result = run_case(args.model, args.method, args.n, quick=args.quick)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def _run_worker(model: str, method: str, n: int, *, quick: bool, timeout: float) -> dict[str, Any]:
    from benchmarks.common import worker_command, worker_env

    cmd = worker_command("bench_ntk", "--model", model, "--method", method, "--n", str(n),
                         *(["--quick"] if quick else []))
    env = worker_env({"JAX_ENABLE_X64": "0"})  # float32, as the experiments train
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"skipped": f"killed after the {timeout:.0f} s time limit"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"worker exited with {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1][len("RESULT "):])


# ----------------------------------------------------------------------------------------------------------------
# The whole benchmark.


def _gemm_flops_per_s(size: int = 2048, repeats: int = 5) -> float:
    """Best of ``repeats`` float32 ``size x size`` matrix products with jax.numpy on the default device."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = jnp.asarray(np.random.default_rng(0).normal(size=(size, size)).astype(np.float32))
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, a))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(matmul(a, a))
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best


def _gemm_size() -> int:
    """2048 on a CPU; 8192 on an accelerator, where a 2048 product is too short to reach the chip's rate."""
    import jax

    return 2048 if jax.devices()[0].platform == "cpu" else 8192


def run(out_dir: str | os.PathLike, *, models: Sequence[str] | None = None, sizes: Sequence[int] | None = None,
        method_names: Sequence[str] | None = None, quick: bool = False,
        max_case_seconds: float = MAX_CASE_SECONDS, log=print) -> dict[str, Any]:
    """Runs every case in a worker process and writes ``out_dir/bench_ntk.json``; returns the results."""
    import jax

    from stepwise import ntk
    from stepwise.io import environment, write_json_atomic

    t_start = time.perf_counter()
    table = QUICK_MODELS if quick else MODELS
    models = list(table) if models is None else list(models)
    sizes = sorted(QUICK_SIZES if quick else SIZES) if sizes is None else sorted(sizes)
    all_methods = methods()
    method_names = list(all_methods) if method_names is None else list(method_names)
    for name in models:
        if name not in table:
            raise ValueError(f"unknown benchmark model {name!r}; expected one of {list(table)}")
    for name in method_names:
        if name not in all_methods:
            raise ValueError(f"unknown or non-working method {name!r}; expected one of {list(all_methods)}")
    header = _results_header(models, sizes, method_names, table, all_methods, quick, max_case_seconds)
    cases: list[dict[str, Any]] = []

    def _write(out_dir, cases, *, complete: bool) -> dict[str, Any]:
        """Writes what has been measured so far (after every case: a long run keeps its results if stopped)."""
        results = {**header, "cases": cases, "complete": complete, "wall_time_s": time.perf_counter() - t_start}
        if complete:
            env = environment()
            results.update(
                machine={"gemm_flops_per_s": _gemm_flops_per_s(512 if quick else _gemm_size()),
                         "available_memory_bytes_at_end": ntk.available_memory_bytes(),
                         "default_budget_fraction": ntk.DEFAULT_BUDGET_FRACTION, "cpu_count": os.cpu_count(),
                         "jax_devices": [str(d) for d in jax.devices()],
                         "load_average_at_end": list(os.getloadavg())},
                versions=env["versions"], device=env["device"], host=env["host"],
            )
        write_json_atomic(Path(out_dir) / "bench_ntk.json", results)
        return results

    for model in models:
        for method in method_names:
            previous: dict[str, Any] | None = None
            for n in sizes:
                case = {"model": model, "method": method, "n": n, "load_average_before": os.getloadavg()[0]}
                predicted = None if previous is None else previous["compute_s"] * (n / previous["n"]) ** 2
                if predicted is not None and predicted > max_case_seconds:
                    case["skipped"] = (f"predicted {predicted:.0f} s from n = {previous['n']} (compute time ~ n^2) "
                                       f"> --max-case-seconds {max_case_seconds:.0f}")
                else:
                    case.update(_run_worker(model, method, n, quick=quick, timeout=4 * max_case_seconds + 300))
                case["load_average_after"] = os.getloadavg()[0]
                cases.append(case)
                if "compute_s" in case:
                    previous = case
                    log(f"{model:<7} {method:<26} n={n:<5} plan {case['plan_s']:7.1f} s  compute "
                        f"{case['compute_s']:8.1f} s  peak RSS {case['peak_rss_bytes'] / 2**30:6.2f} GiB "
                        f"(est. {case['estimated_peak_bytes'] / 2**30:.2f} + baseline "
                        f"{case['baseline_rss_bytes'] / 2**30:.2f})  {case['achieved_flops_per_s'] / 1e9:6.1f} GFLOP/s")
                else:
                    log(f"{model:<7} {method:<26} n={n:<5} {case.get('skipped') or case.get('error')}")
                    previous = previous if "skipped" in case else None
                _write(out_dir, cases, complete=False)
    results = _write(out_dir, cases, complete=True)
    from benchmarks.bench_ntk_plot import plot_bench_ntk

    plot_bench_ntk(Path(out_dir) / "bench_ntk.json")  # bench_ntk.png next to it, drawn from the JSON
    return results


def _results_header(models, sizes, method_names, table, all_methods, quick, max_case_seconds):
    return {
        "benchmark": "empirical_ntk",
        "what": " ".join((__doc__ or "").split("\n\n")[0].split()),
        "models": {name: {**dataclasses.asdict(table[name]), "input_shape": list(table[name].input_shape)}
                   for name in models},
        "sizes": list(sizes),
        "methods": {name: list(all_methods[name]) for name in method_names},
        "max_case_seconds": max_case_seconds,
        "quick": quick,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/bench_ntk.py --out DIR [--models ...] [--sizes ...] [--methods ...] [--quick]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        return _worker_main(argv[1:])
    parser = argparse.ArgumentParser(prog="bench_ntk", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench"), help="folder for bench_ntk.json")
    parser.add_argument("--models", nargs="+", default=None, help=f"subset of {list(MODELS)}")
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help=f"kernel sizes n (default {SIZES})")
    parser.add_argument("--methods", nargs="+", default=None, help="jax and/or nt_<implementation>")
    parser.add_argument("--max-case-seconds", type=float, default=MAX_CASE_SECONDS,
                        help="skip a case whose predicted compute time exceeds this")
    parser.add_argument("--quick", action="store_true", help="tiny MLP, n = 8: seconds (for the tests)")
    args = parser.parse_args(argv)
    if args.sizes is not None and min(args.sizes) < 1:
        parser.error("--sizes must be positive")
    results = run(args.out, models=args.models, sizes=args.sizes, method_names=args.methods, quick=args.quick,
                  max_case_seconds=args.max_case_seconds)
    failed = [c for c in results["cases"] if "error" in c]
    print(f"{len(results['cases'])} cases ({len(failed)} failed) in {results['wall_time_s']:.0f} s -> "
          f"{Path(args.out) / 'bench_ntk.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    if not __package__:  # run as a file: the repository root, not benchmarks/, on the path (workers import from it)
        sys.path[0] = str(Path(__file__).resolve().parents[1])
    from stepwise import reuse_freed_memory

    reuse_freed_memory()  # as the command line does: freed blocks reused, not mapped anew each step
    sys.exit(main())
