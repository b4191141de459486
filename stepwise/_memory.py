"""glibc's allocator told to keep freed memory for reuse: :func:`reuse_freed_memory`, called by the command line
(``stepwise run`` / ``verify``) and the benchmarks before JAX starts; a script of your own may call it first thing
(``stepwise.reuse_freed_memory()``: importing ``stepwise`` alone imports no JAX).

Why: XLA's CPU runtime allocates each compiled program's temporaries anew at every call, as a few large blocks (the
ResNet-18 w0.25 training step: one of 181 MB and several of 38 MB per step). glibc serves any block above 32 MB
(its largest mmap threshold), and every large block of a thread with its own arena, by a fresh ``mmap`` and returns
it by ``munmap`` when freed, so every step faults in and zeroes those pages again: measured, 117 ms of kernel time
per step on the 2-core CPU (15-18% of the step's CPU time). With one arena, no ``mmap`` and a trim threshold of
1 GiB, freed blocks stay in the process's heap and the next step reuses them: 6-17 ms of kernel time per step, and
318-328 ms of wall time per step instead of 345-395 (three pairs of runs). A whole run, ``stepwise run stepwise_deep
--scale cpu-resnet --train.steps 400``: 105-124 ms per step with the settings, 124-148 ms without (three pairs);
kernel time 4-6 s instead of 29-34 s.

The settings are process-wide (like ``XLA_FLAGS``), on every platform JAX runs on. The no-mmap and trim settings act
at once; the one-arena setting only on threads that have no arena yet, so the call belongs at the start of a
program, before JAX's CPU client starts its threads. The process then keeps freed memory instead of returning it to
the system: up to 1 GiB at the top of the heap, and without limit below the highest block still in use.
:func:`release_freed_memory` (``malloc_trim``) gives it back; :func:`stepwise.ntk.available_memory_bytes` calls it
before reading the system's available memory, so the NTK's memory plan sees what this process could reuse.

Nothing is changed where the C library is not glibc, where ``LD_PRELOAD`` names another allocator (jemalloc,
tcmalloc, mimalloc), or where the environment sets one of glibc's own settings of these (``MALLOC_ARENA_MAX``,
``MALLOC_ARENA_TEST``, ``MALLOC_MMAP_MAX_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_TOP_PAD_``, or ``glibc.malloc`` tunables in ``GLIBC_TUNABLES``): that is the user's choice, and how to opt
out (e.g. ``MALLOC_ARENA_MAX=8``). :func:`allocator_settings` says which applied, for each run's ``results.json``.
"""

from __future__ import annotations

import os
import sys

__all__ = ["MALLOC_OPTIONS", "allocator_settings", "release_freed_memory", "reuse_freed_memory"]

# name -> (mallopt(3) parameter from malloc.h: M_ARENA_MAX, M_MMAP_MAX, M_TRIM_THRESHOLD; its value here), in the
# order applied.
_MALLOPT = {"arena_max": (-8, 1), "mmap_max": (-4, 0), "trim_threshold": (-1, 1 << 30)}
MALLOC_OPTIONS = {name: value for name, (_, value) in _MALLOPT.items()}
# glibc's environment settings of what MALLOC_OPTIONS sets (mallopt(3), "ENVIRONMENT"); debugging ones such as
# MALLOC_CHECK_ or MALLOC_PERTURB_ do not count.
MALLOC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_ARENA_TEST", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_",
              "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

# What reuse_freed_memory did, for allocator_settings(): the options applied and where the settings come from.
_state: dict[str, object] = {"malloc_options": {}, "source": "glibc's defaults (reuse_freed_memory was not called)"}


def _left_to_the_environment(environ) -> dict[str, str]:
    """The environment's own allocator settings (name -> value), which :func:`reuse_freed_memory` leaves alone."""
    found = {k: environ[k] for k in MALLOC_ENV if k in environ}
    if "glibc.malloc" in environ.get("GLIBC_TUNABLES", ""):
        found["GLIBC_TUNABLES"] = environ["GLIBC_TUNABLES"]
    if any(name in environ.get("LD_PRELOAD", "") for name in _OTHER_ALLOCATORS):
        found["LD_PRELOAD"] = environ["LD_PRELOAD"]
    return found


def _glibc_version() -> str | None:
    """``"glibc 2.36"``-like where the C library is glibc, else None (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (OSError, ValueError):  # musl: EINVAL; a Python that does not know the name: ValueError
        return None
    return version if version and version.startswith("glibc") else None


def _libc():
    """The process's C library through ctypes where it is glibc, else None."""
    if _glibc_version() is None:
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    except (ImportError, OSError, AttributeError):
        return None
    return libc


def reuse_freed_memory(environ=None) -> dict[str, int] | None:
    """Apply :data:`MALLOC_OPTIONS` with ``mallopt`` (see the module docstring). Returns the options applied, or
    None where nothing was applied: not glibc, or the environment (``environ``, default ``os.environ``) sets the
    allocator itself. If glibc refuses an option, the ones before it stay applied and are what
    :func:`allocator_settings` records. Once applied, a later call changes nothing and returns them again."""
    if _state["malloc_options"] == MALLOC_OPTIONS:  # all applied already (a refusal stops before the last)
        return dict(MALLOC_OPTIONS)
    environ = os.environ if environ is None else environ
    own = _left_to_the_environment(environ)
    if own:
        _state.update(malloc_options={}, source="the environment: " + ", ".join(f"{k}={v}" for k, v in own.items()))
        return None
    libc = _libc()
    if libc is None:
        _state.update(malloc_options={}, source="the C library's defaults (not glibc)")
        return None
    applied = {}
    for name, (param, value) in _MALLOPT.items():
        if libc.mallopt(param, value) != 1:
            _state.update(malloc_options=applied, source=f"stepwise.reuse_freed_memory (glibc refused {name}={value})")
            return None
        applied[name] = value
    _state.update(malloc_options=applied, source="stepwise.reuse_freed_memory")
    return dict(applied)


def release_freed_memory() -> bool:
    """Return the freed memory this process keeps to the system (glibc's ``malloc_trim(0)``: the top of the heap and
    the free pages inside it). True if some was released. A no-op (False) unless :func:`reuse_freed_memory` applied
    its settings: with glibc's defaults large blocks are returned when freed."""
    if not _state["malloc_options"]:
        return False
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


def allocator_settings() -> dict[str, object]:
    """What this process's allocator runs with, for a run's ``results.json``: ``malloc_options`` applied by
    :func:`reuse_freed_memory` (empty if none) and their ``source``."""
    return {"malloc_options": dict(_state["malloc_options"]), "source": _state["source"]}
