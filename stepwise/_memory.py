"""glibc's allocator told to keep freed memory for reuse: :func:`reuse_freed_memory`, called by the command line
(``stepwise run`` / ``verify``) and the benchmarks before JAX starts; a script of your own may call it first thing
(``stepwise.training.reuse_freed_memory()``).

Why: XLA's CPU runtime allocates each compiled program's temporaries anew at every call, as a few large blocks (the
ResNet-18 w0.25 training step: one of 181 MB and several of 38 MB per step). glibc serves any block above 32 MB
(its largest mmap threshold), and every large block of a thread with its own arena, by a fresh ``mmap`` and returns
it by ``munmap`` when freed, so every step faults in and zeroes those pages again: measured, 117 ms of kernel time
per step on the 2-core CPU (15-18% of the step's CPU time). With one arena, no ``mmap`` and a trim threshold of
1 GiB, freed blocks stay in the process's heap and the next step reuses them: 6-7 ms of kernel time per step, and
318-328 ms of wall time per step instead of 345-395 (three pairs of runs). A whole run, ``stepwise run stepwise_deep
--scale cpu-resnet --train.steps 400``: 105-124 ms per step with the settings, 124-148 ms without (three pairs);
kernel time 4-6 s instead of 29-34 s.

The settings are process-wide (like ``XLA_FLAGS``) and act only on threads that allocate after the call, so the call
belongs at the start of a program, before JAX's CPU client starts its threads. They keep up to 1 GiB of freed memory
at the top of the heap (and all the freed memory below the last block in use) in the process instead of returning
it to the system. Nothing is changed where the allocator is not glibc's, or where the environment already sets any
glibc malloc option (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``, ... or
``GLIBC_TUNABLES``): that is the user's choice, and also how to opt out (e.g. ``MALLOC_ARENA_MAX=8``).
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["MALLOC_OPTIONS", "allocator_settings", "reuse_freed_memory"]

# mallopt(3) parameters (malloc.h) and their values here.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
MALLOC_OPTIONS = {"arena_max": 1, "mmap_max": 0, "trim_threshold": 1 << 30}
_PARAMS = {"arena_max": _M_ARENA_MAX, "mmap_max": _M_MMAP_MAX, "trim_threshold": _M_TRIM_THRESHOLD}

_applied: dict[str, int] | None = None
_reason = "not requested (stepwise._memory.reuse_freed_memory was not called)"


def _user_malloc_env(environ) -> list[str]:
    return sorted(k for k in environ if k.startswith("MALLOC_") or (k == "GLIBC_TUNABLES" and "malloc" in environ[k]))


def _glibc():
    """glibc's ``mallopt``, or None where the C library is not glibc (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux") or not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


def reuse_freed_memory(environ=None) -> dict[str, int] | None:
    """Apply :data:`MALLOC_OPTIONS` with ``mallopt`` (see the module docstring). Returns the options applied, or
    None where nothing was changed (not glibc; malloc options set in ``environ``, default ``os.environ``; or glibc
    refused one, in which case the ones before it stay applied). Calling it again is harmless."""
    global _applied, _reason
    environ = os.environ if environ is None else environ
    user = _user_malloc_env(environ)
    if user:
        _reason = f"left to the environment ({', '.join(user)} set)"
        return None
    mallopt = _glibc()
    if mallopt is None:
        _reason = "not glibc: the allocator's defaults"
        return None
    for name, value in MALLOC_OPTIONS.items():
        if mallopt(_PARAMS[name], value) != 1:
            _reason = f"glibc refused mallopt {name}={value}"
            return None
    _applied, _reason = dict(MALLOC_OPTIONS), "stepwise._memory.reuse_freed_memory"
    return dict(_applied)


def allocator_settings() -> dict[str, object]:
    """What this process's allocator runs with, for a run's ``results.json``: the options applied by
    :func:`reuse_freed_memory` (empty if none) and why."""
    return {"malloc_options": dict(_applied or {}), "source": _reason}
