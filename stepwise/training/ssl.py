"""Joint-embedding SSL training: one jitted step (sample, augment, forward both views, loss, update) and tracking.

The training step runs entirely on the device: the dataset lives on the device, each step draws its batch and
both augmented views from ``fold_in(run_key, step)`` (so a resumed or re-run step sees the same randomness), and
the state is donated. The batch axis is sharded over all devices with ``jax.sharding`` (data parallel);
parameters are replicated. After :func:`stepwise.training.distributed.initialize` the devices of several processes
(hosts) form one mesh and the same call trains across them (:mod:`stepwise.training.distributed`).

Every ``track_every`` steps a jitted tracking function evaluates a fixed evaluation set (one fixed pair of views of
fixed images) and records:

- eigenvalues of the embedding covariance (centred, 1/n) and of the symmetrised Barlow Twins cross-correlation
  C = (z1^T z2 + z2^T z1) / 2n, at the projector output and at the backbone output, sorted decreasing;
- the loss on the evaluation pairs;
- a snapshot of the evaluation embeddings (for PCA pictures and post-hoc linear probes).

Per-step training losses are kept on the device and fetched once per tracking interval, where they are also
checked for divergence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from stepwise.data.augment import Augmentation, make_pairs
from stepwise.errors import DivergenceError
from stepwise.training import distributed

__all__ = ["Checkpointing", "SSLRun", "TrainConfig", "TrainState", "TrainingInterrupted", "make_optimizer",
           "make_train_step", "train_ssl"]

ApplyFn = Callable[[Any, jax.Array], jax.Array]
LossFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and tracking settings.

    Attributes:
      steps: number of updates.
      batch_size: pairs per step (divisible by the number of devices).
      lr: learning rate.
      optimizer: ``sgd``, ``momentum`` (heavy ball, ``momentum``) or ``adam``. Plain SGD keeps the theory's time
        axis t = lr x step (theory note 7.2).
      momentum: momentum coefficient for ``momentum``.
      weight_decay: weight decay in the coupled (L2) form: ``weight_decay * param`` is added to the gradient before
        the optimizer (PyTorch's ``weight_decay``; 0 = none).
      track_every: steps between tracking points.
      n_snapshot: evaluation embeddings kept per tracking point (for PCA pictures and probes).
      checkpoint_every: steps between checkpoints (0 = only at the end when a run directory is given).
      seed: seeds the run key (batches, views).
    """

    steps: int
    batch_size: int
    lr: float
    optimizer: Literal["sgd", "momentum", "adam"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    track_every: int = 10
    n_snapshot: int = 256
    checkpoint_every: int = 0
    seed: int = 0

    def __post_init__(self):
        errors = []
        if self.steps < 1:
            errors.append(f"steps must be >= 1 (got {self.steps})")
        if self.batch_size < 2:
            errors.append(f"batch_size must be >= 2 (got {self.batch_size})")
        if not (math.isfinite(self.lr) and self.lr > 0):
            errors.append(f"the learning rate must be positive and finite (got {self.lr})")
        if self.optimizer not in ("sgd", "momentum", "adam"):
            errors.append(f"optimizer must be 'sgd', 'momentum' or 'adam' (got {self.optimizer!r})")
        if not 0 <= self.momentum < 1:
            errors.append(f"momentum must be in [0, 1) (got {self.momentum})")
        if self.weight_decay < 0:
            errors.append(f"weight_decay must be >= 0 (got {self.weight_decay})")
        if self.track_every < 1:
            errors.append(f"track_every must be >= 1 (got {self.track_every})")
        if self.checkpoint_every < 0:
            errors.append(f"checkpoint_every must be >= 0 (got {self.checkpoint_every})")
        if errors:
            raise ValueError("invalid training config: " + "; ".join(errors))


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """The optax transformation described by ``cfg``."""
    if cfg.optimizer == "sgd":
        tx = optax.sgd(cfg.lr)
    elif cfg.optimizer == "momentum":
        tx = optax.sgd(cfg.lr, momentum=cfg.momentum)
    else:
        tx = optax.adam(cfg.lr)
    if cfg.weight_decay:
        tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay), tx)
    return tx


@dataclasses.dataclass(frozen=True)
class Checkpointing:
    """Where a run's training loops checkpoint and how often (``stepwise run ... --checkpoint-every N --resume``).

    Attributes:
      folder: the folder the checkpoints go to (the CLI's staging folder of the run).
      every: steps between checkpoints (saved at the first tracking point at or after each multiple); 0 = every
        ``seconds`` of training wall time instead.
      seconds: wall-time interval used when ``every`` is 0.
      resume: continue each training loop from its checkpoint where one exists.
    """

    folder: Path
    every: int = 0
    seconds: float = 180.0
    resume: bool = False

    def __post_init__(self):
        if self.every < 0 or not self.seconds > 0:
            raise ValueError(f"checkpoint interval must be >= 0 steps and > 0 s (got {self.every}, {self.seconds})")

    def kwargs(self, name: str = "") -> dict[str, Any]:
        """Keyword arguments of :func:`train_ssl` / ``train_noncontrastive`` for the training loop ``name`` (one
        checkpoint file per loop: ``checkpoint.msgpack`` or ``checkpoint-<name>.msgpack``)."""
        return {"checkpoint": self.folder / (f"checkpoint-{name}.msgpack" if name else "checkpoint.msgpack"),
                "resume": self.resume, "checkpoint_every": self.every,
                "checkpoint_seconds": 0.0 if self.every else self.seconds}


def checkpoint_kwargs(checkpoints: Checkpointing | None, name: str = "") -> dict[str, Any]:
    """``checkpoints.kwargs(name)``, or no keyword arguments (no checkpoints) when ``checkpoints`` is None."""
    return {} if checkpoints is None else checkpoints.kwargs(name)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during training: the loop finished its tracking interval and saved a checkpoint first."""

    def __init__(self, step: int, checkpoint: Path):
        self.step, self.checkpoint = step, checkpoint
        super().__init__(f"interrupted at step {step}; checkpoint saved to {checkpoint}")


@contextlib.contextmanager
def _deferred_interrupt(enabled: bool):
    """While active, the first SIGINT only sets ``flag["requested"]`` (the loop saves a checkpoint and stops at its
    next tracking point); a second one raises KeyboardInterrupt at once. Only in the main thread of a single process
    (signal handlers are per process; every process of a multi-host run would have to agree on the step)."""
    flag = {"requested": False}
    if not enabled or threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        flag["requested"] = True
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C aborts without a checkpoint
        print("\nstepwise: interrupt: saving a checkpoint at the next tracking point (Ctrl-C again aborts without "
              "saving)", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a step changes: parameters, optimizer state, step counter and the run's base key."""

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


@dataclasses.dataclass(frozen=True)
class SSLRun:
    """A finished (or resumed and finished) run.

    Attributes:
      step: (T,) steps of the tracking points (0, track_every, ..., steps).
      cov_out, bt_out: (T, d_out) eigenvalues of the embedding covariance / symmetrised cross-correlation at the
        projector output, sorted decreasing.
      cov_feat, bt_feat: (T, d_feat) the same at the backbone output.
      eval_loss: (T,) loss on the evaluation pairs.
      snapshots: (T, n_snapshot, d_out) evaluation embeddings (first view).
      train_loss: (steps,) loss of every training step (before its update).
      params: final parameters.
      train_time_s: wall time of the training loop, tracking included; tracking_time_s: of which tracking.
    """

    step: np.ndarray
    cov_out: np.ndarray
    bt_out: np.ndarray
    cov_feat: np.ndarray
    bt_feat: np.ndarray
    eval_loss: np.ndarray
    snapshots: np.ndarray
    train_loss: np.ndarray
    params: Any
    train_time_s: float
    tracking_time_s: float

    @property
    def tracking_fraction(self) -> float:
        return self.tracking_time_s / max(self.train_time_s, 1e-12)


def _covariance(z: jax.Array) -> jax.Array:
    zc = z - jnp.mean(z, axis=0, keepdims=True)
    return zc.T @ zc / z.shape[0]


def _cross_correlation(a: jax.Array, b: jax.Array) -> jax.Array:
    c = a.T @ b / a.shape[0]
    return 0.5 * (c + c.T)


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # inspecting the loaded libraries costs ~1 ms: do it once per process


def _eig_desc(matrices: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # On the host in float64 (XLA's CPU eigensolver takes ~0.5 s for 256 x 256, LAPACK ~4 ms), with one BLAS
    # thread: multi-threaded OpenBLAS right after XLA work contends with XLA's spinning thread pool (~100x slower).
    with _blas_controller().limit(limits=1, user_api="blas"):
        return {k: np.linalg.eigvalsh(np.asarray(m, dtype=np.float64))[::-1].copy() for k, m in matrices.items()}


_MATRICES = ("cov_out", "bt_out", "cov_feat", "bt_feat")


def _spectra_matrices(z1: jax.Array, z2: jax.Array, f1: jax.Array, f2: jax.Array) -> dict[str, jax.Array]:
    """The four d x d matrices whose eigenvalues are tracked (keys :data:`_MATRICES`)."""
    return {"cov_out": _covariance(z1), "bt_out": _cross_correlation(z1, z2), "cov_feat": _covariance(f1),
            "bt_feat": _cross_correlation(f1, f2)}


def _with_eigenvalues(out: dict) -> dict[str, np.ndarray]:
    """Host arrays of a tracking point, with each of :data:`_MATRICES` replaced by its eigenvalues (descending)."""
    out = {k: np.asarray(v) for k, v in out.items()}
    return out | _eig_desc({k: out[k] for k in _MATRICES})


def _tracker(apply: ApplyFn, features: ApplyFn | None, loss_fn: LossFn, n_snapshot: int):
    """Jitted: the four d x d matrices whose eigenvalues are tracked, the loss and a snapshot."""

    @jax.jit
    def track(params, x1, x2):
        z1, z2 = apply(params, x1), apply(params, x2)
        f1, f2 = (z1, z2) if features is None else (features(params, x1), features(params, x2))
        return _spectra_matrices(z1, z2, f1, f2) | {"eval_loss": loss_fn(z1, z2), "snapshots": z1[:n_snapshot]}

    return track


def _views(state, data: jax.Array, aug: Augmentation, batch_size: int, batch_sharding) -> tuple[jax.Array, jax.Array]:
    """The step's batch and its two views, drawn from ``fold_in(state.key, state.step)`` (inside the jitted step)."""
    key = jax.random.fold_in(state.key, state.step)
    k_idx, k_aug = jax.random.split(key)
    if batch_size == data.shape[0]:
        batch = data
    else:
        idx = jax.random.choice(k_idx, data.shape[0], (batch_size,), replace=False)
        batch = data[idx]
    batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    return make_pairs(aug, k_aug, batch)


def make_train_step(apply: ApplyFn, loss_fn: LossFn, tx, aug: Augmentation, batch_size: int, batch_sharding):
    """The jitted training step of :func:`train_ssl`: ``step(state, data) -> (state, loss)``.

    Draws ``batch_size`` rows of the on-device ``data`` without replacement (all of them when ``batch_size`` is its
    length) and their two views from ``fold_in(state.key, state.step)``, forwards both, takes ``loss_fn(z1, z2)``
    and its gradient and applies the optax transformation ``tx``; the state (a :class:`TrainState`) is donated.
    ``batch_sharding`` places the batch (e.g. ``NamedSharding(mesh, P("data"))``).
    """

    def step(state: TrainState, data: jax.Array):
        v1, v2 = _views(state, data, aug, batch_size, batch_sharding)

        def loss_of(params):
            return loss_fn(apply(params, v1), apply(params, v2))

        loss, grads = jax.value_and_grad(loss_of)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return dataclasses.replace(state, params=params, opt_state=opt_state, step=state.step + 1), loss

    return jax.jit(step, donate_argnums=0)


_make_step = make_train_step  # the former private name (stepwise.scale, tests/test_training_ssl.py)


def _state_tree(state) -> dict:
    """A train-state dataclass (``TrainState`` or another engine's) as a dict of its fields, the key as raw data."""
    tree = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return tree | {"key": jax.random.key_data(state.key)}


# Fields of TrainConfig a checkpoint may be resumed with a different value of: the run length (extending or
# shortening it down to the checkpoint's step gives the uninterrupted run of that length) and the interval itself.
_RESUMABLE_FIELDS = ("steps", "checkpoint_every")


def _save_checkpoint(path: Path, state, history: dict[str, list], train_loss: list[np.ndarray], cfg: TrainConfig):
    """Leaves of the state (any pytree: dicts, nnx.State, optax states), the tracked history and the training config
    (to refuse a resume with another one), atomically.

    Across processes every process calls this (the state is read collectively) and only process 0 writes."""
    from flax import serialization

    from stepwise.io import atomic_path

    tree = distributed.fetch(_state_tree(state))
    leaves = jax.tree.leaves(tree)
    if not distributed.is_main_process():
        return
    payload = {
        "config": json.dumps(dataclasses.asdict(cfg), sort_keys=True),
        "step": int(np.asarray(tree["step"])),
        "leaves": {str(i): np.asarray(leaf) for i, leaf in enumerate(leaves)},
        "history": {k: np.asarray(v) for k, v in history.items()},
        "train_loss": np.concatenate(train_loss) if train_loss else np.zeros((0,)),
    }
    with atomic_path(path) as tmp:
        tmp.write_bytes(serialization.msgpack_serialize(payload))


def _config_differences(saved: dict, now: dict, allowed: tuple[str, ...] = ()) -> list[str]:
    """``name: saved -> now`` for every field that differs (fields in ``allowed`` excepted)."""
    names = [k for k in sorted(set(saved) | set(now)) if k not in allowed and saved.get(k) != now.get(k)]
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in names]


def _load_checkpoint(path: Path, template, raw: bytes | None = None, cfg: TrainConfig | None = None):
    """Restore into the structure of ``template`` (the freshly initialised state of the same run) from ``path``, or
    from ``raw``, its bytes (as process 0 read them).

    Raises:
      ValueError: the checkpoint was written with another training config than ``cfg`` (other than its step count),
        or is past ``cfg.steps``, or does not fit the state.
    """
    from flax import serialization

    payload = serialization.msgpack_restore(path.read_bytes() if raw is None else raw)
    if cfg is not None and "config" in payload:  # checkpoints written before the config was stored have none
        saved = json.loads(payload["config"])
        diff = _config_differences(saved, json.loads(json.dumps(dataclasses.asdict(cfg))), _RESUMABLE_FIELDS)
        if diff:
            raise ValueError(f"checkpoint {path} was written with a different training config ({'; '.join(diff)}); "
                             "only the number of steps may change when resuming")
    treedef = jax.tree.structure(_state_tree(template))
    leaves = [payload["leaves"][str(i)] for i in range(len(payload["leaves"]))]
    if len(leaves) != treedef.num_leaves:
        raise ValueError(f"checkpoint {path} holds {len(leaves)} arrays; this run's state has {treedef.num_leaves}")
    restored = jax.tree.unflatten(treedef, [jnp.asarray(x) for x in leaves])
    state = type(template)(**(restored | {"key": jax.random.wrap_key_data(restored["key"])}))
    if cfg is not None and int(state.step) > cfg.steps:
        raise ValueError(f"checkpoint {path} is at step {int(state.step)}, past this run's steps = {cfg.steps}; "
                         f"resume with steps >= {int(state.step)} (or start afresh)")
    history = {k: list(np.asarray(v)) for k, v in payload["history"].items()}
    return state, history, [np.asarray(payload["train_loss"])]


def _check_inputs(images, eval_images, aug: Augmentation, cfg: TrainConfig, devices: list) -> tuple[np.ndarray, np.ndarray]:
    """Shapes, batch size against images and devices, and the augmentation's fit, before any compute."""
    images = np.asarray(images)
    eval_images = np.asarray(eval_images)
    if images.ndim != 4 or eval_images.ndim != 4 or images.shape[1:] != eval_images.shape[1:]:
        raise ValueError(f"images must be (N, H, W, C) with equal shapes; got {images.shape} and {eval_images.shape}")
    if cfg.batch_size > images.shape[0]:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the {images.shape[0]} training images")
    if cfg.batch_size % len(devices):
        raise ValueError(
            f"batch_size {cfg.batch_size} is not divisible by the {len(devices)} devices it is split over; "
            f"use a multiple of {len(devices)}"
        )
    aug.output_shape(images.shape[1:])  # raises if the augmentation does not fit the images
    return images, eval_images


def _shardings(devices: list) -> tuple[NamedSharding, NamedSharding]:
    """(replicated, batch-sharded) placements over a 1-D ``data`` mesh of ``devices``."""
    mesh = Mesh(np.array(devices), ("data",))
    return NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))


def eval_key(seed: int) -> jax.Array:
    """The key of the fixed evaluation views :func:`train_ssl` tracks (``make_pairs(aug, eval_key(seed), images)``),
    independent of every training step's key."""
    return jax.random.fold_in(jax.random.key(seed), 2**31 - 1)


def _eval_views(aug: Augmentation, seed: int, eval_images: np.ndarray, replicated,
                pairs: Callable = make_pairs) -> tuple[jax.Array, jax.Array]:
    """The fixed pair of views of the evaluation images, independent of the training keys (``pairs``: how
    :func:`make_pairs` is called, eagerly by default)."""
    e1, e2 = pairs(aug, eval_key(seed), jnp.asarray(eval_images))
    if jax.process_count() > 1:
        return distributed.put_global((e1, e2), replicated, what="the evaluation views")
    return jax.device_put(e1, replicated), jax.device_put(e2, replicated)


@dataclasses.dataclass(frozen=True)
class _Fit:
    """What the host loop returns: the final state, the tracked history and the timings."""

    state: Any
    history: dict[str, list]
    train_loss: np.ndarray
    train_time_s: float
    tracking_time_s: float


def _fit(
    step_fn: Callable,
    state,
    data: jax.Array,
    track: Callable,
    cfg: TrainConfig,
    *,
    replicated,
    checkpoint: str | Path | None,
    resume: bool,
    progress: bool,
    rank_threshold: float,
    desc: str,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float = 0.0,
) -> _Fit:
    """The host loop shared by the SSL engines: steps, tracking, divergence, progress and checkpoints.

    Args:
      step_fn: jitted ``(state, data) -> (state, loss)`` donating its state.
      state: the freshly initialised state (a dataclass with ``step`` and ``key`` fields); also the template a
        checkpoint is restored into.
      track: ``state -> dict`` of device arrays for one tracking point; each of :data:`_MATRICES` in it is replaced
        by its eigenvalues (descending, float64, on the host).
      checkpoint_every: steps between checkpoints (None: ``cfg.checkpoint_every``); checkpoint_seconds: also
        checkpoint when this much wall time passed since the last one (0 = never). Checkpoints are written at the
        first tracking point at or after each interval, and at the end.

    Raises:
      TrainingInterrupted: Ctrl-C while checkpointing (after the checkpoint of the current tracking point is saved).
    """
    from tqdm.auto import tqdm

    history: dict[str, list] = {}
    train_loss: list[np.ndarray] = []
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if jax.process_count() > 1:  # process 0's checkpoint, broadcast; identical start on every process
        raw = distributed.broadcast_file(ckpt) if resume and ckpt is not None else None
        if raw is not None:
            state, history, train_loss = _load_checkpoint(ckpt, state, raw, cfg)
        state = distributed.put_global(state, replicated, what="the initial (or resumed) training states")
    else:
        if resume and ckpt is not None and ckpt.is_file():
            state, history, train_loss = _load_checkpoint(ckpt, state, cfg=cfg)
        state = jax.device_put(state, replicated)

    start = int(state.step)
    jax.block_until_ready(track(state))  # compile outside the timed tracking
    track_time = 0.0
    t0 = time.perf_counter()

    def record(state, step):
        nonlocal track_time
        t = time.perf_counter()
        raw = distributed.fetch(track(state))
        for name in _MATRICES:  # the training loss can still be finite while the embeddings overflow
            if not np.all(np.isfinite(raw[name])):
                raise DivergenceError(
                    step=step, quantity=f"tracked {name} on the evaluation views", value=float("nan"),
                    hint=f"lower the learning rate (now {cfg.lr:g}) or the initial scale",
                )
        out = _with_eigenvalues(raw)
        track_time += time.perf_counter() - t
        history.setdefault("step", []).append(step)
        for k, v in out.items():
            history.setdefault(k, []).append(v)
        return out

    if start == 0 and not history.get("step"):
        record(state, 0)
    show = progress and distributed.is_main_process()
    every = cfg.checkpoint_every if checkpoint_every is None else checkpoint_every
    saved_step, saved_time = start, time.perf_counter()
    with (tqdm(total=cfg.steps, initial=start, desc=desc, unit="step", disable=not show) as bar,
          _deferred_interrupt(ckpt is not None) as interrupt):
        step = start
        while step < cfg.steps:
            n = min(cfg.track_every - step % cfg.track_every, cfg.steps - step)
            losses = []
            for _ in range(n):
                state, loss = step_fn(state, data)
                losses.append(loss)
            block = np.asarray(distributed.fetch(jnp.stack(losses)))
            bad = np.flatnonzero(~np.isfinite(block))
            if bad.size:
                raise DivergenceError(
                    step=step + int(bad[0]), quantity="training loss", value=float(block[bad[0]]),
                    hint=f"lower the learning rate (now {cfg.lr:g}) or the initial scale",
                )
            train_loss.append(block)
            step += n
            out = record(state, step)
            cov = out["cov_out"]
            rank = int(np.sum(cov > rank_threshold * max(float(cov[0]), 1e-30)))
            bar.set_postfix(loss=f"{float(block[-1]):.4g}", rank=rank)
            bar.update(n)
            due = (every and step // every > saved_step // every) or (
                checkpoint_seconds and time.perf_counter() - saved_time >= checkpoint_seconds)
            if ckpt is not None and step < cfg.steps and (due or interrupt["requested"]):
                _save_checkpoint(ckpt, state, history, train_loss, cfg)
                saved_step, saved_time = step, time.perf_counter()
                if interrupt["requested"]:
                    raise TrainingInterrupted(step, ckpt)
    jax.block_until_ready(state)
    train_time = time.perf_counter() - t0
    if ckpt is not None:
        _save_checkpoint(ckpt, state, history, train_loss, cfg)
        if interrupt["requested"]:
            raise TrainingInterrupted(step, ckpt)
    return _Fit(state=state, history=history,
                train_loss=np.concatenate(train_loss) if train_loss else np.zeros((0,)),
                train_time_s=train_time, tracking_time_s=track_time)


def _stacked(fit: _Fit, extra: tuple[str, ...]) -> dict[str, Any]:
    """The run fields every engine shares (steps, spectra, losses, timings) plus ``extra`` tracked arrays, stacked
    over the tracking points."""
    h = fit.history
    return {
        "step": np.asarray(h["step"], dtype=np.int64),
        **{k: np.stack(h[k]) for k in (*_MATRICES, *extra)},
        "eval_loss": np.asarray(h["eval_loss"]),
        "train_loss": fit.train_loss,
        "train_time_s": fit.train_time_s,
        "tracking_time_s": fit.tracking_time_s,
    }


def train_ssl(
    apply: ApplyFn,
    features: ApplyFn | None,
    params: Any,
    loss_fn: LossFn,
    images: np.ndarray,
    aug: Augmentation,
    cfg: TrainConfig,
    *,
    eval_images: np.ndarray,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    devices: list | None = None,
    rank_threshold: float = 0.1,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float = 0.0,
) -> SSLRun:
    """Train ``params`` with ``loss_fn`` on augmented pairs of ``images`` and track the spectra.

    Args:
      apply: (params, x) -> (n, d_out) embeddings (projector output).
      features: (params, x) -> (n, d_feat) backbone output, or None when it is ``apply`` itself (no projector;
        tracking then runs one forward pass per view instead of two).
      params: initial parameters (a pytree).
      loss_fn: (z1, z2) -> scalar.
      images: (N, H, W, C) training images (moved to the device once).
      aug: the augmentation producing each view.
      cfg: optimisation and tracking settings.
      eval_images: (n_eval, H, W, C) fixed evaluation images; one fixed pair of views of them is tracked.
      checkpoint: file to checkpoint to (every ``cfg.checkpoint_every`` steps and at the end). While training with
        a checkpoint, Ctrl-C saves one at the next tracking point and raises :class:`TrainingInterrupted`.
      resume: continue from ``checkpoint`` if it exists; the result equals an uninterrupted run. A checkpoint written
        with another training config (any field but ``steps``), or past ``cfg.steps``, is refused (ValueError).
      progress: show a progress bar with the loss and the current rank.
      devices: devices for data parallelism (default: ``jax.devices()``: all local devices, or those of every
        process after :func:`stepwise.training.distributed.initialize`).
      rank_threshold: the progress bar's rank counts covariance eigenvalues above this fraction of the largest.
      checkpoint_every: steps between checkpoints, overriding ``cfg.checkpoint_every`` (:class:`Checkpointing`).
      checkpoint_seconds: also checkpoint after this much training wall time since the last checkpoint (0 = never).

    Raises:
      ValueError: bad shapes or sizes (before any compute); a checkpoint that does not belong to this run.
      DivergenceError: a training loss became NaN/inf (with the step and what to try).
    """
    devices = list(jax.devices()) if devices is None else list(devices)
    images, eval_images = _check_inputs(images, eval_images, aug, cfg, devices)
    replicated, batch_sharding = _shardings(devices)
    tx = make_optimizer(cfg)
    step_fn = make_train_step(apply, loss_fn, tx, aug, cfg.batch_size, batch_sharding)
    track = _tracker(apply, features, loss_fn, cfg.n_snapshot)

    params = jax.tree.map(jnp.copy, params)  # the step donates its state; never delete the caller's arrays
    state = TrainState(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32),
                       key=jax.random.key(cfg.seed))
    data = distributed.put_global(jnp.asarray(images), replicated, what="the training images")
    e1, e2 = _eval_views(aug, cfg.seed, eval_images, replicated)
    fit = _fit(step_fn, state, data, lambda s: track(s.params, e1, e2), cfg, replicated=replicated,
               checkpoint=checkpoint, resume=resume, progress=progress, rank_threshold=rank_threshold,
               desc="SSL training", checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds)
    return SSLRun(**_stacked(fit, ("snapshots",)), params=distributed.fetch(fit.state.params))


# ----------------------------------------------------------------------------------------------------------------
# Training with state beside the parameters (BatchNorm statistics, RNG streams): an additive path; train_ssl above
# is unchanged.


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StatefulTrainState:
    """:class:`TrainState` plus ``model_state``: non-differentiated state a forward pass updates (BatchNorm running
    statistics, RNG stream counters), carried from step to step inside the jitted step and checkpointed with it.
    Its leaves must be plain arrays (no typed PRNG keys: keep constant keys out of it, closed over)."""

    params: Any
    model_state: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


def _make_stateful_step(apply_train: StatefulApplyFn, loss_fn: LossFn, tx, aug: Augmentation, batch_size: int,
                        batch_sharding):
    """One jitted, donated step: each view is its own forward pass in training mode (batch statistics of that
    view's batch, as two ``model(x)`` calls in PyTorch/Flax SSL code do), the state threaded view 1 -> view 2."""

    def step(state: StatefulTrainState, data: jax.Array):
        v1, v2 = _views(state, data, aug, batch_size, batch_sharding)

        def loss_of(params):
            z1, s1 = apply_train(params, state.model_state, v1)
            z2, s2 = apply_train(params, s1, v2)
            return loss_fn(z1, z2), s2

        (loss, model_state), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return dataclasses.replace(state, params=params, model_state=jax.lax.stop_gradient(model_state),
                                   opt_state=opt_state, step=state.step + 1), loss

    return jax.jit(step, donate_argnums=0)


def _stateful_tracker(apply_eval: StateApplyFn, loss_fn: LossFn, n_snapshot: int):
    """Jitted: the tracked matrices, loss and snapshot of ``apply_eval(params, model_state, .)`` (no projector
    split: the backbone spectra equal the output ones)."""

    @jax.jit
    def track(params, model_state, x1, x2):
        z1, z2 = apply_eval(params, model_state, x1), apply_eval(params, model_state, x2)
        return _spectra_matrices(z1, z2, z1, z2) | {"eval_loss": loss_fn(z1, z2), "snapshots": z1[:n_snapshot]}

    return track


def train_ssl_stateful(
    apply_train: StatefulApplyFn,
    apply_eval: StateApplyFn,
    params: Any,
    model_state: Any,
    loss_fn: LossFn,
    images: np.ndarray,
    aug: Augmentation,
    cfg: TrainConfig,
    *,
    eval_images: np.ndarray,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    devices: list | None = None,
    rank_threshold: float = 0.1,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float = 0.0,
) -> tuple[SSLRun, Any]:
    """:func:`train_ssl` for a network with training-time state (BatchNorm, dropout).

    Training differentiates ``apply_train`` (e.g. the module in training mode: batch statistics, dropout on) and
    carries the state it returns; tracking evaluates ``apply_eval`` (e.g. the module in evaluation mode) at the
    current parameters and state. Data, views, keys, tracking points, checkpoints and divergence checks are those of
    :func:`train_ssl`.

    Args:
      apply_train: (params, model_state, x: (n, ...)) -> ((n, d), model_state'); ``model_state'`` is not
        differentiated (its gradient is stopped).
      apply_eval: (params, model_state, x) -> (n, d): the tracked function.
      params: initial parameters (differentiated).
      model_state: initial state; leaves are plain arrays (checkpointed as such).
      loss_fn, images, aug, cfg, eval_images, checkpoint, resume, progress, devices, rank_threshold,
        checkpoint_every, checkpoint_seconds: as for :func:`train_ssl`.

    Returns:
      (run, model_state): the :class:`SSLRun` (``cov_feat``/``bt_feat`` equal ``cov_out``/``bt_out``) and the final
      state.

    Raises:
      ValueError, DivergenceError: as :func:`train_ssl`.
    """
    devices = list(jax.devices()) if devices is None else list(devices)
    images, eval_images = _check_inputs(images, eval_images, aug, cfg, devices)
    replicated, batch_sharding = _shardings(devices)
    tx = make_optimizer(cfg)
    step_fn = _make_stateful_step(apply_train, loss_fn, tx, aug, cfg.batch_size, batch_sharding)
    track = _stateful_tracker(apply_eval, loss_fn, cfg.n_snapshot)

    params = jax.tree.map(jnp.copy, params)  # donated by the step: never delete the caller's arrays
    model_state = jax.tree.map(jnp.copy, model_state)
    state = StatefulTrainState(params=params, model_state=model_state, opt_state=tx.init(params),
                               step=jnp.zeros((), jnp.int32), key=jax.random.key(cfg.seed))
    data = distributed.put_global(jnp.asarray(images), replicated, what="the training images")
    e1, e2 = _eval_views(aug, cfg.seed, eval_images, replicated)
    fit = _fit(step_fn, state, data, lambda s: track(s.params, s.model_state, e1, e2), cfg, replicated=replicated,
               checkpoint=checkpoint, resume=resume, progress=progress, rank_threshold=rank_threshold,
               desc="SSL training", checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds)
    final = distributed.fetch((fit.state.params, fit.state.model_state))
    return SSLRun(**_stacked(fit, ("snapshots",)), params=final[0]), final[1]
