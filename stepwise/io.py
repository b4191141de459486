"""Run directories: atomic writes of results.json and arrays, and the environment a run was made in."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stepwise.compare.checks import Check, _jsonable, all_passed

__all__ = ["atomic_path", "environment", "load_npz", "load_results", "save_npz_atomic", "write_json_atomic", "write_results"]

_PACKAGES = ("stepwise", "jax", "jaxlib", "flax", "optax", "numpy", "scipy", "scikit-learn", "scikit-image",
             "dm-pix", "matplotlib")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` atomically, on error delete it.

    Readers therefore see either the old file or the complete new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the result normal permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON (strict: no NaN/inf tokens) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(_jsonable_tree(obj), f, indent=2, allow_nan=False)
        f.write("\n")
    return Path(path)


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def _jsonable_tree(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = obj.to_dict() if isinstance(obj, Check) else dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable_tree(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return _jsonable(obj)


def environment() -> dict[str, Any]:
    """Package versions, the JAX device the run used, and the host."""
    import jax

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    return {
        "versions": {"python": platform.python_version(), **versions},
        "device": {
            "platform": devices[0].platform,
            "kind": devices[0].device_kind,
            "count": len(devices),
        },
        "host": {"machine": platform.machine(), "system": platform.system(), "cpus": os.cpu_count()},
    }


def _ntk_backends_used() -> list[dict[str, str]]:
    """What computed the empirical NTKs of this process (``stepwise.ntk.backends_used``), [] if none ran."""
    import sys

    ntk = sys.modules.get("stepwise.ntk")  # not imported: no NTK was computed
    return [] if ntk is None else ntk.backends_used()


def write_results(
    run_dir: str | os.PathLike,
    *,
    experiment: str,
    config: Any,
    checks: Iterable[Check],
    wall_time_s: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``run_dir/results.json``: top-level ``passed``, ``checks``, config, versions, device and wall time."""
    checks = list(checks)
    env = environment()
    results = {
        "experiment": experiment,
        "passed": all_passed(checks),
        "checks": [c.to_dict() for c in checks],
        "config": config,
        "wall_time_s": wall_time_s,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": env["versions"],
        "device": env["device"],
        "host": env["host"],
        "ntk_backends": _ntk_backends_used(),
        **(extra or {}),
    }
    results = _jsonable_tree(results)
    write_json_atomic(Path(run_dir) / "results.json", results)
    return results


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file as a dict, with the file closed again (NpzFile keeps it open otherwise)."""
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def load_results(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``run_dir/results.json`` with a clear error if it is missing."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results.json in {Path(run_dir).resolve()}; run the experiment first")
    with open(path) as f:
        return json.load(f)
