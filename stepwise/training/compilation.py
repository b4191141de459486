"""A temporary persistent compilation cache for a series of runs that compile the same programs."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator

import jax

__all__ = ["compilation_cache"]


@contextlib.contextmanager
def compilation_cache() -> Iterator[None]:
    """A persistent compilation cache in a temporary folder for the duration of the block, unless one is configured.

    For many runs that compile the same programs, each building its own jitted closures: the step map's cells of one
    loss, learning rate and width differ only in the parameters' values, and with the cache they compile once
    instead of once per head scale (measured: 2.6 s -> 0.6 s per cell on the 2-core CPU). The previous settings are
    restored.
    """
    from jax.experimental.compilation_cache import compilation_cache as cc

    if jax.config.jax_compilation_cache_dir:
        yield
        return
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    before = {n: getattr(jax.config, n) for n in names}
    with tempfile.TemporaryDirectory(prefix="stepwise-compilation-cache-") as folder:
        try:
            jax.config.update("jax_compilation_cache_dir", folder)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
            cc.reset_cache()
            yield
        finally:
            for n, v in before.items():
                jax.config.update(n, v)
            cc.reset_cache()
