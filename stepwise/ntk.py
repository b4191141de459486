"""Empirical neural tangent kernel of a pure ``(params, x) -> (N, d)`` function, computed in memory-planned blocks.

For a network f(theta, x) in R^d the empirical NTK between two inputs, averaged over the d outputs (the trace
convention of neural-tangents' ``trace_axes=(-1,)``), is

    K(x, x') = (1/d) sum_k  <df_k(x)/dtheta, df_k(x')/dtheta>      (a scalar per pair of inputs)

so the (n1, n2) kernel matrix is ``J1 J2^T / d`` with ``J`` the per-example Jacobian flattened to (n, d * P).

Backends:

* ``"auto"`` (default): ``"neural_tangents"`` where neural-tangents imports on the JAX in use and at least one of
  its implementations passes the probe of :func:`stepwise._compat.nt_working_implementations`, else ``"jax"``.
  Which one ran is in :attr:`NtkPlan.backend` and in :func:`backends_used` (``results.json`` records it).
* ``"neural_tangents"``: ``neural_tangents.empirical_ntk_fn`` with ``trace_axes=(-1,)``,
  ``vmap_axes=0``, imported through :func:`stepwise._compat.import_neural_tangents` (neural-tangents 0.6.5 on
  current JAX, without TensorFlow). ``implementation`` is ``"jacobian_contraction"``, ``"ntk_vector_products"``
  or ``"auto"`` (the one of those two that XLA's cost analysis says needs fewer FLOPs, as neural-tangents' own
  AUTO does, but never ``"structured_derivatives"``, which fails on current JAX: see ``stepwise._compat``).
* ``"jax"``: the project's own Jacobian contraction (``vmap`` over examples of ``jacrev``, one matrix product):
  the obviously-correct reference the tests compare neural-tangents against.

Memory: the kernel is computed in blocks of rows and columns. Before any compute, :func:`plan_ntk` compiles the
block functions for abstract inputs and reads XLA's own memory analysis (arguments, outputs and temporaries of
each compiled block), multiplies it by :data:`RUNTIME_OVERHEAD` and adds :data:`RUNTIME_FIXED_BYTES` (what the
runtime and the compiler allocate outside XLA's buffers, measured), adds what the driver holds (parameters, inputs,
the kernel, a cached row block of the Jacobian), and picks the largest blocks whose estimated peak fits the budget
(default: on a CPU half of the memory the operating system reports as available, on an accelerator 80% of what its
allocator has free; ``float("inf")``: all of it). If even a 1 x 1 block does not fit, it raises a ValueError with
the numbers.
The kernel exists once: the blocks are written into one host array, a symmetric kernel is symmetrised in place
one tile at a time (:data:`SYMMETRISE_TILE`), and that array becomes the returned JAX array without a copy on a
CPU (``jax.device_put`` of a 64-byte-aligned array; ``jnp.asarray`` would hold two more copies on jax 0.10, and
``(K + K.T) / 2`` two more: 3.7 GiB measured for a 1.2 GiB kernel planned at 2.4 GiB).
The jax backend keeps the Jacobian of one block of rows and streams the column blocks past it, so the Jacobian of
each row is computed once and that of each column once per row block; for ``x2=None`` only the blocks on and above
the diagonal are computed.

Several devices (``devices=``, jax backend): groups of row blocks are computed at once, one row block per device
(``jax.shard_map`` over a mesh of the devices: each runs the single-device block program on its rows; parameters and
column inputs replicated, no communication between the devices). Each device holds what one block needs, so the
per-device memory is that of the single-device plan (row blocks at most n1 / devices); the kernel is assembled on the
host, and the time divides by up to the device count.

``apply_fn`` must be per-example (the output row i depends only on input i: no BatchNorm in train mode), as the
models of :mod:`stepwise.models` are; ``stepwise.models.pure_model(module).apply`` is such a function.

References:
  A. Jacot, F. Gabriel, C. Hongler. Neural Tangent Kernel: Convergence and Generalization in Neural Networks.
  NeurIPS 2018.
  R. Novak, J. Sohl-Dickstein, S. Schoenholz. Fast Finite Width Neural Tangent Kernel. ICML 2022 (the
  implementations of neural-tangents' ``empirical_ntk_fn``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from stepwise._memory import release_freed_memory

__all__ = [
    "BACKENDS",
    "ACCELERATOR_BUDGET_FRACTION",
    "DEFAULT_BUDGET_FRACTION",
    "RUNTIME_FIXED_BYTES",
    "RUNTIME_OVERHEAD",
    "SYMMETRISE_TILE",
    "NtkPlan",
    "accelerator_memory_bytes",
    "available_memory_bytes",
    "backends_used",
    "empirical_ntk",
    "ntk_fn",
    "plan_ntk",
    "resolve_backend",
]

Backend = Literal["auto", "neural_tangents", "jax"]
BACKENDS: tuple[str, ...] = ("auto", "neural_tangents", "jax")
# (backend, implementation) pairs that computed a kernel in this process, in order of first use.
_USED: dict[tuple[str, str], None] = {}
# Implementations a caller may name; "structured_derivatives" is recognised only to be refused with a reason.
_IMPLEMENTATION_NAMES = ("auto", "jacobian_contraction", "ntk_vector_products", "structured_derivatives")

# The default budget is this fraction of MemAvailable: other processes share the machine, and XLA's compile-time
# memory and the Python process itself are not in the estimate.
DEFAULT_BUDGET_FRACTION = 0.5
# On an accelerator the blocks are computed in device memory, which the JAX allocator manages alone (its limit
# already leaves room for the runtime): the default budget is this fraction of what the allocator has free.
ACCELERATOR_BUDGET_FRACTION = 0.8
# Column blocks are at most this wide when the Jacobians do not all fit at once: wide enough for an efficient
# matrix product, small enough to leave the memory to the cached row block (whose size sets how often the column
# Jacobians are recomputed).
_MAX_STREAMED_COLUMNS = 64
# Trial block size for measuring the per-example working memory of a compiled block function (a request of at most
# this many rows and columns compiles its blocks once).
_TRIAL_BLOCK = 8
# Compiled block functions of the most recent requests, reused by requests of the same function, shapes and dtype
# (e.g. the NTK tracked along training).
_CACHE_SIZE = 8
_BLOCKS_CACHE: dict[tuple, Any] = {}
_MAX_PLAN_REFINEMENTS = 6
# XLA's memory analysis covers the buffers of its buffer assignment, not what the CPU runtime allocates on the side
# (convolution workspaces, thread-pool scratch) nor the compiler's own memory. Measured peak RSS above the
# baseline (CPU-scale ResNet-18, float32, 2-core CPU) against XLA's figure x: 0.85 GiB at x = 0.42 GiB, 0.71 at
# 0.23, 3.98 at 3.23, 6.84 at 5.27; all below RUNTIME_FIXED_BYTES + RUNTIME_OVERHEAD * x, which the plan budgets.
RUNTIME_OVERHEAD = 1.4
RUNTIME_FIXED_BYTES = 3 * 2**28  # 0.75 GiB
# A symmetric kernel is symmetrised in place in tiles of this many rows and columns: one tile of temporary memory
# (2 MiB in float64), counted in the plan; large enough that the Python loop over tiles costs nothing.
SYMMETRISE_TILE = 512
# The kernel's host array starts on this byte boundary, so that the CPU runtime adopts it without a copy (XLA's
# CPU client copies host buffers that are not aligned to its minimum alignment).
_HOST_ALIGNMENT = 64


# ----------------------------------------------------------------------------------------------------------------
# Memory of the machine.


def available_memory_bytes() -> int:
    """Memory the operating system can give to a new allocation now, in bytes.

    ``MemAvailable`` from ``/proc/meminfo`` (Linux; counts reclaimable page cache), else
    ``os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")`` (free pages only). First gives back the freed
    memory this process keeps for reuse (:func:`stepwise.reuse_freed_memory`), which the system would not count.
    """
    release_freed_memory()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))


def accelerator_memory_bytes(device: Any = None) -> int | None:
    """Bytes the JAX allocator of ``device`` (default: this process's first device) can still give, or None on a CPU
    or where the runtime reports no memory statistics: ``bytes_limit - bytes_in_use`` of ``device.memory_stats()``.
    """
    device = jax.local_devices()[0] if device is None else device
    if device.platform == "cpu":
        return None
    stats = device.memory_stats() or {}
    if "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def _default_budget(device: Any = None, n_devices: int = 1, *, fraction: float | None = None) -> int:
    """On an accelerator, ACCELERATOR_BUDGET_FRACTION of its allocator's free memory (the blocks live there);
    on a CPU, DEFAULT_BUDGET_FRACTION of the memory the operating system reports available, shared by
    ``n_devices`` CPU devices. ``fraction`` replaces either fraction (1.0 for an unlimited budget)."""
    device_free = accelerator_memory_bytes(device)
    if device_free is not None:
        return int((ACCELERATOR_BUDGET_FRACTION if fraction is None else fraction) * device_free)
    return int((DEFAULT_BUDGET_FRACTION if fraction is None else fraction) * available_memory_bytes()) // n_devices


def _budget_bytes(memory_budget: Any, device: Any = None, n_devices: int = 1) -> int:
    """``memory_budget`` as a whole number of bytes.

    None is the default budget (:func:`_default_budget`); ``float("inf")`` means no limit of the caller's: all the
    memory that is there now (the whole of what the default takes a fraction of), so the blocks still fit the
    machine. Any real number is accepted (Python or NumPy ints and floats) and rounded down.

    Raises:
      ValueError: not a real number (a bool, a string, ...), NaN, zero or negative.
    """
    if memory_budget is None:
        return _default_budget(device, n_devices)
    if isinstance(memory_budget, (bool, np.bool_)) or not isinstance(memory_budget, numbers.Real):
        raise ValueError(f"memory_budget must be a positive number of bytes (None: the default, inf: all the "
                         f"memory available), got {memory_budget!r} of type {type(memory_budget).__name__}")
    if not memory_budget > 0:  # NaN too
        raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
    if math.isinf(memory_budget):
        return _default_budget(device, n_devices, fraction=1.0)
    return int(memory_budget)


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


# ----------------------------------------------------------------------------------------------------------------
# Input checks and the compute dtype.


def _compute_dtype(params: Any) -> np.dtype:
    """float64 when x64 is enabled, otherwise the parameters' floating dtype (float32 for the built-in models)."""
    if jax.config.jax_enable_x64:
        return np.dtype(np.float64)
    floats = [leaf.dtype for leaf in jax.tree.leaves(params) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    if not floats:
        raise ValueError("params has no floating-point leaves: there is nothing to differentiate")
    return np.dtype(jnp.result_type(*floats))


def _leaf_dtype(leaf: Any, dtype: np.dtype) -> np.dtype:
    """``dtype`` for floating leaves, the leaf's own dtype otherwise."""
    own = jnp.result_type(leaf)
    return dtype if jnp.issubdtype(own, jnp.floating) else own


def _cast(tree: Any, dtype: np.dtype) -> Any:
    """Floating leaves of ``tree`` as ``dtype`` arrays; other leaves unchanged (as arrays)."""
    return jax.tree.map(lambda a: jnp.asarray(a, _leaf_dtype(a, dtype)), tree)


def resolve_backend(backend: str = "auto", implementation: str = "auto") -> str:
    """The backend that ``backend`` means here: ``"auto"`` becomes ``"neural_tangents"`` where neural-tangents
    imports and one of its implementations passes the probe (always when ``implementation`` names one of them),
    else ``"jax"``; the others are returned as they are.

    Raises:
      ValueError: unknown backend or implementation (see :func:`empirical_ntk`).
    """
    from stepwise._compat import nt_unavailable_reason

    _check_backend(backend, implementation)
    if backend != "auto":
        return backend
    if implementation != "auto":
        return "neural_tangents"
    return "neural_tangents" if nt_unavailable_reason() is None else "jax"


def backends_used() -> list[dict[str, str]]:
    """``[{"backend": ..., "implementation": ...}, ...]`` that computed an NTK in this process (first use first)."""
    return [{"backend": b, "implementation": i} for b, i in _USED]


def _check_backend(backend: str, implementation: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown NTK backend {backend!r}; expected one of {list(BACKENDS)}")
    if implementation not in _IMPLEMENTATION_NAMES:
        raise ValueError(
            f"unknown NTK implementation {implementation!r}; expected one of {list(_IMPLEMENTATION_NAMES[:3])}"
        )
    if implementation == "structured_derivatives":
        raise ValueError(
            "neural-tangents' 'structured_derivatives' implementation does not work with current JAX (it rewrites "
            "jaxprs with JAX internals that have changed; see stepwise._compat) and is never used: choose "
            "'jacobian_contraction', 'ntk_vector_products' or 'auto'"
        )
    if backend == "jax" and implementation != "auto":
        raise ValueError(
            f"implementation={implementation!r} selects a neural-tangents implementation; the 'jax' backend has one "
            f"(Jacobian contraction): leave implementation='auto' or use backend='neural_tangents'"
        )


def _check_inputs(apply_fn: Callable, params: Any, x1: Any, x2: Any | None,
                  dtype: np.dtype) -> tuple[int, int, int, int]:
    """Validates shapes (abstractly, in the compute dtype, no compute); returns (n1, n2, out_dim, n_params)."""
    if not callable(apply_fn):
        raise ValueError(f"apply_fn must be a callable (params, x) -> (N, d), got {type(apply_fn).__name__}")
    x1 = jnp.asarray(x1) if not isinstance(x1, jax.ShapeDtypeStruct) else x1
    if x1.ndim < 1 or x1.shape[0] < 1:
        raise ValueError(f"x1 must be a non-empty batch (N, ...) of inputs, got shape {tuple(x1.shape)}")
    if x2 is not None:
        x2 = jnp.asarray(x2) if not isinstance(x2, jax.ShapeDtypeStruct) else x2
        if x2.ndim < 1 or x2.shape[0] < 1:
            raise ValueError(f"x2 must be a non-empty batch (N, ...) of inputs, got shape {tuple(x2.shape)}")
        if tuple(x2.shape[1:]) != tuple(x1.shape[1:]):
            raise ValueError(
                f"x1 and x2 must hold inputs of the same shape: x1 is {tuple(x1.shape)} (inputs "
                f"{tuple(x1.shape[1:])}), x2 is {tuple(x2.shape)} (inputs {tuple(x2.shape[1:])})"
            )
    probe = jax.ShapeDtypeStruct((1, *x1.shape[1:]), dtype)
    params_spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), _leaf_dtype(a, dtype)), params)
    try:
        out = jax.eval_shape(apply_fn, params_spec, probe)
    except Exception as err:  # noqa: BLE001 - re-raised with what was tried
        raise ValueError(
            f"apply_fn(params, x) failed on one input of shape {tuple(probe.shape)} ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(out, jax.ShapeDtypeStruct) or out.ndim != 2 or out.shape[0] != 1:
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"apply_fn must map a batch (N, ...) to one array (N, d); for N = 1 it returned {shape}")
    n_params = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
    if n_params == 0:
        raise ValueError("params has no entries: there is nothing to differentiate")
    return int(x1.shape[0]), int(x1.shape[0] if x2 is None else x2.shape[0]), int(out.shape[1]), int(n_params)


# ----------------------------------------------------------------------------------------------------------------
# Block functions (pure; jit-able).


def _jacobian_fn(apply_fn: Callable) -> Callable:
    """``(params, x: (b, ...)) -> [(b, d * P_l) for each parameter leaf l]``: each example's Jacobian.

    The leaves stay separate arrays: concatenating them into one (b, d * P) matrix costs a second copy of the
    Jacobian in XLA's temporaries (measured 4.7x the temporary memory for a ResNet-18).
    """

    def single(params, x):
        return apply_fn(params, x[None])[0]

    per_example = jax.vmap(jax.jacrev(single), in_axes=(None, 0))

    def jacobian(params, x):
        return [leaf.reshape(x.shape[0], -1) for leaf in jax.tree.leaves(per_example(params, x))]

    return jacobian


def _contract(j1: list[jax.Array], j2: list[jax.Array], out_dim: int) -> jax.Array:
    """``sum_l j1_l j2_l^T / d`` at full precision (no TF32/bf16 passes on accelerators)."""
    products = [jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST) for a, b in zip(j1, j2, strict=True)]
    return sum(products[1:], start=products[0]) / out_dim


def _jax_block_fn(apply_fn: Callable, out_dim: int) -> Callable:
    jacobian = _jacobian_fn(apply_fn)

    def block(params, x1, x2):
        return _contract(jacobian(params, x1), jacobian(params, x2), out_dim)

    return block


def _nt_block_fn(apply_fn: Callable, implementation: str) -> Callable:
    from stepwise._compat import nt_empirical_ntk_fn

    ntk = nt_empirical_ntk_fn(apply_fn, implementation)

    def block(params, x1, x2):
        return ntk(x1, x2, params)

    return block


def ntk_fn(apply_fn: Callable, *, backend: Backend = "auto",
           implementation: str = "auto") -> Callable:
    """The unblocked kernel as a pure function ``(params, x1: (n1, ...), x2: (n2, ...)) -> (n1, n2)``.

    It can be ``jax.jit``-ed and needs the whole Jacobians of ``x1`` and ``x2`` in memory at once: use
    :func:`empirical_ntk` for planned, blocked evaluation. ``implementation="auto"`` here means
    ``"jacobian_contraction"`` for the neural-tangents backend (no cost analysis without concrete shapes).

    Raises:
      ValueError: unknown backend or implementation, or ``"structured_derivatives"`` (see :mod:`stepwise._compat`).
    """
    backend = resolve_backend(backend, implementation)
    if backend == "jax":

        def fn(params, x1, x2):
            out_dim = jax.eval_shape(apply_fn, params, x1[:1]).shape[1]  # static, also under jit
            return _jax_block_fn(apply_fn, out_dim)(params, x1, x2)

        return fn
    return _nt_block_fn(apply_fn, "jacobian_contraction" if implementation == "auto" else implementation)


# ----------------------------------------------------------------------------------------------------------------
# Planning.


@dataclasses.dataclass(frozen=True)
class NtkPlan:
    """How :func:`empirical_ntk` will compute one request, and the memory it is estimated to need.

    Attributes:
      backend, implementation: what computes the blocks (``implementation`` resolved from ``"auto"``).
      n1, n2, out_dim, n_params: kernel size, the network's output width d and parameter count P.
      symmetric: ``x2 is None`` (only blocks on and above the diagonal are computed).
      dtype: compute dtype.
      block_rows, block_cols: block shape; inputs are padded (by repeating their last row) to whole blocks.
      jacobian_bytes_per_example: ``d * P * itemsize``, one row of the flattened Jacobian.
      held_bytes: what the driver holds for the whole request (parameters; the inputs converted to the compute
        dtype and padded to whole blocks; the kernel, once; for a symmetric kernel one :data:`SYMMETRISE_TILE`
        square tile) plus :data:`RUNTIME_FIXED_BYTES`.
      block_bytes: what computing one block adds: XLA's memory analysis of the compiled block functions (outputs
        and temporaries, plus the cached row block of the Jacobian for the jax backend) times
        :data:`RUNTIME_OVERHEAD` for what the runtime allocates outside XLA's buffers.
      peak_bytes: ``held_bytes + block_bytes``, the estimated peak.
      budget_bytes: the budget it must fit.
      n_blocks: number of (row block, column block) pairs computed.
      jacobian_rows_computed: per-example Jacobians evaluated in total (recomputation included; jax backend, and
        ``2 * block_rows * block_cols`` per block for neural-tangents' Jacobian contraction).
      matmul_flops: ``2 * n1 * n2 * P * d``, the matrix-multiply lower bound of ``J1 J2^T`` (half of the
        off-diagonal blocks are skipped when symmetric; this is the full-kernel figure, as used for FLOP/s).
    """

    backend: str
    implementation: str
    n1: int
    n2: int
    out_dim: int
    n_params: int
    symmetric: bool
    dtype: str
    block_rows: int
    block_cols: int
    jacobian_bytes_per_example: int
    held_bytes: int
    block_bytes: int
    peak_bytes: int
    budget_bytes: int
    n_blocks: int
    jacobian_rows_computed: int
    matmul_flops: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _allocated_bytes(compiled) -> int:
    """Bytes a compiled XLA executable allocates beyond its arguments: outputs + temporaries."""
    stats = compiled.memory_analysis()
    return int(stats.output_size_in_bytes + stats.temp_size_in_bytes)


class _Blocks:
    """Compiles (and caches) the block functions of one request for given block sizes; reports their memory."""

    def __init__(self, apply_fn: Callable, backend: str, implementation: str, out_dim: int, params: Any,
                 x_shape: tuple[int, ...], dtype: np.dtype, device: Any = None):
        self.backend, self.implementation, self.out_dim = backend, implementation, out_dim
        self.device = jax.devices()[0] if device is None else device
        self.params_spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
        self.x_shape, self.dtype = tuple(x_shape), dtype
        self._cache: dict[tuple, Any] = {}
        if backend == "jax":
            jacobian = _jacobian_fn(apply_fn)
            self._fns = {
                "jacobian": jax.jit(jacobian),
                "column": jax.jit(lambda p, j_rows, x: _contract(j_rows, jacobian(p, x), out_dim)),
                "gram": jax.jit(lambda j: _contract(j, j, out_dim)),
            }
        else:
            self._fns = {"block": jax.jit(_nt_block_fn(apply_fn, implementation))}

    def _x(self, b: int) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((b, *self.x_shape), self.dtype)

    def _j(self, b: int) -> list[jax.ShapeDtypeStruct]:
        return [jax.ShapeDtypeStruct((b, self.out_dim * math.prod(leaf.shape)), self.dtype)
                for leaf in jax.tree.leaves(self.params_spec)]

    def compiled(self, name: str, *sizes: int):
        key = (name, *sizes)
        if key not in self._cache:
            p = self.params_spec
            args = {
                "jacobian": lambda b: (p, self._x(b)),
                "column": lambda r, c: (p, self._j(r), self._x(c)),
                "gram": lambda r: (self._j(r),),
                "block": lambda r, c: (p, self._x(r), self._x(c)),
            }[name](*sizes)
            with jax.default_device(self.device):  # compiled for where the parameters are (see _placement)
                self._cache[key] = self._fns[name].lower(*args).compile()
        return self._cache[key]

    def bytes_per_row(self, rows: int, cols: int) -> float:
        """Memory per input row of a small trial block: Jacobian rows plus the working memory computing them."""
        if self.backend != "jax":
            return _allocated_bytes(self.compiled("block", rows, cols)) / (rows + cols)
        return _allocated_bytes(self.compiled("jacobian", rows)) / rows

    def block_bytes(self, rows: int, cols: int, *, jacobian_row_bytes: int, symmetric: bool, n1: int,
                    n2: int) -> int:
        """Peak bytes added by computing one (rows, cols) block (beyond the request's held arrays)."""
        if self.backend != "jax":
            return _allocated_bytes(self.compiled("block", rows, cols))
        held_rows = rows * jacobian_row_bytes
        peaks = [_allocated_bytes(self.compiled("jacobian", rows))]
        if symmetric:
            peaks.append(held_rows + _allocated_bytes(self.compiled("gram", rows)))
        if not (symmetric and rows >= n1):  # off-diagonal blocks exist
            peaks.append(held_rows + _allocated_bytes(self.compiled("column", rows, cols)))
        return max(peaks)


def _largest(limit: int, fits: Callable[[int], bool]) -> int:
    """Largest b in [1, limit] with fits(b) (fits is monotone decreasing), or 0 if none."""
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _placement(params: Any):
    """The device the blocks run on: that of the parameters where they are arrays on one device, else the default
    device (``jax.default_device`` included). Part of the compiled blocks' cache key: a program compiled for the CPU
    refuses GPU arrays, and the other way round."""
    for leaf in jax.tree.leaves(params):
        if isinstance(leaf, jax.Array):
            devices = leaf.devices()
            if len(devices) == 1:
                return next(iter(devices))
            break
    default = jax.config.jax_default_device
    return jax.devices()[0] if default is None else default


def _plan(apply_fn, params, x1, x2, *, backend, implementation, memory_budget) -> tuple[NtkPlan, _Blocks]:
    dtype = _compute_dtype(params)
    n1, n2, out_dim, n_params = _check_inputs(apply_fn, params, x1, x2, dtype)
    budget = _budget_bytes(memory_budget)
    symmetric = x2 is None
    itemsize = dtype.itemsize
    x_shape = tuple(jnp.shape(x1)[1:])
    params_c = _cast(params, dtype)
    signature = (jax.tree.structure(params_c), tuple((leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(params_c)))
    device = _placement(params)
    key = (apply_fn, backend, implementation, out_dim, signature, x_shape, str(dtype), device)
    if key not in _BLOCKS_CACHE:
        resolved = implementation
        if backend == "neural_tangents":
            resolved = _resolve_implementation(apply_fn, params_c, x_shape, dtype, implementation)
        while len(_BLOCKS_CACHE) >= _CACHE_SIZE:
            del _BLOCKS_CACHE[next(iter(_BLOCKS_CACHE))]
        _BLOCKS_CACHE[key] = _Blocks(apply_fn, backend, resolved, out_dim, params_c, x_shape, dtype, device)
    blocks = _BLOCKS_CACHE[key]
    implementation = blocks.implementation
    j_row = out_dim * n_params * itemsize
    x_row = math.prod(x_shape) * itemsize

    def held(rows: int, cols: int) -> int:
        # Every buffer the driver holds beside the blocks' own: the parameters in the compute dtype; the inputs
        # as the driver makes them (_input_rows); the kernel once; the tile of the in-place symmetrisation.
        n1p, n2p = -(-n1 // rows) * rows, -(-n2 // cols) * cols
        inputs = _input_rows(x1, n1, n1p, dtype)
        if not symmetric:
            inputs += _input_rows(x2, n2, n2p, dtype)
        elif cols != rows:  # x1[:n1] padded to the column width
            inputs += n1 + (n2p if n2p != n1 else 0)
        tile = min(SYMMETRISE_TILE, n1) ** 2 * itemsize if symmetric else 0
        return RUNTIME_FIXED_BYTES + n_params * itemsize + inputs * x_row + n1 * n2 * itemsize + tile

    # First guess from a linear model of a small trial block, then refine on the compiled blocks themselves.
    # (A trial block as large as the whole request is the block that will run: compiled once.)
    per_row = RUNTIME_OVERHEAD * max(blocks.bytes_per_row(min(_TRIAL_BLOCK, n1), min(_TRIAL_BLOCK, n2)), j_row)
    sizes = dict(jacobian_row_bytes=j_row, symmetric=symmetric, n1=n1, n2=n2)
    free = budget - held(1, 1)

    def guess_fits(r: int, c: int) -> bool:
        cached = RUNTIME_OVERHEAD * r * j_row if backend == "jax" else 0
        return cached + (r + c) * per_row + r * c * itemsize <= free

    if guess_fits(n1, n2):
        rows, cols = n1, n2
    elif symmetric and backend == "jax" and guess_fits(n1, 0):  # the Gram block J J^T alone
        rows = cols = n1
    else:
        cols = min(n2, _MAX_STREAMED_COLUMNS) if backend == "jax" else n2
        rows = _largest(n1, lambda r: guess_fits(r, cols))
        if rows < cols:  # square blocks when even the streaming width does not fit next to a larger row block
            rows = cols = _largest(min(n1, n2), lambda b: guess_fits(b, b))
    rows, cols = max(rows, 1), max(cols, 1)
    for _ in range(_MAX_PLAN_REFINEMENTS):
        need = held(rows, cols) + RUNTIME_OVERHEAD * blocks.block_bytes(rows, cols, **sizes)
        if need <= budget or (rows == 1 and cols == 1):
            break
        rows, cols = max(1, rows * 3 // 4), max(1, cols * 3 // 4)
    block_bytes = int(RUNTIME_OVERHEAD * blocks.block_bytes(rows, cols, **sizes))
    peak = held(rows, cols) + block_bytes
    if peak > budget:
        raise ValueError(
            f"the empirical NTK of {n1} x {n2} inputs does not fit the memory budget of {_gib(budget)} even one "
            f"block of {rows} x {cols} at a time: that block needs an estimated {_gib(peak)} ({_gib(block_bytes)} "
            f"for the block, of which {_gib(j_row)} per example is the Jacobian d * P * itemsize = {out_dim} * "
            f"{n_params} * {itemsize} bytes, plus {_gib(held(rows, cols))} held for parameters, inputs, the "
            f"kernel and the runtime). Raise memory_budget, use float32 (disable x64), or a smaller network or output "
            "width"
        )
    schedule = _schedule(n1, n2, rows, cols, symmetric=symmetric, backend=backend)
    pairs = sum(len(row) for _, row in schedule)
    if backend == "jax":
        jac_rows = len(schedule) * rows + sum(cols for _, row in schedule for _, kind in row if kind == "column")
    else:
        jac_rows = pairs * (rows + cols)
    plan = NtkPlan(
        backend=backend, implementation=implementation if backend == "neural_tangents" else "jacobian_contraction",
        n1=n1, n2=n2, out_dim=out_dim, n_params=n_params, symmetric=symmetric, dtype=str(dtype),
        block_rows=rows, block_cols=cols, jacobian_bytes_per_example=j_row, held_bytes=held(rows, cols),
        block_bytes=block_bytes, peak_bytes=peak, budget_bytes=budget, n_blocks=pairs,
        jacobian_rows_computed=jac_rows, matmul_flops=2.0 * n1 * n2 * n_params * out_dim,
    )
    return plan, blocks


def _input_rows(x: Any, n: int, n_padded: int, dtype: np.dtype) -> int:
    """Rows of input copies the driver holds for ``x`` of ``n`` rows: none to convert an array already on a
    device in the compute dtype, else two (``jnp.asarray`` of host data holds two copies for a moment on jax 0.10,
    and the CPU runtime keeps freed buffers for reuse, so the moment counts); one more padded to ``n_padded``
    rows unless that is ``n``."""
    on_device = isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) and np.dtype(x.dtype) == dtype
    return (0 if on_device else 2 * n) + (n_padded if n_padded != n else 0)


def _resolve_implementation(apply_fn, params, x_shape, dtype, implementation: str) -> str:
    """A working neural-tangents implementation: the named one, or for "auto" the cheaper of the working ones."""
    from stepwise._compat import nt_working_implementations

    working = nt_working_implementations()
    if implementation != "auto" and implementation not in working:
        raise ValueError(
            f"neural-tangents implementation {implementation!r} does not work with the JAX in use "
            f"({jax.__version__}); working implementations: {list(working)} (or 'auto')"
        )
    if implementation != "auto":
        return implementation
    if len(working) == 1:
        return working[0]
    x = jax.ShapeDtypeStruct((_TRIAL_BLOCK, *x_shape), dtype)
    spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
    flops = {}
    for name in working:
        cost = jax.jit(_nt_block_fn(apply_fn, name)).lower(spec, x, x).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops[name] = float(cost.get("flops", math.inf))
    return min(working, key=lambda name: flops[name])


def plan_ntk(apply_fn: Callable, params: Any, x1: Any, x2: Any | None = None, *,
             backend: Backend = "auto", implementation: str = "auto",
             memory_budget: float | None = None) -> NtkPlan:
    """The block sizes and estimated peak memory :func:`empirical_ntk` would use for this request (no kernel is
    computed; the block functions are compiled, which takes seconds for a ResNet).

    ``x1`` and ``x2`` may be arrays or ``jax.ShapeDtypeStruct``. ``memory_budget`` is a number of bytes (Python or
    NumPy int or float, rounded down), None for the default, or ``float("inf")`` for no limit of the caller's: the
    blocks are then sized to all the memory available now (the whole of what the default takes a fraction of).
    Raises ValueError exactly where :func:`empirical_ntk` would, including when even one block does not fit
    ``memory_budget`` and for a budget that is not a positive number (NaN, zero, negative, a bool or a string).
    """
    backend = resolve_backend(backend, implementation)
    return _plan(apply_fn, params, x1, x2, backend=backend, implementation=implementation,
                 memory_budget=memory_budget)[0]


# ----------------------------------------------------------------------------------------------------------------
# The blocked driver.


def _schedule(n1: int, n2: int, rows: int, cols: int, *, symmetric: bool,
              backend: str) -> list[tuple[int, list[tuple[int, str]]]]:
    """``[(row start, [(column start, kind), ...]), ...]``: the blocks to compute, row block by row block.

    ``kind`` is ``"gram"`` (a diagonal block of a symmetric kernel from the cached row Jacobian alone, jax
    backend), ``"column"`` (jax backend: the column block's Jacobian against the cached rows) or ``"block"``
    (neural-tangents: both Jacobians). Blocks entirely below the diagonal of a symmetric kernel are skipped.
    """
    out = []
    for i in range(0, n1, rows):
        row = []
        for j in range(0, n2, cols):
            if symmetric and j + cols <= i:
                continue
            if backend != "jax":
                row.append((j, "block"))
            else:
                row.append((j, "gram" if symmetric and (i, rows) == (j, cols) else "column"))
        out.append((i, row))
    return out


def _host_kernel(n1: int, n2: int, dtype: np.dtype) -> np.ndarray:
    """An uninitialised (n1, n2) host array starting on a :data:`_HOST_ALIGNMENT`-byte boundary."""
    dtype = np.dtype(dtype)
    raw = np.empty(n1 * n2 * dtype.itemsize + _HOST_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _HOST_ALIGNMENT
    return raw[start:start + n1 * n2 * dtype.itemsize].view(dtype).reshape(n1, n2)


def _symmetrise_in_place(k: np.ndarray, tile: int = SYMMETRISE_TILE) -> None:
    """``k <- (k + k.T) / 2`` for a square ``k``, tile by tile: one (tile, tile) temporary, not two copies of k.

    The result equals ``(k + k.T) / 2`` bit for bit (each entry is the same sum of the same two numbers, halved).
    """
    n = k.shape[0]
    for a in range(0, n, tile):
        for b in range(a, n, tile):
            upper, lower = k[a:a + tile, b:b + tile], k[b:b + tile, a:a + tile]
            mean = upper + lower.T
            mean *= 0.5
            upper[...] = mean
            lower[...] = mean.T


def _pad_rows(x: jax.Array, multiple: int) -> jax.Array:
    """Pads (n, ...) to a multiple of ``multiple`` rows by repeating the last row (a valid input for any net)."""
    extra = -x.shape[0] % multiple
    return x if extra == 0 else jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)], axis=0)


def empirical_ntk(apply_fn: Callable, params: Any, x1: Any, x2: Any | None = None, *,
                  backend: Backend = "auto", implementation: str = "auto",
                  memory_budget: float | None = None, devices: Any = None) -> jax.Array:
    """Empirical NTK averaged over the output dimension, computed in blocks within a memory budget.

    Args:
      apply_fn: per-example network ``(params, x: (N, ...)) -> (N, d)``, e.g.
        ``stepwise.models.pure_model(module).apply``.
      params: pytree of parameter arrays (differentiated).
      x1: (n1, ...) inputs.
      x2: (n2, ...) inputs of the same shape, or None for ``x2 = x1`` (then only blocks on and above the diagonal
        are computed and the result is exactly symmetric).
      backend: ``"auto"`` (neural-tangents where it works on this JAX, else ``"jax"``), ``"neural_tangents"`` or
        ``"jax"`` (the project's own Jacobian contraction, the reference).
      implementation: neural-tangents backend only: ``"auto"``, ``"jacobian_contraction"`` or
        ``"ntk_vector_products"``.
      memory_budget: bytes the computation may use, any real number (Python or NumPy; default:
        ``DEFAULT_BUDGET_FRACTION`` of :func:`available_memory_bytes`; ``float("inf")``: all of it, i.e. no limit
        but the machine's); see :func:`plan_ntk`. With ``devices``: per device (default: the first
        device's free memory on accelerators; on CPU devices, which share the host's memory, the host default
        divided by the number of devices).
      devices: this process's devices to spread the row blocks over (module docstring), or None for the default
        device. Needs the jax backend (``"auto"`` selects it) and, for convolutional networks, JAX >= 0.8.

    Returns:
      (n1, n2) ``K[i, j] = (1/d) sum_k <df_k(x1_i)/dtheta, df_k(x2_j)/dtheta>``, float64 when x64 is enabled
      (parameters and inputs are cast to it), otherwise in the parameters' dtype.

    Raises:
      ValueError: unknown backend or implementation, ``"structured_derivatives"``, inputs of different shapes or
        an ``apply_fn`` that does not return (N, d), or a budget too small for even one block (with the numbers);
        a ``memory_budget`` that is not a positive number; ``devices`` empty, not this process's, with the
        neural-tangents backend, or a convolutional network on JAX < 0.8; all before any kernel is computed.

    Example:
      >>> from flax import nnx
      >>> from stepwise.models import MLP, pure_model
      >>> pure = pure_model(MLP((2, 2, 1), hidden=(8,), embed_dim=3, rngs=nnx.Rngs(0)))
      >>> x = jnp.ones((5, 2, 2, 1), jnp.float32)
      >>> empirical_ntk(pure.apply, pure.params, x, backend="jax").shape
      (5, 5)
    """
    if devices is not None:
        return _sharded_ntk(apply_fn, params, x1, x2, backend=backend, implementation=implementation,
                            memory_budget=memory_budget, devices=list(devices))
    backend = resolve_backend(backend, implementation)
    plan, blocks = _plan(apply_fn, params, x1, x2, backend=backend, implementation=implementation,
                         memory_budget=memory_budget)
    _USED.setdefault((plan.backend, plan.implementation), None)
    dtype = np.dtype(plan.dtype)
    params = _cast(params, dtype)
    rows, cols = plan.block_rows, plan.block_cols
    x1 = _pad_rows(jnp.asarray(x1, dtype), rows)
    x2 = x1 if x2 is None else _pad_rows(jnp.asarray(x2, dtype), cols)
    if plan.symmetric and cols != rows:
        x2 = _pad_rows(x1[: plan.n1], cols)
    out = _host_kernel(plan.n1, plan.n2, dtype)
    for i, row in _schedule(plan.n1, plan.n2, rows, cols, symmetric=plan.symmetric, backend=backend):
        r_end = min(i + rows, plan.n1)
        j_rows = blocks.compiled("jacobian", rows)(params, x1[i:i + rows]) if backend == "jax" else None
        for j, kind in row:
            c_end = min(j + cols, plan.n2)
            if kind == "gram":
                block = blocks.compiled("gram", rows)(j_rows)
            elif kind == "column":
                block = blocks.compiled("column", rows, cols)(params, j_rows, x2[j:j + cols])
            else:
                block = blocks.compiled("block", rows, cols)(params, x1[i:i + rows], x2[j:j + cols])
            block = np.asarray(block)[: r_end - i, : c_end - j]
            out[i:r_end, j:c_end] = block
            if plan.symmetric:
                out[j:c_end, i:r_end] = block.T
        del j_rows
    if plan.symmetric:  # exact symmetry (diagonal blocks are symmetric only to rounding)
        _symmetrise_in_place(out)
    return jax.device_put(out)  # adopts the host array on a CPU (no copy); see the module docstring


def _sharded_ntk(apply_fn: Callable, params: Any, x1: Any, x2: Any | None, *, backend: str, implementation: str,
                 memory_budget: float | None, devices: list) -> jax.Array:
    """:func:`empirical_ntk` with its row blocks spread over ``devices``: the single-device plan (per device), then
    for each group of ``len(devices)`` row blocks one Jacobian call and one call per column block, each a
    ``jax.shard_map`` over a leading device axis (one row block per device)."""
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    if not devices:
        raise ValueError("devices must name at least one device (or be None for the default device)")
    foreign = [d for d in devices if d.process_index != jax.process_index()]
    if foreign:
        raise ValueError(f"devices must be this process's (jax.local_devices()); {foreign} belong to other processes")
    if backend == "neural_tangents":
        raise ValueError("devices= spreads the jax backend's row blocks; use backend='jax' (or 'auto') with it")
    backend = resolve_backend("jax", implementation)
    n_dev = len(devices)
    memory_budget = _budget_bytes(memory_budget, devices[0], n_dev)
    plan, _ = _plan(apply_fn, params, x1, x2, backend=backend, implementation=implementation,
                    memory_budget=memory_budget)
    _USED.setdefault((plan.backend, plan.implementation), None)
    dtype = np.dtype(plan.dtype)
    n1, n2, cols = plan.n1, plan.n2, plan.block_cols
    rows = min(plan.block_rows, -(-n1 // n_dev))  # every device gets rows (smaller blocks need less memory)
    mesh = Mesh(np.array(devices), ("blocks",))
    replicated, by_device = NamedSharding(mesh, P()), NamedSharding(mesh, P("blocks"))
    jacobian = _jacobian_fn(apply_fn)
    out_dim = plan.out_dim

    # shard_map: each device runs the single-device program on its own row block. (A jit of the vmapped Jacobian
    # with the row axis sharded leaves the per-example convolution-kernel Jacobians to XLA's SPMD partitioner,
    # which gets them wrong: errors of 84-100% of the largest entry for a SmallCNN on 4 CPU devices, jax 0.10.2
    # and 0.12.0.1; the dense layers and the data-parallel gradient are right.)
    def device_rows(p, x):  # x: (1, rows, ...) -> [(1, rows, d * P_l)]
        return [j[None] for j in jacobian(p, x[0])]

    def device_column(p, j_rows, x):  # j_rows: [(1, rows, d * P_l)], x: (cols, ...) -> (1, rows, cols)
        return _contract([j[0] for j in j_rows], jacobian(p, x), out_dim)[None]

    # check_vma=False: the parameters are replicated (P()), and with varying-axis checking the derivative with
    # respect to them would be summed over the devices (the transpose of their implicit broadcast), not per device.
    row_jacobians = jax.jit(jax.shard_map(device_rows, mesh=mesh, in_specs=(P(), P("blocks")),
                                          out_specs=P("blocks"), check_vma=False))
    column = jax.jit(jax.shard_map(device_column, mesh=mesh, in_specs=(P(), P("blocks"), P()),
                                   out_specs=P("blocks"), check_vma=False))

    params = jax.device_put(_cast(params, dtype), replicated)
    x1 = jnp.asarray(x1, dtype)
    xs = _pad_rows(x1, rows * n_dev)
    xs = xs.reshape(-1, n_dev, rows, *xs.shape[1:])  # (groups, devices, rows, ...)
    x2 = _pad_rows(x1 if x2 is None else jnp.asarray(x2, dtype), cols)
    x2 = jax.device_put(x2.reshape(-1, cols, *x2.shape[1:]), replicated)  # (column blocks, cols, ...)
    out = _host_kernel(n1, n2, dtype)
    for g in range(xs.shape[0]):
        starts = [(g * n_dev + k) * rows for k in range(n_dev)]
        try:  # the first call traces the programs before anything is computed
            j_rows = row_jacobians(params, jax.device_put(xs[g], by_device))
        except NotImplementedError as err:
            raise ValueError(
                f"JAX {jax.__version__} cannot differentiate this network inside jax.shard_map (convolutions under "
                "vmap there fail before JAX 0.8.0: jax-ml/jax#32157); use devices=None or JAX >= 0.8"
            ) from err
        for jb in range(x2.shape[0]):
            j = jb * cols
            if plan.symmetric and j + cols <= starts[0]:
                continue  # below the diagonal for every row block of the group
            blocks = np.asarray(column(params, j_rows, x2[jb]))  # (devices, rows, cols)
            c_end = min(j + cols, n2)
            for k, i in enumerate(starts):
                if i >= n1 or (plan.symmetric and j + cols <= i):
                    continue
                r_end = min(i + rows, n1)
                block = blocks[k, : r_end - i, : c_end - j]
                out[i:r_end, j:c_end] = block
                if plan.symmetric:
                    out[j:c_end, i:r_end] = block.T
        del j_rows
    if plan.symmetric:  # exact symmetry, as in the single-device driver
        _symmetrise_in_place(out)
    return jax.device_put(out)


# ----------------------------------------------------------------------------------------------------------------
# Infinite width: the same architectures in neural_tangents.stax.


def stax_network(module, *, init_scale: float = 1.0):
    """``(init_fn, apply_fn, kernel_fn)`` of ``neural_tangents.stax`` for the architecture of ``module``.

    The built-in :class:`stepwise.models.MLP` and :class:`stepwise.models.SmallCNN` (``norm="none"``) are mirrored
    layer by layer: the same widths, ReLUs, 3x3 SAME convolutions, 2x2 VALID average pools, global mean and
    projector (no ReLU between the backbone output and the first projector layer, as in the modules). Both use
    the *standard* parameterisation, ``z = x W + b``: Flax's ``lecun_normal`` draws ``W`` with variance
    ``init_scale**2 / fan_in`` (fan_in = input width, or 3 * 3 * input channels for a convolution) and biases start
    at zero but are trained, which is ``parameterization="standard"``, ``W_std=init_scale``, ``b_std=0.0`` in stax
    (``b_std=0.0`` keeps the bias's NTK term, which ``b_std=None`` would drop). In the standard parameterisation
    the NTK grows with the widths, and stax's kernel is that of the finite widths of ``module`` in the
    infinite-width (Gaussian) limit: the empirical NTK of ``module`` approaches it as the widths grow.

    Flax's ``lecun_normal`` is a truncated normal rescaled to the same variance; the limit depends on the variance
    only, except that the first layer's pre-activations are sums of ``fan_in`` truncated-normal terms, whose
    departure from a Gaussian (O(1/fan_in) in excess kurtosis) leaves a width-independent difference.

    Args:
      module: an ``MLP``, or a ``SmallCNN`` with ``norm="none"`` (stax has no GroupNorm).
      init_scale: the ``init_scale`` the module was built with (it is not recorded on the module).

    Raises:
      ValueError: for another module type, a GroupNorm CNN, or a non-positive ``init_scale``.
    """
    from stepwise._compat import import_neural_tangents
    from stepwise.models.nets import MLP, SmallCNN

    stax = import_neural_tangents().stax
    if not init_scale > 0:
        raise ValueError(f"init_scale must be positive, got {init_scale!r}")
    dense_kw = dict(W_std=float(init_scale), b_std=0.0, parameterization="standard")

    def dense_stack(dense) -> list:
        layers = []
        for i, layer in enumerate(dense.layers):
            if i > 0:
                layers.append(stax.Relu())
            layers.append(stax.Dense(int(layer.kernel.shape[1]), **dense_kw))
        return layers

    if isinstance(module, MLP):
        layers = [stax.Flatten(), *dense_stack(module.backbone), *dense_stack(module.projector)]
    elif isinstance(module, SmallCNN):
        if any(conv.norm is not None for conv in module.convs):
            raise ValueError("stax_network: neural-tangents' stax has no GroupNorm; build SmallCNN with norm='none'")
        layers = []
        for conv_norm, window in zip(module.convs, module.pool_windows):
            conv = conv_norm.conv
            layers += [stax.Conv(int(conv.out_features), tuple(conv.kernel_size), padding="SAME", **dense_kw),
                       stax.Relu(), stax.AvgPool(tuple(window), strides=tuple(window), padding="VALID")]
        layers += [stax.GlobalAvgPool(), *dense_stack(module.head), *dense_stack(module.projector)]
    else:
        raise ValueError(
            f"stax_network mirrors stepwise.models.MLP and SmallCNN (norm='none'); got {type(module).__name__}"
        )
    return stax.serial(*layers)


def infinite_ntk(module, x1: Any, x2: Any | None = None, *, init_scale: float = 1.0) -> jax.Array:
    """Infinite-width NTK of ``module``'s architecture (per output, i.e. averaged over outputs) via stax.

    Args:
      module: see :func:`stax_network`.
      x1: (n1, H, W, C) images; x2: (n2, H, W, C) or None for ``x1``.
      init_scale: the module's ``init_scale``.

    Returns:
      (n1, n2) kernel, float64 when x64 is enabled; compare with :func:`empirical_ntk` of
      ``pure_model(module).apply``.
    """
    _, _, kernel_fn = stax_network(module, init_scale=init_scale)
    dtype = np.dtype(np.float64) if jax.config.jax_enable_x64 else np.dtype(np.float32)
    x1 = jnp.asarray(x1, dtype)
    x2 = None if x2 is None else jnp.asarray(x2, dtype)
    if x1.ndim != 4 or (x2 is not None and x2.shape[1:] != x1.shape[1:]):
        raise ValueError(f"x1, x2 must be image batches (N, H, W, C) of one shape, got {x1.shape} and "
                         f"{None if x2 is None else x2.shape}")
    from stepwise._compat import standard_dtype_promotion

    with standard_dtype_promotion():  # stax mixes integer and float arrays internally
        return jax.jit(kernel_fn, static_argnames="get")(x1, x2, get="ntk")
