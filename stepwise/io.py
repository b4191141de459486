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

from stepwise.compare.checks import Check, all_passed, jsonable, kind_summary, summary_line

__all__ = ["OutputError", "RunFolder", "atomic_path", "check_output_file", "checkpoint_files", "config_value",
           "VECTOR_EXTENSIONS", "cpu_description", "environment", "jsonable_tree", "load_npz", "load_results",
           "replace_config", "save_npz_atomic", "write_json_atomic", "write_results"]

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
        json.dump(jsonable_tree(obj), f, indent=2, allow_nan=False)
        f.write("\n")
    return Path(path)


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez`` to ``path`` atomically.

    Floating-point types NumPy cannot store (bfloat16 and the float8 types of ``ml_dtypes``, which ``np.savez``
    writes as raw bytes of dtype ``V2``/``V1`` that nothing reads back as numbers) are saved as float32, which holds
    every one of their values exactly.
    """
    arrays = {k: _storable(v) for k, v in arrays.items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def _storable(value: Any) -> Any:
    a = np.asarray(value)
    if a.dtype.kind == "V" and a.dtype.fields is None and a.dtype.itemsize <= 2:  # ml_dtypes' bfloat16, float8_*
        return a.astype(np.float32)
    return a


def jsonable_tree(obj: Any) -> Any:
    """``obj`` as plain JSON values: dataclasses (a :class:`stepwise.compare.Check` by its ``to_dict``) and mappings
    as dicts, tuples as lists, paths as strings, NumPy/JAX scalars and arrays as numbers and lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = obj.to_dict() if isinstance(obj, Check) else dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): jsonable_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable_tree(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return jsonable(obj)


def config_value(config: Any, name: str, default: Any = None) -> Any:
    """The field ``name`` of a (nested) config: a dataclass instance or the ``config`` dict of ``results.json``.

    Configs hold sub-configs (``train``, ``data``, ``aug``, ...), so a field may stand at any depth: ``name`` is looked
    for at the top level first, then among the fields of the sub-configs, one depth at a time; the shallowest match
    wins. A dotted ``name`` (``"train.lr"``) is a path from the top.

    Raises:
      ValueError: ``name`` stands at the shallowest depth it has in several sub-configs with different values (give
        the dotted path).

    >>> config_value({"loss": "simclr", "data": {"dataset": "digits", "n_train": 10}}, "dataset")
    'digits'
    >>> config_value({"data": {"dataset": "digits"}}, "lr", 0.1)
    0.1
    >>> config_value({"train": {"lr": 0.1}, "probe": {"lr": 0.5}}, "probe.lr")
    0.5
    """
    node = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    if "." in name:
        for part in name.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node
    level = {"": node}
    while level:
        found = {path: node[name] for path, node in level.items() if name in node}
        if len({repr(v) for v in found.values()}) > 1:
            raise ValueError(f"config_value: {name!r} stands in several sub-configs with different values; give one "
                             f"of {sorted(f'{path}{name}' for path in found)}")
        if found:
            return next(iter(found.values()))
        level = {f"{path}{key}.": v for path, node in level.items()
                 for key, v in node.items() if isinstance(v, Mapping)}
    return default


def replace_config(config: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` into sub-configs: a dict given for a dataclass-valued field replaces fields of that
    sub-config (recursively); any other value replaces the field itself. Each level validates as it is rebuilt.

    >>> from stepwise.training import TrainConfig
    >>> replace_config(TrainConfig(steps=10, batch_size=4, lr=0.1), steps=20).steps
    20
    """
    nested = {name: replace_config(getattr(config, name), **value)
              for name, value in changes.items()
              if isinstance(value, Mapping) and dataclasses.is_dataclass(getattr(config, name, None))}
    return dataclasses.replace(config, **{**changes, **nested})


def environment() -> dict[str, Any]:
    """Package versions, the JAX device the run used, and the host (with its allocator settings)."""
    import jax

    from stepwise._memory import allocator_settings

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
        "host": {"machine": platform.machine(), "system": platform.system(), "cpus": os.cpu_count(),
                 **cpu_description(), "allocator": allocator_settings()},
    }


# The vector instruction sets that decide CPU timings here: the kernels of XLA (JIT-compiled for this CPU), of jaxlib's
# Eigen and of PyTorch's oneDNN use the widest of them. The same network's step moved from JAX / PyTorch 1.0-1.4 on
# an AVX2 CPU to 1.3-1.8 on an AVX-512 one (README, Speed), so a timing means little without them.
VECTOR_EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                     "amx_tile", "amx_bf16", "asimd", "sve", "sve2")


def cpu_description(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict[str, Any]:
    """``{"cpu_model": name or None, "vector_extensions": [...]}``: the processor's model name and which of
    :data:`VECTOR_EXTENSIONS` it has, read from ``cpuinfo`` (Linux; x86 ``model name`` / ``flags``, Arm ``Features``).

    Elsewhere, or when the file cannot be read, the model is ``platform.processor()`` (None when empty) and the
    extensions list is empty. Never raises: it describes the machine for a timing's record, it decides nothing.
    """
    model, flags = None, set()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "cpu model", "hardware") and model is None and value:
            model = value
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if model is None:
        model = platform.processor() or None
    return {"cpu_model": model, "vector_extensions": [name for name in VECTOR_EXTENSIONS if name in flags]}


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
    plan: Any = None,
) -> dict[str, Any]:
    """Write ``run_dir/results.json``: top-level ``passed``, ``checks``, config, versions, device and wall time.

    ``extra`` adds the experiment's own fields (summary, figures, data files); ``plan``, a compute plan made before
    the run (:class:`stepwise.scale.ComputePlan`; None: none), is written as ``plan`` (its ``to_dict()``) after them.

    ``passed`` is :func:`stepwise.compare.all_passed` (at least one theory or baseline check, every gated check
    passed); ``verdicts`` is the headline (``"theory 8/8, baseline 2/2; 3 consistency; 4 reported"``) and ``kinds``
    the counts per kind of evidence.
    """
    checks = list(checks)
    env = environment()
    results = {
        "experiment": experiment,
        "passed": all_passed(checks),
        "verdicts": summary_line(checks),
        "kinds": kind_summary(checks),
        "checks": [c.to_dict() for c in checks],
        "config": config,
        "wall_time_s": wall_time_s,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": env["versions"],
        "device": env["device"],
        "host": env["host"],
        "ntk_backends": _ntk_backends_used(),
    }
    clash = sorted(set(extra or {}) & (set(results) | {"plan"}))
    if clash:
        raise ValueError(f"write_results: extra keys {clash} would overwrite fields that results.json reserves")
    results |= dict(extra or {})
    if plan is not None:
        results["plan"] = plan.to_dict()
    results = jsonable_tree(results)
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


# ----------------------------------------------------------------------------------------------------------------
# Output folders: checked before any compute, written in a staging folder, published by rename.


class OutputError(ValueError):
    """An output path that cannot take a run (raised before any compute): what is wrong, what was expected, where."""


STAGING_SUFFIX = ".partial"
_OWNER = ".owner.json"
RUN_INFO = "run.json"
_RUN_SUFFIXES = (".json", ".jsonl", ".npz", ".png", ".html", ".msgpack")  # what stepwise writes into a run folder


def _is_temp(name: str) -> bool:
    """A temporary file of :func:`atomic_path` (``.<stem>.<random>.tmp<suffix>``)."""
    return name.startswith(".") and ".tmp" in name


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_alive(owner: Mapping[str, Any]) -> bool:
    """Whether the process that wrote ``owner`` may still run (another host's process is assumed alive)."""
    import socket

    if owner.get("host") != socket.gethostname():
        return True
    pid = int(owner.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    start = _process_start(pid)
    return owner.get("start") is None or start is None or owner.get("start") == start


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            out = json.load(f)
        return out if isinstance(out, dict) else None
    except (OSError, ValueError):
        return None


def checkpoint_files(folder: Path) -> list[Path]:
    """The training checkpoints in ``folder`` (``checkpoint*.msgpack``), sorted."""
    return sorted(p for p in folder.glob("checkpoint*.msgpack") if p.is_file()) if folder.is_dir() else []


def checkpoint_step(path: Path) -> int | None:
    """The step a training checkpoint was written at (None if unreadable)."""
    try:
        from flax import serialization

        return int(serialization.msgpack_restore(path.read_bytes())["step"])
    except Exception:  # noqa: BLE001 - only used in messages; checkpoints of older versions have no "step"
        return None


def _describe_checkpoints(folder: Path) -> str:
    files = checkpoint_files(folder)
    steps = [checkpoint_step(p) for p in files]
    parts = [f"{p.name} at step {s}" if s is not None else p.name for p, s in zip(files, steps)]
    return ", ".join(parts)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _remove_tree(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@dataclasses.dataclass
class RunFolder:
    """A run's output folder: ``target`` receives one complete run, written first into ``staging`` beside it
    (``<target>.partial``) and published by rename (:meth:`publish`), so ``target`` holds the previous run or the
    complete new one, never a mixture; an interrupted run leaves only ``<target>.partial`` (with its checkpoints).

    Create with :meth:`open`, which checks everything about the path before any compute.
    """

    target: Path
    staging: Path
    flag: str
    resumed: bool
    _created: list[Path] = dataclasses.field(default_factory=list)

    @classmethod
    def open(cls, out: str | os.PathLike | None, *, flag: str = "--out", overwrite: bool = False,
             resume: bool = False, need_bytes: int = 0) -> "RunFolder":
        """Check ``out`` and create (or, with ``resume``, adopt) its staging folder.

        Refused (OutputError) when ``out`` is empty, is or lies under a file, contains the working directory, holds
        files that are not a stepwise run, holds a complete run (without ``overwrite`` or ``resume``), is being
        written by another live process, has an interrupted run's checkpoints beside it (without ``resume`` or
        ``overwrite``), cannot be created or written, or its filesystem has less than ``need_bytes`` free.
        Removed first: temporary files of killed writes, staging folders of dead processes without checkpoints.
        """
        if out is None or not str(out).strip():
            raise OutputError(f"{flag} is empty; expected a folder path, e.g. {flag} runs/my_run")
        given = str(out)
        target = Path(os.path.abspath(Path(given).expanduser()))
        if target.exists() and not target.is_dir():
            raise OutputError(f"{flag} {given} is an existing file ({target}); expected a folder (new, empty, or a "
                              "previous run's)")
        above = _nearest_existing(target.parent)
        if not above.is_dir():
            raise OutputError(f"{flag} {given}: {above} is a file, so the folder {target} cannot be created; expected "
                              "a path under folders")
        cwd = Path.cwd().resolve()
        if cwd == target.resolve() or target.resolve() in cwd.parents:
            raise OutputError(f"{flag} {given} is (or contains) the current directory {cwd}; expected a folder of its "
                              "own for the run, e.g. runs/my_run")
        staging = target.parent / (target.name + STAGING_SUFFIX)
        folder = cls(target=target, staging=staging, flag=flag, resumed=False)
        kept = folder._check_target(given, overwrite=overwrite, resume=resume)
        folder._adopt_or_clear_staging(given, overwrite=overwrite, resume=resume, kept=kept)
        try:
            folder._create()
            if need_bytes:
                folder.require_space(need_bytes)
        except BaseException:
            folder.abandon()
            raise
        return folder

    def _check_target(self, given: str, *, overwrite: bool, resume: bool) -> list[Path]:
        """Refuse a target that holds something we must not replace; returns its kept checkpoints (for resume)."""
        target, flag = self.target, self.flag
        if not target.is_dir():
            return []
        names = sorted(p.name for p in target.iterdir())
        for name in [n for n in names if _is_temp(n)]:  # a write killed mid-way (SIGKILL) left it
            (target / name).unlink(missing_ok=True)
        names = [n for n in names if not _is_temp(n)]
        if not names:
            return []
        foreign = [n for n in names if Path(n).suffix not in _RUN_SUFFIXES or (target / n).is_dir()]
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise OutputError(f"{flag} {given} ({target}) holds files that are not a stepwise run ({shown}); expected "
                              "a new or empty folder, or a previous run's (stepwise replaces only its own runs)")
        kept = checkpoint_files(target)
        if resume and kept:
            return kept
        if overwrite:
            return []
        results = _read_json(target / "results.json")
        if results is not None:
            what = f"a complete run ({results.get('experiment', '?')}, created {results.get('created', '?')})"
        else:
            what = f"an incomplete run's files ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
        hint = " or --resume to extend it (its checkpoint was kept)" if kept else ""
        raise OutputError(f"{flag} {given} ({target}) already holds {what}; pass --overwrite to replace it (the old "
                          f"run stays until the new one completes){hint}, or choose another {flag}")

    def _adopt_or_clear_staging(self, given: str, *, overwrite: bool, resume: bool, kept: list[Path]) -> None:
        import shutil

        staging, flag = self.staging, self.flag
        for old in self.target.parent.glob(self.target.name + ".old-*"):  # a publish killed between its renames
            owner = {"pid": old.name.rsplit("-", 1)[-1], "host": __import__("socket").gethostname()}
            if old.is_dir() and not _owner_alive(owner):
                if self.target.exists():
                    _remove_tree(old)
                else:
                    os.replace(old, self.target)
        if staging.exists() and not staging.is_dir():
            raise OutputError(f"{staging} (the staging folder of {flag} {given}) is a file; remove it or choose "
                              f"another {flag}")
        if staging.is_dir():
            owner = _read_json(staging / _OWNER)
            if owner is not None and _owner_alive(owner):
                raise OutputError(f"another stepwise process (pid {owner.get('pid')} on {owner.get('host')}) is "
                                  f"writing {flag} {given} (into {staging}); wait for it to finish or choose another "
                                  f"{flag} (if that process is gone, delete {staging / _OWNER})")
            if checkpoint_files(staging):
                if resume:
                    for name in [p.name for p in staging.iterdir() if _is_temp(p.name)]:
                        (staging / name).unlink(missing_ok=True)
                    self.resumed = True
                    return
                if not overwrite:
                    raise OutputError(f"{staging} holds an interrupted run of {flag} {given} "
                                      f"({_describe_checkpoints(staging)}); continue it with --resume (the same "
                                      "command plus --resume), or discard it and start afresh with --overwrite")
            _remove_tree(staging)  # a dead process's staging folder without checkpoints, or discarded (--overwrite)
        if resume:
            if not kept:
                raise OutputError(f"--resume: nothing to resume for {flag} {given}: no checkpoint in {staging} or "
                                  f"{self.target}; run without --resume to start")
            self._create()
            for path in [*kept, self.target / RUN_INFO]:
                if path.is_file():
                    shutil.copy2(path, staging / path.name)
            self.resumed = True

    def _create(self) -> None:
        """Create the staging folder (and missing parents, remembered for :meth:`abandon`) and claim it."""
        import socket

        staging = self.staging
        missing = []
        p = staging.parent
        while not p.exists():
            missing.append(p)
            p = p.parent
        try:
            for p in reversed(missing):
                p.mkdir()
                self._created.append(p)
            if not staging.is_dir():
                staging.mkdir()
                self._created.append(staging)
            owner = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
                     "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            write_json_atomic(staging / _OWNER, owner)
        except OSError as err:
            self.abandon()
            raise OutputError(f"cannot write {self.flag} {self.target}: creating {err.filename or staging} failed "
                              f"({err.strerror or err}); expected a writable location") from err

    def require_space(self, need_bytes: int) -> None:
        """Refuse (OutputError) when the target's filesystem has less than ``need_bytes`` free."""
        import shutil

        where = _nearest_existing(self.staging)
        free = shutil.disk_usage(where).free
        if free < need_bytes:
            raise OutputError(f"not enough free space for {self.flag} {self.target}: {free / 1e6:.1f} MB free on the "
                              f"filesystem of {where}, this run writes up to about {need_bytes / 1e6:.0f} MB (an "
                              f"estimate: results, arrays, figures, checkpoints); free some space or choose another "
                              f"{self.flag}")

    def write_info(self, info: Mapping[str, Any]) -> None:
        """Write ``run.json`` (what a resume is compared with) into the staging folder."""
        write_json_atomic(self.staging / RUN_INFO, info)

    def read_info(self) -> dict[str, Any] | None:
        return _read_json(self.staging / RUN_INFO)

    def publish(self, *, keep_checkpoint: bool = False) -> Path:
        """Move the complete run onto ``target`` (replacing a previous run there) and return ``target``.

        Checkpoints and ``run.json`` are removed first unless ``keep_checkpoint``."""
        staging, target = self.staging, self.target
        if not keep_checkpoint:
            for path in [*checkpoint_files(staging), staging / RUN_INFO]:
                path.unlink(missing_ok=True)
        for name in [p.name for p in staging.iterdir() if _is_temp(p.name)]:
            (staging / name).unlink(missing_ok=True)
        (staging / _OWNER).unlink(missing_ok=True)
        if target.exists():
            old = target.parent / f"{target.name}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(staging, target)
            _remove_tree(old)
        else:
            os.replace(staging, target)
        self._created.clear()
        return target

    def abandon(self) -> Path | None:
        """After a failure or an interrupt: keep the staging folder if it holds checkpoints (returned; a later
        ``--resume`` continues from them), otherwise remove it and every folder :meth:`open` created."""
        if checkpoint_files(self.staging):
            (self.staging / _OWNER).unlink(missing_ok=True)
            return self.staging
        if self.staging.is_dir() and (self.staging in self._created or not self.resumed):
            _remove_tree(self.staging)
        for p in reversed(self._created):
            if p != self.staging:
                with contextlib.suppress(OSError):
                    p.rmdir()  # only if still empty
        self._created.clear()
        return None


def check_output_file(out: str | os.PathLike | None, *, flag: str = "--out", need_bytes: int = 0) -> Path:
    """Check a single output file (``stepwise report --out``) before any work: not empty, not a folder, its folder
    creatable and writable, ``need_bytes`` free. Creates nothing (the file itself is written atomically later).

    Raises:
      OutputError: what is wrong, what was expected, which path.
    """
    import shutil

    if out is None or not str(out).strip():
        raise OutputError(f"{flag} is empty; expected a file path, e.g. {flag} reports/index.html")
    path = Path(os.path.abspath(Path(str(out)).expanduser()))
    if path.is_dir():
        raise OutputError(f"{flag} {out} is an existing folder ({path}); expected a file path, e.g. {path}/index.html")
    above = _nearest_existing(path.parent)
    if not above.is_dir():
        raise OutputError(f"{flag} {out}: {above} is a file, so {path.parent} cannot be created; expected a path "
                          "under folders")
    if not os.access(above, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {out}: {above} is not writable; expected a writable location")
    try:  # os.access does not see read-only mounts or /proc: try for real
        fd, probe = tempfile.mkstemp(dir=above, prefix=".stepwise-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{flag} {out}: cannot write in {above} ({err.strerror or err}); expected a writable "
                          "location") from err
    free = shutil.disk_usage(above).free
    if free < need_bytes:
        raise OutputError(f"not enough free space for {flag} {out}: {free / 1e6:.1f} MB free on the filesystem of "
                          f"{above}, about {need_bytes / 1e6:.0f} MB needed")
    return path
