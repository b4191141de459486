"""CPU simulation of the empirical NTK spread over several devices (``stepwise.ntk.empirical_ntk(devices=...)``).

    python benchmarks/ntk_devices.py --devices 4 --n 500 1000 --model mlp [--out bench/ntk_devices.json]

Forces ``--devices`` host devices (``XLA_FLAGS=--xla_force_host_platform_device_count``, set before JAX starts),
then for each n computes the float32 kernel (x2 = None) of a :mod:`benchmarks.bench_ntk` model on one device and
spread over all of them with the same per-device memory budget, twice each (the first call compiles), and reports
the times and the largest difference relative to the largest entry. The forced devices share the host's cores, so this
checks the sharded driver and its overhead, not a speed-up; on accelerators each device brings its own FLOPs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--n", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--model", choices=("mlp", "resnet"), default="mlp")
    parser.add_argument("--budget-gib", type=float, default=2.0, help="memory budget per device")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={args.devices}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    import numpy as np

    from benchmarks.bench_ntk import MODELS
    from stepwise import ntk
    from stepwise.io import environment, write_json_atomic
    from stepwise.models import build_model, param_count, pure_model

    cfg = MODELS[args.model]
    pure = pure_model(build_model(cfg.model, cfg.input_shape, seed=0, **cfg.kwargs))
    budget = int(args.budget_gib * 2**30)
    devices = jax.devices()
    assert len(devices) == args.devices, devices
    cases = []
    for n in args.n:
        x = jax.numpy.asarray(np.random.default_rng(0).normal(size=(n, *cfg.input_shape)).astype(np.float32))
        plan = ntk.plan_ntk(pure.apply, pure.params, x, backend="jax", memory_budget=budget)
        rows_d, cols, n_dev = min(plan.block_rows, -(-n // len(devices))), plan.block_cols, len(devices)
        groups = -(-n // (rows_d * n_dev))
        # Blocks computed: one device skips those below the diagonal; the sharded driver computes, per group, every
        # column block not below the group's first row block on every device (and pads the last group).
        sharded_blocks = n_dev * sum(len([j for j in range(0, n, cols) if j + cols > g * n_dev * rows_d])
                                     for g in range(groups))
        case = {"n": n, "block_rows_one_device": plan.block_rows, "block_cols": cols, "block_rows_per_device": rows_d,
                "blocks_one_device": plan.n_blocks, "blocks_sharded": sharded_blocks}
        kernels = {}
        for name, devs in (("one_device", None), (f"{len(devices)}_devices", devices)):
            times = []
            for _ in range(2):
                t = time.perf_counter()
                k = ntk.empirical_ntk(pure.apply, pure.params, x, backend="jax", memory_budget=budget, devices=devs)
                k.block_until_ready()
                times.append(time.perf_counter() - t)
            kernels[name] = np.asarray(k)
            case[f"{name}_first_s"], case[f"{name}_s"] = times
        one, many = kernels.values()
        case["max_abs_diff_over_max"] = float(np.max(np.abs(many - one)) / np.max(np.abs(one)))
        case["symmetric"] = bool(np.array_equal(many, many.T))
        print(json.dumps(case), flush=True)
        cases.append(case)
    result = {"model": cfg.description, "params": param_count(pure.params), "devices": [str(d) for d in devices],
              "budget_bytes_per_device": budget, "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
              "cases": cases, "environment": environment()}
    if args.out is not None:
        write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    if not __package__:  # run as a file: the repository root, not benchmarks/, on the path
        sys.path[0] = str(Path(__file__).resolve().parents[1])
    sys.exit(main())
