"""Benchmark: time per SSL training step of the project's JAX step against the same step in PyTorch.

Thin wrapper around :mod:`stepwise.bench` (the same as ``stepwise bench train``; ``make bench-train`` installs the
benchmark-only dependency ``torch==2.13.0`` and runs it). Writes ``OUT/bench_train.json`` and ``OUT/bench_train.png``.

    python benchmarks/bench_train.py --out bench [--configs mlp_digits cnn_digits resnet18_w025_32] [--steps N]
                                     [--rounds R] [--no-profile] [--no-tried]

Exit status 1 when the CPU-default networks (mlp_digits, cnn_digits) miss the JAX / PyTorch <= 1.5 target.
"""

from __future__ import annotations

import sys

from stepwise.bench import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
