"""Compute plans: the FLOPs of the jitted programs of a run (XLA's cost analysis) and the time they take on a device.

A run's plan is computed before any compute (``stepwise run EXPERIMENT --scale gpu`` prints it): each program a run
executes many times (the training step, the tracking function, an empirical NTK) is lowered for abstract inputs of
the run's shapes, and XLA's cost analysis of the lowered module gives its FLOPs (``jax.stages.Lowered.cost_analysis``:
no compilation, no device memory). The time estimate divides the total by the device's peak FLOP/s for the compute
dtype (:data:`PEAK_FLOPS`, or on a CPU a matrix product timed on the spot) times an assumed achievable fraction
(:data:`ASSUMED_EFFICIENCY`), and adds an assumed compile-and-host allowance per compiled program
(:data:`ASSUMED_COMPILE_S`). Both assumptions are stated in every plan; a run records its plan next to its measured
times in results.json, which is where the fraction is measured.

The FLOP counts are those of XLA's HLO cost analysis: two per multiply-add of every dot and convolution (forward and
backward), plus one per elementwise operation; FLOPs are the same in bf16 and float32.

Example:
  >>> import jax, jax.numpy as jnp
  >>> f = jax.jit(lambda a, b: a @ b)
  >>> s = jax.ShapeDtypeStruct((64, 32), jnp.float32)
  >>> program_flops(f, s, jax.ShapeDtypeStruct((32, 16), jnp.float32))
  65536.0
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "ASSUMED_COMPILE_S",
    "ASSUMED_EFFICIENCY",
    "ComputePlan",
    "PEAK_FLOPS",
    "Workload",
    "abstract",
    "device_peak",
    "make_plan",
    "measure_matmul_flops",
    "noncontrastive_costs",
    "ntk_flops",
    "program_flops",
    "ssl_costs",
]

# Dense peak FLOP/s per compute dtype, matched by a substring of ``jax.Device.device_kind`` (first match wins).
# H200 and H100 SXM are the same GH100 chip: 790 TFLOP/s is the bf16 matrix rate the device notes give for the H200
# (the datasheet says 989 dense); 60 TFLOP/s float32 is the non-tensor-core rate (67 on the datasheet). XLA may run
# float32 convolutions in TF32 on these chips (faster than the table says); the NTK's products use HIGHEST precision.
PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bfloat16": 790e12, "float32": 60e12}),
    ("H100", {"bfloat16": 790e12, "float32": 60e12}),
    ("A100", {"bfloat16": 312e12, "float32": 19.5e12}),
)

# Assumed achievable fraction of the peak for these networks' training steps. GPU: 25% for a ResNet-18 on 32x32 or
# 64x64 images at batch >= 256 in bf16 (small spatial sizes, GroupNorm and the elementwise work of the backward pass
# are memory-bound); an assumption until a GPU run measures it (results.json: plan vs train time). CPU: measured on
# the shared 2-core development machine (load 7-12): the ResNet-18 (width 1, 32x32, batch 256) step of
# DeepConfig.gpu took 92 s in bf16 and 87 s in float32, 16-17 GFLOP/s against 63 GFLOP/s timed for the bf16 matmul
# (26%); at batch 32, 6.0 s.
ASSUMED_EFFICIENCY: dict[str, float] = {"gpu": 0.25, "cpu": 0.25}

# Assumed compilation and host time per compiled program (the training step and the tracking function are two). On an
# accelerator XLA's autotuning of convolutions dominates (an assumption until measured). CPU: the ResNet-18 step of
# DeepConfig.gpu compiled in ~45 s on the loaded development machine (20 s at batch 32; an MLP's in ~1 s).
ASSUMED_COMPILE_S: dict[str, float] = {"gpu": 10.0, "cpu": 45.0}


def abstract(tree: Any) -> Any:
    """``tree`` with every array replaced by a ``jax.ShapeDtypeStruct`` of its shape and dtype."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), tree)


def program_flops(fn: Callable, *args: Any) -> float:
    """FLOPs of one call of the jitted function ``fn`` on ``args`` (arrays or ``jax.ShapeDtypeStruct``).

    From XLA's cost analysis of the lowered (not compiled) module, so it takes the time of a trace and nothing else.
    The module is lowered for the CPU whatever the default device: on a GPU the lowered module has no cost analysis,
    and the compiled one does not count convolutions (cuDNN custom calls; measured on an H200: 9.1 GFLOP for a
    ResNet-18 step of 1.5 TFLOP). The FLOPs of a program do not depend on where it runs. ``fn`` must therefore not
    pin its inputs or intermediates to another device (build it for ``jax.devices("cpu")``, as the ``*_costs``
    functions below do).

    Raises:
      ValueError: XLA's cost analysis reports no FLOPs for the program.
    """
    with jax.default_device(jax.devices("cpu")[0]):
        cost = fn.lower(*args).cost_analysis()
    flops = float((cost or {}).get("flops", float("nan")))
    if not math.isfinite(flops) or flops < 0:
        raise ValueError(f"XLA's cost analysis gave no FLOP count for this program ({cost!r})")
    return flops


@functools.cache
def measure_matmul_flops(device_kind: str, dtype: str, n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of an ``n x n`` matrix product in ``dtype`` on the default device: the best of ``repeats`` timings.

    ``device_kind`` only keys the cache (one measurement per process, device and dtype); about 0.1 s on a CPU.
    """
    a = jnp.ones((n, n), jnp.dtype(dtype))
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def device_peak(device_kind: str, platform: str, dtype: str) -> tuple[float, str]:
    """The peak FLOP/s assumed for a device and compute dtype, and where the number comes from.

    Known accelerators (:data:`PEAK_FLOPS`) from the table; a CPU (or an accelerator missing from the table, when it is
    the default device) by timing a 1024 x 1024 matrix product in ``dtype`` (:func:`measure_matmul_flops`).

    Raises:
      ValueError: an accelerator that is neither in the table nor the default device (nothing to time).
    """
    for key, peaks in PEAK_FLOPS:
        if key.lower() in device_kind.lower() and dtype in peaks:
            return peaks[dtype], f"{dtype}, {key} table"
    default = jax.devices()[0]
    if default.device_kind != device_kind:
        raise ValueError(f"no peak FLOP/s known for {device_kind!r} ({dtype}); known: "
                         f"{[k for k, _ in PEAK_FLOPS]}, or the default device {default.device_kind!r} (timed)")
    return measure_matmul_flops(device_kind, dtype), f"{dtype}, timed 1024^3 matmul on this {platform}"


@dataclasses.dataclass(frozen=True)
class Workload:
    """One compiled program that a run calls many times.

    Attributes:
      name: what it is (``train step``, ``tracking``, ``NTK``...).
      flops: FLOPs of one call (XLA's cost analysis, or a stated formula for the NTK).
      calls: how many times the run calls it (over all its runs).
      unit: what one call is (``step``, ``point``, ``kernel``), for the printed plan.
      per_run: calls per run, when the run repeats (seeds, methods): printed as ``per_run x runs``.
      dtype: its compute dtype when it differs from the plan's (e.g. ``float32`` for an NTK of a bf16-trained net).
    """

    name: str
    flops: float
    calls: int
    unit: str = "step"
    per_run: int | None = None
    dtype: str | None = None


def _si(x: float, unit: str) -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


@dataclasses.dataclass(frozen=True)
class ComputePlan:
    """What a run will compute and how long it is estimated to take on one device.

    Attributes:
      title: the run (experiment, network, data, batch, dtype).
      workloads: the programs and their call counts (the first one is the training step).
      dtype: compute dtype of the networks (``float32`` or ``bfloat16``); a workload may name its own.
      device_kind, platform: the device the estimate is for (``jax.Device.device_kind``, ``platform``).
      peaks, peak_sources: its peak FLOP/s per compute dtype used, and where each number comes from.
      efficiency: assumed achievable fraction of the peak (:data:`ASSUMED_EFFICIENCY`).
      programs: compiled programs (for the compile allowance).
      compile_s_per_program: assumed compile-and-host seconds per program (:data:`ASSUMED_COMPILE_S`).
    """

    title: str
    workloads: tuple[Workload, ...]
    dtype: str
    device_kind: str
    platform: str
    peaks: dict[str, float]
    peak_sources: dict[str, str]
    efficiency: float
    programs: int
    compile_s_per_program: float

    @property
    def step_flops(self) -> float:
        """FLOPs of one training step (the first workload)."""
        return self.workloads[0].flops

    @property
    def total_flops(self) -> float:
        return sum(w.flops * w.calls for w in self.workloads)

    @property
    def peak_flops(self) -> float:
        """The peak FLOP/s in the plan's own dtype."""
        return self.peaks[self.dtype]

    @property
    def compute_s(self) -> float:
        """Estimated compute time: each workload's FLOPs at ``efficiency`` x the peak of its dtype."""
        return sum(w.flops * w.calls / (self.efficiency * self.peaks[w.dtype or self.dtype]) for w in self.workloads)

    @property
    def overhead_s(self) -> float:
        return self.programs * self.compile_s_per_program

    @property
    def estimated_s(self) -> float:
        return self.compute_s + self.overhead_s

    def lines(self) -> list[str]:
        """The plan as lines of text: one per workload (FLOPs per call x calls), then the estimate."""
        out = [f"plan: {self.title}"]
        for w in self.workloads:
            runs = ""
            if w.per_run is not None and w.per_run != w.calls:
                runs = f" ({w.per_run} per run x {w.calls // w.per_run} runs)"
            own = "" if w.dtype is None or w.dtype == self.dtype else f", {w.dtype}"
            out.append(f"  {w.name}: {_si(w.flops, 'FLOP')} per {w.unit} x {w.calls} {w.unit}s{runs}"
                       f" = {_si(w.flops * w.calls, 'FLOP')}{own}")
        peaks = "; ".join(f"{_si(v, 'FLOP/s')} {self.peak_sources[k]}" for k, v in self.peaks.items())
        out.append(
            f"  estimated time on {self.device_kind}: {self.estimated_s:.0f} s = {self.compute_s:.1f} s compute "
            f"({_si(self.total_flops, 'FLOP')} at an assumed {self.efficiency:.0%} of the peak: {peaks}) "
            f"+ {self.overhead_s:.0f} s compile and host (assumed {self.compile_s_per_program:.0f} s x {self.programs} "
            f"programs)"
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"total_flops": self.total_flops, "compute_s": self.compute_s,
                                           "estimated_s": self.estimated_s}


def make_plan(title: str, workloads: Sequence[Workload], *, dtype: str, programs: int,
              device_kind: str | None = None, platform: str | None = None, efficiency: float | None = None,
              compile_s_per_program: float | None = None) -> ComputePlan:
    """A :class:`ComputePlan` for ``workloads`` on a device (default: ``jax.devices()[0]``).

    ``device_kind`` may name another device (e.g. ``"NVIDIA H200"``, with ``platform="gpu"``) to size a run for it
    from here. ``efficiency`` and ``compile_s_per_program`` default to the assumptions for the platform's class
    (:data:`ASSUMED_EFFICIENCY`, :data:`ASSUMED_COMPILE_S`: ``cpu``, or ``gpu`` for any accelerator).

    Raises:
      ValueError: no workloads, a non-positive FLOP count or call count, an unknown accelerator, or an efficiency
        outside (0, 1].
    """
    if not workloads:
        raise ValueError("a plan needs at least one workload")
    for w in workloads:
        if not (math.isfinite(w.flops) and w.flops > 0 and w.calls >= 1):
            raise ValueError(f"workload {w.name!r} has flops {w.flops} and calls {w.calls}; need flops > 0, calls >= 1")
    if device_kind is None:
        device = jax.devices()[0]
        device_kind, platform = device.device_kind, device.platform
    platform = platform or "gpu"
    kind = "cpu" if platform == "cpu" else "gpu"
    efficiency = ASSUMED_EFFICIENCY[kind] if efficiency is None else efficiency
    if not 0 < efficiency <= 1:
        raise ValueError(f"efficiency must be in (0, 1], got {efficiency}")
    peaks, sources = {}, {}
    for d in dict.fromkeys([dtype, *(w.dtype for w in workloads if w.dtype is not None)]):
        peaks[d], sources[d] = device_peak(device_kind, platform, d)
    return ComputePlan(
        title=title, workloads=tuple(workloads), dtype=dtype, device_kind=device_kind, platform=platform,
        peaks=peaks, peak_sources=sources, efficiency=efficiency, programs=programs,
        compile_s_per_program=ASSUMED_COMPILE_S[kind] if compile_s_per_program is None else compile_s_per_program,
    )


def _key_spec() -> jax.ShapeDtypeStruct:
    return jax.eval_shape(lambda: jax.random.key(0))


def ssl_costs(apply: Callable, features: Callable | None, params: Any, loss_fn: Callable, aug: Any, cfg: Any, *,
              image_shape: tuple[int, int, int], n_train: int, n_eval: int) -> tuple[float, float]:
    """FLOPs of one training step and of one tracking point of :func:`stepwise.training.train_ssl`.

    The very programs ``train_ssl`` compiles (its step and tracker builders), lowered for abstract inputs: a
    training set of ``n_train`` images of ``image_shape`` on the device, ``cfg.batch_size`` pairs per step, and
    ``n_eval`` evaluation views.

    Returns:
      ``(step_flops, tracking_flops)``.
    """
    from stepwise.training.engine import TrainState, make_optimizer, shardings
    from stepwise.training.ssl import make_tracker, make_train_step

    _, batch_sharding = shardings(jax.devices("cpu")[:1])  # counted on the CPU (program_flops)
    tx = make_optimizer(cfg)
    spec = abstract(params)
    state = TrainState(params=spec, opt_state=jax.eval_shape(tx.init, spec),
                       step=jax.ShapeDtypeStruct((), jnp.int32), key=_key_spec())
    data = jax.ShapeDtypeStruct((n_train, *image_shape), jnp.float32)
    step = program_flops(make_train_step(apply, loss_fn, tx, aug, cfg.batch_size, batch_sharding), state, data)
    views = jax.ShapeDtypeStruct((n_eval, *aug.output_shape(image_shape)), jnp.float32)
    track = program_flops(make_tracker(apply, features, loss_fn, cfg.n_snapshot), spec, views, views)
    return step, track


def noncontrastive_costs(apply: Callable, features: Callable | None, params: Any, aug: Any, cfg: Any, nc: Any, *,
                         image_shape: tuple[int, int, int], n_train: int, n_eval: int) -> tuple[float, float]:
    """FLOPs of one training step and one tracking point of :func:`stepwise.training.train_noncontrastive`
    (BYOL/SimSiam/DirectPred: online and target forward passes, the predictor, the EMA and any eigendecomposition).

    Returns:
      ``(step_flops, tracking_flops)``.
    """
    from stepwise.training.engine import shardings
    from stepwise.training.noncontrastive import compiled_programs, program_config

    _, batch_sharding = shardings(jax.devices("cpu")[:1])  # counted on the CPU (program_flops)
    features = apply if features is None else features
    spec = abstract(params)
    view_shape = aug.output_shape(image_shape)
    out = jax.eval_shape(apply, spec, jax.ShapeDtypeStruct((1, *view_shape), jnp.float32))
    program_cfg, program_nc = program_config(cfg, nc)
    init, step_fn, track = compiled_programs(apply, features, program_nc, program_cfg, aug, batch_sharding,
                                             out.shape[-1], out.dtype)
    state = jax.eval_shape(init, spec, _key_spec(), jax.ShapeDtypeStruct((), out.dtype))
    data = jax.ShapeDtypeStruct((n_train, *image_shape), jnp.float32)
    views = jax.ShapeDtypeStruct((n_eval, *view_shape), jnp.float32)
    return program_flops(step_fn, state, data), program_flops(track, state, views, views, views)


def ntk_flops(apply: Callable, params: Any, n: int, view_shape: tuple[int, int, int]) -> float:
    """FLOPs of an n x n empirical NTK (:func:`stepwise.ntk.empirical_ntk`), lower bound.

    ``2 n^2 P d`` for the contraction J J^T of the (n, d P) Jacobian (half of it for the symmetric kernel, the blocks
    under the diagonal being skipped) plus ``n`` per-example Jacobians at the cost XLA's analysis gives for one
    (``jacrev``: d vector-Jacobian products). Recomputing the column Jacobians for every row block, as the
    memory-bounded blocked computation does, adds up to ``n / block_rows`` times the Jacobian term.
    """
    spec = abstract(params)
    x = jax.ShapeDtypeStruct((1, *view_shape), jnp.float32)
    out_dim = jax.eval_shape(apply, spec, x).shape[-1]
    n_params = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(spec))
    jac = program_flops(jax.jit(jax.jacrev(lambda p, xi: apply(p, xi)[0])), spec, x)
    return float(n) * n * n_params * out_dim + n * jac
