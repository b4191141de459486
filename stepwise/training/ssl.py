"""Joint-embedding SSL training: one jitted step (sample, augment, forward both views, loss, update) and tracking.

The loop itself is the training engine's (:mod:`stepwise.training.engine`): the dataset lives on the device, each
step draws its batch and both augmented views from ``fold_in(run_key, step)`` (so a resumed or re-run step sees the
same randomness), and the state is donated. The batch axis is sharded over all devices with ``jax.sharding`` (data
parallel); parameters are replicated. After :func:`stepwise.training.distributed.initialize` the devices of several
processes (hosts) form one mesh and the same call trains across them (:mod:`stepwise.training.distributed`).

Every ``track_every`` steps a jitted tracking function evaluates a fixed evaluation set (one fixed pair of views of
fixed images) and records:

- eigenvalues of the embedding covariance (centred, 1/n) and of the symmetrised Barlow Twins cross-correlation
  C = (z1^T z2 + z2^T z1) / 2n, at the projector output and at the backbone output, sorted decreasing;
- the loss on the evaluation pairs;
- a snapshot of the evaluation embeddings (for PCA pictures and post-hoc linear probes).

Per-step training losses are kept on the device and fetched once per tracking interval, where they are also
checked for divergence.

This module holds what is particular to joint-embedding training: its step (:func:`make_train_step`, and
:func:`make_stateful_step` for networks with BatchNorm or dropout state), its tracker and its run
(:class:`SSLRun`). The engine's configuration, checkpointing and key names are importable from here as before
(``from stepwise.training.ssl import TrainConfig, Checkpointing, checkpoint_kwargs, eval_key``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Unpack

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stepwise._typing import ApplyFn, LossFn, StateApplyFn, StatefulApplyFn
from stepwise.data.augment import Augmentation
from stepwise.training import distributed
from stepwise.training.compilation import jit_step
from stepwise.training.engine import (  # the engine's names as before: importable from here too
    Checkpointing as Checkpointing,
    LoopOptions,
    TrainConfig as TrainConfig,
    TrainingInterrupted as TrainingInterrupted,
    TrainState as TrainState,
    checkpoint_kwargs as checkpoint_kwargs,
    eval_key as eval_key,
    make_optimizer as make_optimizer,
    run_arrays,
    sample_views,
    spectra_matrices,
    train_on_views,
)

__all__ = [
    "SSLRun",
    "StatefulTrainState",
    "make_stateful_step",
    "make_stateful_tracker",
    "make_tracker",
    "make_train_step",
    "train_ssl",
    "train_ssl_stateful",
]


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


def make_tracker(apply: ApplyFn, features: ApplyFn | None, loss_fn: LossFn, n_snapshot: int):
    """The jitted tracking function of :func:`train_ssl`: ``track(params, x1, x2)`` -> the four d x d matrices whose
    eigenvalues are tracked (:data:`stepwise.training.engine.TRACKED`), the loss and a snapshot of ``n_snapshot``
    embeddings of the first view."""

    @jax.jit
    def track(params, x1, x2):
        z1, z2 = apply(params, x1), apply(params, x2)
        f1, f2 = (z1, z2) if features is None else (features(params, x1), features(params, x2))
        return spectra_matrices(z1, z2, f1, f2) | {"eval_loss": loss_fn(z1, z2), "snapshots": z1[:n_snapshot]}

    return track


def make_train_step(apply: ApplyFn, loss_fn: LossFn, tx, aug: Augmentation, batch_size: int, batch_sharding):
    """The jitted training step of :func:`train_ssl`: ``step(state, data) -> (state, loss)``.

    Draws ``batch_size`` rows of the on-device ``data`` without replacement (all of them when ``batch_size`` is its
    length) and their two views from ``fold_in(state.key, state.step)``, forwards both, takes ``loss_fn(z1, z2)``
    and its gradient and applies the optax transformation ``tx``; the state (a :class:`TrainState`) is donated.
    ``batch_sharding`` places the batch (e.g. ``NamedSharding(mesh, P("data"))``).
    """

    def step(state: TrainState, data: jax.Array):
        v1, v2 = sample_views(state, data, aug, batch_size, batch_sharding)

        def loss_of(params):
            return loss_fn(apply(params, v1), apply(params, v2))

        loss, grads = jax.value_and_grad(loss_of)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return dataclasses.replace(state, params=params, opt_state=opt_state, step=state.step + 1), loss

    return jit_step(step, donate_argnums=0)


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
    **loop: Unpack[LoopOptions],
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
      **loop: ``checkpoint``, ``resume``, ``progress``, ``devices``, ``rank_threshold``, ``checkpoint_every``,
        ``checkpoint_seconds`` (:class:`stepwise.training.engine.LoopOptions`): checkpoints every
        ``cfg.checkpoint_every`` steps and at the end, Ctrl-C saving one, resume equal to an uninterrupted run,
        the progress bar, data parallelism over ``devices`` (default ``jax.devices()``).

    Raises:
      ValueError: bad shapes or sizes (before any compute); a checkpoint that does not belong to this run.
      DivergenceError: a training loss became NaN/inf (with the step and what to try).
    """
    def build(images, eval_images, replicated, batch_sharding):
        tx = make_optimizer(cfg)
        step_fn = make_train_step(apply, loss_fn, tx, aug, cfg.batch_size, batch_sharding)
        track = make_tracker(apply, features, loss_fn, cfg.n_snapshot)
        own = jax.tree.map(jnp.copy, params)  # the step donates its state; never delete the caller's arrays
        state = TrainState(params=own, opt_state=tx.init(own), step=jnp.zeros((), jnp.int32),
                           key=jax.random.key(cfg.seed))
        return step_fn, state, lambda s, e1, e2: track(s.params, e1, e2)

    fit = train_on_views(build, images, aug, cfg, eval_images=eval_images, desc="SSL training", **loop)
    return SSLRun(**run_arrays(fit, ("snapshots",)), params=distributed.fetch(fit.state.params))


# ----------------------------------------------------------------------------------------------------------------
# Training with state beside the parameters (BatchNorm statistics, RNG streams).


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


def make_stateful_step(apply_train: StatefulApplyFn, loss_fn: LossFn, tx, aug: Augmentation, batch_size: int,
                       batch_sharding):
    """One jitted, donated step: each view is its own forward pass in training mode (batch statistics of that
    view's batch, as two ``model(x)`` calls in PyTorch/Flax SSL code do), the state threaded view 1 -> view 2."""

    def step(state: StatefulTrainState, data: jax.Array):
        v1, v2 = sample_views(state, data, aug, batch_size, batch_sharding)

        def loss_of(params):
            z1, s1 = apply_train(params, state.model_state, v1)
            z2, s2 = apply_train(params, s1, v2)
            return loss_fn(z1, z2), s2

        (loss, model_state), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return dataclasses.replace(state, params=params, model_state=jax.lax.stop_gradient(model_state),
                                   opt_state=opt_state, step=state.step + 1), loss

    return jit_step(step, donate_argnums=0)


def make_stateful_tracker(apply_eval: StateApplyFn, loss_fn: LossFn, n_snapshot: int,
                          features: StateApplyFn | None = None):
    """Jitted: the tracked matrices, loss and snapshot of ``apply_eval(params, model_state, .)``, the backbone
    spectra those of ``features(params, model_state, .)`` (None: no projector split, they equal the output ones)."""

    @jax.jit
    def track(params, model_state, x1, x2):
        z1, z2 = apply_eval(params, model_state, x1), apply_eval(params, model_state, x2)
        f1, f2 = (z1, z2) if features is None else (features(params, model_state, x1),
                                                    features(params, model_state, x2))
        return spectra_matrices(z1, z2, f1, f2) | {"eval_loss": loss_fn(z1, z2), "snapshots": z1[:n_snapshot]}

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
    features: StateApplyFn | None = None,
    **loop: Unpack[LoopOptions],
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
      loss_fn, images, aug, cfg, eval_images, **loop: as for :func:`train_ssl`.
      features: (params, model_state, x) -> (n, d_feat): the tracked backbone output (e.g. a submodule of the
        evaluation-mode module), or None.

    Returns:
      (run, model_state): the :class:`SSLRun` (``cov_feat``/``bt_feat`` those of ``features``, or equal to
      ``cov_out``/``bt_out`` without it) and the final state.

    Raises:
      ValueError, DivergenceError: as :func:`train_ssl`.
    """
    def build(images, eval_images, replicated, batch_sharding):
        tx = make_optimizer(cfg)
        step_fn = make_stateful_step(apply_train, loss_fn, tx, aug, cfg.batch_size, batch_sharding)
        track = make_stateful_tracker(apply_eval, loss_fn, cfg.n_snapshot, features)
        own = jax.tree.map(jnp.copy, params)  # donated by the step: never delete the caller's arrays
        state = StatefulTrainState(params=own, model_state=jax.tree.map(jnp.copy, model_state),
                                   opt_state=tx.init(own), step=jnp.zeros((), jnp.int32),
                                   key=jax.random.key(cfg.seed))
        return step_fn, state, lambda s, e1, e2: track(s.params, s.model_state, e1, e2)

    fit = train_on_views(build, images, aug, cfg, eval_images=eval_images, desc="SSL training", **loop)
    final = distributed.fetch((fit.state.params, fit.state.model_state))
    return SSLRun(**run_arrays(fit, ("snapshots",)), params=final[0]), final[1]
