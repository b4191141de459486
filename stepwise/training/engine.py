"""The training engine shared by every SSL training loop of networks on images (joint-embedding and BYOL/SimSiam).

What a loop of :mod:`stepwise.training.ssl` or :mod:`stepwise.training.noncontrastive` brings is its state, its
jitted step and its tracking function; everything else is here, once:

- the optimisation settings (:class:`TrainConfig`, :func:`make_optimizer`) and the input checks
  (:func:`check_inputs`, before any compute);
- placement: a 1-D ``data`` mesh over the devices, the batch axis sharded and everything else replicated
  (:func:`shardings`); after :func:`stepwise.training.distributed.initialize` the devices of several processes form
  one mesh;
- the step's randomness: its batch and two augmented views drawn from ``fold_in(run_key, step)`` inside the jitted
  step (:func:`sample_views`), so a resumed or re-run step sees the same randomness; one fixed pair of evaluation
  views from :func:`eval_key` (:func:`eval_views`);
- tracking: the four d x d matrices whose eigenvalues are recorded (:data:`TRACKED`, :func:`spectra_matrices`),
  their eigenvalues on the host in float64;
- the host loop (:func:`fit`): steps in blocks of ``track_every``, per-step losses fetched once per block and checked
  for divergence, tracking points, the progress bar, checkpoints (every N steps or seconds, at the end, on Ctrl-C)
  and resume, bit for bit the uninterrupted run; :func:`train_on_views` is that loop with the data and evaluation
  views placed.

Example (a linear embedding trained for two steps; the tracked spectra at steps 0 and 2):
  >>> import jax, jax.numpy as jnp, numpy as np
  >>> from stepwise.data import Augmentation
  >>> from stepwise.training import engine, ssl
  >>> images = np.random.default_rng(0).uniform(size=(12, 4, 4, 1)).astype(np.float32)
  >>> apply = lambda w, x: x.reshape(x.shape[0], -1) @ w
  >>> loss = lambda z1, z2: jnp.mean((z1 - z2) ** 2) - jnp.mean(z1 * z2)
  >>> cfg = engine.TrainConfig(steps=2, batch_size=4, lr=0.01, track_every=2, n_snapshot=2)
  >>> run = ssl.train_ssl(apply, None, jnp.eye(16, 3, dtype=jnp.float32), loss, images[:8], Augmentation(), cfg,
  ...                     eval_images=images[8:], devices=jax.devices()[:1])
  >>> run.step.tolist(), run.cov_out.shape
  ([0, 2], (2, 3))
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypedDict

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from stepwise.data.augment import Augmentation, make_pairs
from stepwise._validate import bound_errors, config_value_errors, raise_config_errors
from stepwise.errors import DivergenceError
from stepwise.training import distributed

__all__ = [
    "TRACKED",
    "Checkpointing",
    "Fit",
    "LoopOptions",
    "TrainConfig",
    "TrainState",
    "TrainingInterrupted",
    "check_inputs",
    "checkpoint_kwargs",
    "eval_key",
    "eval_views",
    "fit",
    "make_optimizer",
    "run_arrays",
    "sample_views",
    "shardings",
    "spectra_matrices",
    "train_on_views",
]


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
        errors = config_value_errors(self) + bound_errors(  # config_value_errors: nan / inf, a seed outside [0, 2**32)
            self, ("steps", ">= 1"), ("batch_size", ">= 2"), ("lr", "> 0", " (the learning rate)"))
        if self.optimizer not in ("sgd", "momentum", "adam"):
            errors.append(f"optimizer must be 'sgd', 'momentum' or 'adam' (got {self.optimizer!r})")
        errors += bound_errors(self, ("momentum", "in [0, 1)"), ("weight_decay", ">= 0"), ("track_every", ">= 1"),
                               ("checkpoint_every", ">= 0"))
        raise_config_errors(errors, "training")


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


# ----------------------------------------------------------------------------------------------------------------
# Tracking: the spectra every loop records.


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


# The tracked d x d matrices: embedding covariance (centred, 1/n) and symmetrised cross-correlation
# (z1^T z2 + z2^T z1) / 2n, at the output (``_out``) and at the backbone (``_feat``).
TRACKED = ("cov_out", "bt_out", "cov_feat", "bt_feat")


def spectra_matrices(z1: jax.Array, z2: jax.Array, f1: jax.Array, f2: jax.Array) -> dict[str, jax.Array]:
    """The four d x d matrices whose eigenvalues are tracked (keys :data:`TRACKED`)."""
    return {"cov_out": _covariance(z1), "bt_out": _cross_correlation(z1, z2), "cov_feat": _covariance(f1),
            "bt_feat": _cross_correlation(f1, f2)}


def _with_eigenvalues(out: dict) -> dict[str, np.ndarray]:
    """Host arrays of a tracking point, with each of :data:`TRACKED` replaced by its eigenvalues (descending)."""
    out = {k: np.asarray(v) for k, v in out.items()}
    return out | _eig_desc({k: out[k] for k in TRACKED})


# ----------------------------------------------------------------------------------------------------------------
# Data: the step's views, placement, the evaluation views and the input checks.


def sample_views(state, data: jax.Array, aug: Augmentation, batch_size: int,
                 batch_sharding) -> tuple[jax.Array, jax.Array]:
    """The step's batch and its two views, drawn from ``fold_in(state.key, state.step)`` (inside the jitted step).

    Args:
      state: the train state (any dataclass with ``key``, the run's base key, and ``step``).
      data: (N, H, W, C) the training images on the device.
      aug: the augmentation producing each view.
      batch_size: rows drawn without replacement (all of ``data``, in order, when it is N).
      batch_sharding: the batch's placement (:func:`shardings`).

    Returns:
      (v1, v2): the two views, each (batch_size, h, w, c).
    """
    key = jax.random.fold_in(state.key, state.step)
    k_idx, k_aug = jax.random.split(key)
    if batch_size == data.shape[0]:
        batch = data
    else:
        idx = jax.random.choice(k_idx, data.shape[0], (batch_size,), replace=False)
        batch = data[idx]
    batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    return make_pairs(aug, k_aug, batch)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints.


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


def check_inputs(images, eval_images, aug: Augmentation, cfg: TrainConfig,
                 devices: list) -> tuple[np.ndarray, np.ndarray]:
    """Shapes, batch size against images and devices, and the augmentation's fit, before any compute.

    Returns:
      ``(images, eval_images)`` as NumPy arrays.

    Raises:
      ValueError: images not (N, H, W, C) of equal shapes, a batch larger than the training set or not divisible by
        the number of devices, or an augmentation that does not fit the images.
    """
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


def shardings(devices: list) -> tuple[NamedSharding, NamedSharding]:
    """(replicated, batch-sharded) placements over a 1-D ``data`` mesh of ``devices``."""
    mesh = Mesh(np.array(devices), ("data",))
    return NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))


def eval_key(seed: int) -> jax.Array:
    """The key of the fixed evaluation views the training loops track (``make_pairs(aug, eval_key(seed), images)``),
    independent of every training step's key."""
    return jax.random.fold_in(jax.random.key(seed), 2**31 - 1)


def eval_views(aug: Augmentation, seed: int, eval_images: np.ndarray, replicated,
               pairs: Callable = make_pairs) -> tuple[jax.Array, jax.Array]:
    """The fixed pair of views of the evaluation images, independent of the training keys (``pairs``: how
    :func:`make_pairs` is called, eagerly by default)."""
    e1, e2 = pairs(aug, eval_key(seed), jnp.asarray(eval_images))
    if jax.process_count() > 1:
        return distributed.put_global((e1, e2), replicated, what="the evaluation views")
    return jax.device_put(e1, replicated), jax.device_put(e2, replicated)


# ----------------------------------------------------------------------------------------------------------------
# The host loop.


@dataclasses.dataclass(frozen=True)
class Fit:
    """What the host loop returns: the final state, the tracked history and the timings."""

    state: Any
    history: dict[str, list]
    train_loss: np.ndarray
    train_time_s: float
    tracking_time_s: float


def fit(
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
) -> Fit:
    """The host loop shared by the SSL training loops: steps, tracking, divergence, progress and checkpoints.

    Args:
      step_fn: jitted ``(state, data) -> (state, loss)`` donating its state.
      state: the freshly initialised state (a dataclass with ``step`` and ``key`` fields); also the template a
        checkpoint is restored into.
      data: the training images on the devices (what ``step_fn`` takes besides the state).
      track: ``state -> dict`` of device arrays for one tracking point; each of :data:`TRACKED` in it is replaced
        by its eigenvalues (descending, float64, on the host).
      cfg: steps, tracking interval, checkpoint interval; stored in each checkpoint, and a resume with another one
        (other than ``steps`` and ``checkpoint_every``) is refused.
      replicated: the placement of the state (:func:`shardings`).
      checkpoint: file to checkpoint to, or None. While training with one, Ctrl-C saves a checkpoint at the next
        tracking point and raises :class:`TrainingInterrupted`.
      resume: continue from ``checkpoint`` where it exists; the result equals the uninterrupted run.
      progress: show a progress bar (process 0) labelled ``desc``, with the loss and the rank, the number of
        ``cov_out`` eigenvalues above ``rank_threshold`` times the largest.
      checkpoint_every: steps between checkpoints (None: ``cfg.checkpoint_every``); checkpoint_seconds: also
        checkpoint when this much wall time passed since the last one (0 = never). Checkpoints are written at the
        first tracking point at or after each interval, and at the end.

    Returns:
      The final state (device arrays), the history (lists over the tracking points, keys ``step`` and those of
      ``track``), every step's training loss and the timings.

    Raises:
      ValueError: a checkpoint written with another config, past ``cfg.steps`` or not of this state.
      DivergenceError: a training loss or a tracked matrix became NaN/inf (with the step and what to try).
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
        for name in TRACKED:  # the training loss can still be finite while the embeddings overflow
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
    return Fit(state=state, history=history,
               train_loss=np.concatenate(train_loss) if train_loss else np.zeros((0,)),
               train_time_s=train_time, tracking_time_s=track_time)


def run_arrays(result: Fit, extra: tuple[str, ...]) -> dict[str, Any]:
    """The run fields every loop shares (steps, spectra, losses, timings) plus ``extra`` tracked arrays, stacked
    over the tracking points (the keyword arguments of a run dataclass such as :class:`stepwise.training.SSLRun`)."""
    h = result.history
    return {
        "step": np.asarray(h["step"], dtype=np.int64),
        **{k: np.stack(h[k]) for k in (*TRACKED, *extra)},
        "eval_loss": np.asarray(h["eval_loss"]),
        "train_loss": result.train_loss,
        "train_time_s": result.train_time_s,
        "tracking_time_s": result.tracking_time_s,
    }


class LoopOptions(TypedDict, total=False):
    """The keyword arguments a training loop on views (``train_ssl``, ``train_ssl_stateful``,
    ``train_noncontrastive``) passes on to :func:`train_on_views`, which holds their defaults.

    Attributes:
      checkpoint: file to checkpoint to (None: no checkpoints). While training with one, Ctrl-C saves a checkpoint at
        the next tracking point and raises :class:`TrainingInterrupted`.
      resume: continue from ``checkpoint`` if it exists; the result equals an uninterrupted run. A checkpoint written
        with another training config (any field but ``steps``), or past ``cfg.steps``, is refused (ValueError).
      progress: show a progress bar with the loss and the current rank.
      devices: devices for data parallelism (default: ``jax.devices()``: all local devices, or those of every
        process after :func:`stepwise.training.distributed.initialize`).
      rank_threshold: the progress bar's rank counts covariance eigenvalues above this fraction of the largest.
      checkpoint_every: steps between checkpoints, overriding ``cfg.checkpoint_every`` (:class:`Checkpointing`).
      checkpoint_seconds: also checkpoint after this much training wall time since the last checkpoint (0 = never).
    """

    checkpoint: str | Path | None
    resume: bool
    progress: bool
    devices: list | None
    rank_threshold: float
    checkpoint_every: int | None
    checkpoint_seconds: float


def train_on_views(
    build: Callable[[np.ndarray, np.ndarray, NamedSharding, NamedSharding], tuple[Callable, Any, Callable]],
    images: np.ndarray,
    aug: Augmentation,
    cfg: TrainConfig,
    *,
    eval_images: np.ndarray,
    desc: str,
    pairs: Callable = make_pairs,
    devices: list | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    rank_threshold: float = 0.1,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float = 0.0,
) -> Fit:
    """A training loop on augmented views of images: the input checks, placement, evaluation views and :func:`fit`.

    Args:
      build: ``(images, eval_images, replicated, batch_sharding) -> (step_fn, state, track)``, called after the
        input checks with the checked arrays and the placements (:func:`shardings`): the jitted, donating step
        ``(state, data) -> (state, loss)`` (whose views come from :func:`sample_views`), the initial state, and
        ``track(state, e1, e2) -> dict`` of one tracking point on the fixed evaluation views (device arrays, each
        of :data:`TRACKED` among them).
      images: (N, H, W, C) training images (placed on the devices once, replicated).
      aug: the augmentation producing each view.
      cfg: optimisation and tracking settings.
      eval_images: (n_eval, H, W, C) images of the fixed evaluation views (:func:`eval_views`).
      desc: the progress bar's label.
      pairs: how :func:`make_pairs` is called for the evaluation views (eagerly by default).
      devices, checkpoint, resume, progress, rank_threshold, checkpoint_every, checkpoint_seconds: the
        :class:`LoopOptions` (``checkpoint_every=None``: ``cfg.checkpoint_every``).

    Returns:
      The :class:`Fit` of the loop.

    Raises:
      ValueError: bad inputs (:func:`check_inputs`, before any compute); a checkpoint of another run.
      DivergenceError: a training loss or a tracked matrix became NaN/inf.
    """
    devices = list(jax.devices()) if devices is None else list(devices)
    images, eval_images = check_inputs(images, eval_images, aug, cfg, devices)
    replicated, batch_sharding = shardings(devices)
    step_fn, state, track = build(images, eval_images, replicated, batch_sharding)
    data = distributed.put_global(jnp.asarray(images), replicated, what="the training images")
    e1, e2 = eval_views(aug, cfg.seed, eval_images, replicated, pairs=pairs)
    return fit(step_fn, state, data, lambda s: track(s, e1, e2), cfg, replicated=replicated, checkpoint=checkpoint,
               resume=resume, progress=progress, rank_threshold=rank_threshold, desc=desc,
               checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds)
