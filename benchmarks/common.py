"""What the benchmarks share: the repository root and fresh worker processes that import ``benchmarks``.

Each benchmark is a module of the ``benchmarks`` package run from the repository root (``python -m
benchmarks.<name>``) or as a file (``python benchmarks/<name>.py``, which puts the root on ``sys.path`` itself).
Worker processes are started as ``python -m benchmarks.<name> _worker ...`` with the root on ``PYTHONPATH``, so
they find the package from any working directory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ROOT", "worker_command", "worker_env"]

ROOT = Path(__file__).resolve().parents[1]


def worker_command(module: str, *args: str) -> list[str]:
    """``[python, -m, benchmarks.<module>, _worker, *args]`` with this interpreter."""
    return [sys.executable, "-m", f"benchmarks.{module}", "_worker", *args]


def worker_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``overrides`` and the repository root first on ``PYTHONPATH``."""
    env = {**os.environ, **(overrides or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env
