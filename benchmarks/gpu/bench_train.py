"""The training step on the GPU: stepwise's jitted JAX step against the same step in PyTorch, same batch and precision.

The step is ``benchmarks.bench_train``'s (sample a batch of on-device images, two views by shift + noise, forward
both, the centred Barlow Twins theory loss, backward, plain SGD), on a GroupNorm CIFAR ResNet-18 at width 1 (11.2 M
parameters, 32x32x3, batch 256, d = 64), the PyTorch twin built from the JAX module's weights (outputs checked to
agree). Precision, the same on both sides in each mode:

* ``float32``: full float32 matmuls and convolutions (JAX ``default_matmul_precision("float32")``; PyTorch
  ``allow_tf32 = False`` for matmuls and cuDNN);
* ``tf32``: TensorFloat-32 tensor-core passes (JAX ``"tensorfloat32"``; PyTorch ``allow_tf32 = True`` for both).

Timing: both warmed up (compiled / cuDNN autotuned), then ``--rounds`` rounds alternating JAX and PyTorch, each
``--steps`` consecutive steps ended by ``block_until_ready`` / ``torch.cuda.synchronize``; per-step time is the
median over rounds; ``ratio_jax_over_torch`` = JAX / PyTorch. FLOPs per step from XLA's cost analysis of the
compiled JAX step.

``python benchmarks/gpu/bench_train.py --out FILE.json`` (``--dry-run``: a tiny network for a few steps on any
device, PyTorch on the CPU if it is installed, else the JAX side alone).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _torch_precision(torch, mode: str):
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    torch.backends.cudnn.allow_tf32 = mode == "tf32"
    torch.backends.cudnn.benchmark = True


def measure(mode: str, cfg, *, rounds: int, steps: int, torch_device: str | None) -> dict:
    import jax

    from benchmarks import bench_train as bench
    from stepwise.scale import program_flops

    jax_precision = {"float32": "float32", "tf32": "tensorfloat32"}[mode]
    out: dict = {"mode": mode}
    with jax.default_matmul_precision(jax_precision):
        jb = bench.make_jax_step(cfg)
        t0 = time.perf_counter()
        jb.run(1)
        out["jax_compile_and_first_step_s"] = time.perf_counter() - t0
        # FLOPs counted on the CPU backend's HLO of the same step (XLA:GPU's analysis omits cuDNN convolutions)
        cpu_step = bench.make_jax_step(cfg, devices=jax.devices("cpu")[:1])
        out["flops_per_step"] = program_flops(cpu_step.step, cpu_step.state, cpu_step.data)
        jb.run(steps)  # warm
        jax_times = []
        tb = None
        torch_times = []
        if torch_device is not None:
            import torch

            _torch_precision(torch, mode)
            tb = bench.make_torch_step(jb.module, cfg, device=torch_device)
            sync = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)

            def torch_run(k: int) -> float:
                sync()
                t = time.perf_counter()
                for _ in range(k):
                    tb.step()
                sync()
                return time.perf_counter() - t

            torch_run(steps)  # warm (cuDNN autotuning)
            out["parity"] = bench.parity(jb, tb, cfg) if torch_device == "cpu" else _gpu_parity(jb, cfg, torch)
        for _ in range(rounds):
            jax_times.append(jb.run(steps) / steps)
            if tb is not None:
                torch_times.append(torch_run(steps) / steps)
    out["jax_step_ms"] = 1e3 * statistics.median(jax_times)
    out["jax_tflops_per_s"] = out["flops_per_step"] / (out["jax_step_ms"] / 1e3) / 1e12
    if torch_times:
        out["torch_step_ms"] = 1e3 * statistics.median(torch_times)
        out["ratio_jax_over_torch"] = out["jax_step_ms"] / out["torch_step_ms"]
    return out


def _gpu_parity(jb, cfg, torch) -> dict:
    """Max |JAX - PyTorch| of the initial networks' outputs on the same images, both on the GPU."""
    import jax

    from benchmarks import bench_train as bench

    x = np.random.default_rng(1).normal(size=(8, *cfg.input_shape)).astype(np.float32)
    z_jax = np.asarray(jax.jit(jb.pure.apply)(jb.pure.params, x))
    net = bench.torch_network(jb.module, cfg.input_shape).to("cuda")
    with torch.no_grad():
        z_torch = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to("cuda")).cpu().numpy()
    return {"output_max_abs_diff": float(np.max(np.abs(z_jax - z_torch))),
            "output_max_abs": float(np.max(np.abs(z_jax)))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)

    import jax

    from benchmarks import bench_train as bench
    from stepwise.io import environment, write_json_atomic

    t_start = time.perf_counter()
    if args.dry_run:
        cfg = bench.BenchConfig("resnet18", (16, 16, 3), 8, (("width", 0.125), ("embed_dim", 8)),
                                "dry run: ResNet-18 at width 0.125 on 16x16x3, batch 8")
        rounds, steps = 2, 2
    else:
        cfg = bench.BenchConfig("resnet18", (32, 32, 3), 256, (("width", 1.0), ("embed_dim", 64)),
                                "GroupNorm CIFAR ResNet-18 at width 1 -> 64 on 32x32x3, batch 256")
        rounds, steps = args.rounds, args.steps
    torch_device, torch_note = None, None
    try:
        import torch

        torch_device = "cuda" if torch.cuda.is_available() and jax.devices()[0].platform == "gpu" else "cpu"
        if not args.dry_run and torch_device != "cuda":
            torch_device, torch_note = None, "no CUDA device for PyTorch: JAX side only"
    except ImportError:
        torch_note = "PyTorch is not installed: JAX side only"
    results = {"benchmark": "train_step_gpu", "config": {"model": cfg.model, "input_shape": list(cfg.input_shape),
                                                         "batch": cfg.batch, **cfg.kwargs,
                                                         "description": cfg.description},
               "rounds": rounds, "steps_per_round": steps, "torch_device": torch_device, "note": torch_note,
               "modes": []}
    for mode in ("float32",) if args.dry_run else ("float32", "tf32"):
        row = measure(mode, cfg, rounds=rounds, steps=steps, torch_device=torch_device)
        results["modes"].append(row)
        print(f"{mode:8s} JAX {row['jax_step_ms']:8.2f} ms/step ({row['jax_tflops_per_s']:.1f} TFLOP/s)"
              + (f"  PyTorch {row['torch_step_ms']:8.2f} ms/step  JAX/PyTorch {row['ratio_jax_over_torch']:.2f}"
                 if "torch_step_ms" in row else ""), flush=True)
    env = environment()
    versions = dict(env["versions"])
    with contextlib.suppress(ImportError):
        import torch

        versions["torch"] = torch.__version__
    results.update(versions=versions, device=env["device"], wall_time_s=time.perf_counter() - t_start)
    write_json_atomic(args.out, results)
    return 0


if __name__ == "__main__":
    if not __package__:  # run as a file: the repository root, not benchmarks/gpu/, on the path
        sys.path[0] = str(Path(__file__).resolve().parents[2])
    sys.exit(main())
