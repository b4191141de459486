"""The precision policy of :mod:`stepwise.theory` and :mod:`stepwise.compare`: float64 whatever the x64 flag says.

Every public function of those packages is wrapped in :func:`float64`. Called eagerly, it returns what it returns
with ``jax_enable_x64`` on, bit for bit, whether or not the process has enabled x64:

- x64 already on (the tests, the experiments' theory code): the function runs unchanged.
- x64 off (JAX's default): the call runs inside ``enable_x64(True)``, so float64 NumPy inputs, Python numbers and
  lists stay float64 inside JAX, JAX's module-level ``jit`` caches compile their float64 versions, and default
  dtypes are 64-bit exactly as with x64 on. Results that JAX cannot hold with x64 off (float64, int64, uint64,
  complex128 arrays) come back as NumPy arrays of that dtype, anywhere in a returned pytree (tuples, lists, dicts,
  NamedTuples); everything else is returned as is.

Inputs are not cast: integer and boolean arguments keep their type, and an explicitly lower-precision JAX or NumPy
array keeps the precision the function gives it with x64 on (the JAX-based theory functions follow their input's
dtype, the NumPy-based ones compute in float64). Under a trace (``jax.jit``, ``vmap``, ``grad`` of a caller) the
function runs unchanged: the caller's trace fixes the dtypes, so enable x64 before tracing to get float64 there.
Tests: ``tests/test_precision.py`` calls every public function with float64 input without x64 and compares it with
the x64 result.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import numpy as np

__all__ = ["float64", "is_float64"]

P = ParamSpec("P")
R = TypeVar("R")

# The dtypes JAX silently truncates (with a warning on use) when x64 is off.
_X64_ONLY = frozenset(np.dtype(t) for t in (np.float64, np.int64, np.uint64, np.complex128))


def _leaves(jax, tree: Any) -> list[Any]:
    try:
        return jax.tree.leaves(tree)
    except (TypeError, ValueError):  # e.g. a dict with keys that do not sort: look one level down only
        return list(tree) if isinstance(tree, (tuple, list)) else [tree]


def _traced(jax, args: tuple, kwargs: dict) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in _leaves(jax, (args, kwargs)))


def _host_outputs(jax, out: Any) -> Any:
    def to_host(leaf):
        if isinstance(leaf, jax.Array) and leaf.dtype in _X64_ONLY:  # (a PRNG key's extended dtype is not)
            return np.asarray(leaf)
        return leaf

    try:
        return jax.tree.map(to_host, out)
    except (TypeError, ValueError):  # a container jax.tree cannot flatten: convert what is at the top
        return to_host(out)


def float64(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator: ``fn`` computes as with x64 enabled whatever the global flag (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        # JAX is looked up, not imported: without it in the process no input is a JAX array and no JAX code runs,
        # so the NumPy-only modules (e.g. compare.checks, which stepwise.io imports) do not pull it in.
        jax = sys.modules.get("jax")
        if jax is None or jax.config.jax_enable_x64 or _traced(jax, args, kwargs):
            return fn(*args, **kwargs)
        from stepwise import _compat

        with _compat.enable_x64(True):
            return _host_outputs(jax, fn(*args, **kwargs))

    wrapper.__stepwise_float64__ = True  # type: ignore[attr-defined]
    return wrapper


def is_float64(fn: Any) -> bool:
    """True when ``fn`` is wrapped by :func:`float64` (``tests/test_precision.py`` checks every public function)."""
    return bool(getattr(fn, "__stepwise_float64__", False))
