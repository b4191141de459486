"""The one place for workarounds of third-party behaviour that depends on library versions.

Current entries:

- :func:`standard_dtype_promotion`: code of other libraries that mixes dtypes internally, which fails when the caller
  runs JAX with ``jax_numpy_dtype_promotion="strict"`` (our test suite does, to catch silent promotions in our own
  code). Used around:
    * dm-pix (0.4.x) ``random_saturation`` / ``random_hue``: its RGB<->HSV conversion mixes bool and float arrays;
    * Flax (0.12.x) ``nnx.GroupNorm``: computes statistics in ``promote_types(dtype, float32)``, which raises for
      float64 under strict promotion.
  The standard rules give the intended dtypes in both cases; our own code stays under the caller's setting.

The neural-tangents import shim (see its issue) belongs here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

__all__ = ["standard_dtype_promotion"]


@contextlib.contextmanager
def standard_dtype_promotion() -> Iterator[None]:
    """Run a third-party call under JAX's standard dtype promotion, whatever the caller's setting."""
    with jax.numpy_dtype_promotion("standard"):
        yield
