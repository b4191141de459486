"""How the training steps are compiled: :func:`jit_step` (XLA options of the CPU step) and
:func:`compilation_cache` (a temporary persistent cache for a series of runs that compile the same programs)."""

from __future__ import annotations

import contextlib
import functools
import tempfile
from collections.abc import Callable, Iterator

import jax
import numpy as np

__all__ = ["CPU_STEP_OPTIONS", "compilation_cache", "jit_step", "step_compiler_options"]

# XLA's CPU compiler hands convolutions (forward, and the backward of stride-1 ones) and some dots to YNNPACK by
# default from jaxlib 0.8 on. For the training steps its kernels are slower than XLA's own (Eigen) ones on the 2-core
# x86 CPU: `make bench-train` (`tried`: ynnpack_on, docs/bench_train_cpu.json) measures the step with them at x1.60
# (ResNet-18 w0.25), x2.04 (SmallCNN) and x1.09 (MLP) of the time without. The empty list turns those fusions off;
# the option only concerns programs compiled for the CPU (other backends ignore it).
CPU_STEP_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def step_compiler_options() -> dict[str, str]:
    """:data:`CPU_STEP_OPTIONS` where this jaxlib knows them (0.8 and later), else ``{}`` (jaxlib 0.7 has no
    YNNPACK fusions to turn off and refuses an unknown option). Probed once by compiling a one-op program."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_STEP_OPTIONS).lower(np.float32(0)).compile()
    except Exception:  # noqa: BLE001 - jaxlib raises its own runtime error type for an unknown option
        return {}
    return dict(CPU_STEP_OPTIONS)


def jit_step(step: Callable, **jit_kwargs) -> Callable:
    """``jax.jit(step, **jit_kwargs)`` with :func:`step_compiler_options`: how every image-SSL training step is
    compiled (the values it computes are those of ``jax.jit(step)`` up to float rounding: another kernel runs the
    convolutions)."""
    return jax.jit(step, compiler_options=step_compiler_options() or None, **jit_kwargs)


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
