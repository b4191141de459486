"""Contrastive training of many independent runs at once (seeds x polarity ranges), one jitted step per iteration.

Used by the HLTM experiment (Tian et al. 2020; theory note tian2020, sections 3.1 and 5). Every run r has its own
parameters, its own data source (e.g. its own latent tree) and its own key; the step is ``jax.vmap``-ed over runs
and jitted once, with the state donated. Each step draws a fresh batch of (anchor, positive, negative) triples
on the device from ``fold_in(run_key, step)`` (infinite data, as in the reference code), so a re-run step sees the
same randomness.

Losses on the l2-normalised outputs f = h / (||h|| + 1e-4) ([V-code]), with r = 1/2 ||f - f'||^2 = 1 - cos
(for unit vectors) as in note 1.1:

``simple``   L = mean_i (r+_i - r-_i), the negative of anchor i being the i-th negative sample (H = 1).
``infonce``  L = mean_i L_nce(r+_i, {r-_ij}_j), every negative sample of the batch being a negative of every
             anchor (H = batch size), with L_nce the tau-scaled InfoNCE of
             :func:`stepwise.theory.covariance.infonce_loss`.

Both are the note's losses (1.2), not the reference code's forms (note 5.2: an MSE averaged over batch *and*
units, i.e. (2/hid) mean r; and for NCE minus the softmax probability, not its log, of batch-averaged distances
with one negative per anchor); the experiment records these differences.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stepwise._typing import ApplyFn
from stepwise.data import hltm as hltm_data
from stepwise.errors import DivergenceError
from stepwise.theory.covariance import infonce_loss, pair_distance

__all__ = ["RunsHistory", "contrastive_loss", "train_linear_simple", "train_runs"]

Loss = Literal["simple", "infonce"]
# (run data, key, batch size) -> (x, x_pos, x_neg), each (B, n_in)
SampleFn = Callable[[Any, jax.Array, int], tuple[jax.Array, jax.Array, jax.Array]]
# (params, run data) -> pytree of metrics
EvalFn = Callable[[Any, Any], Any]

NORM_EPS = 1e-4  # the reference code's f = h / (||h|| + 1e-4)


def _normalise(h: jax.Array) -> jax.Array:
    return h / (jnp.linalg.norm(h, axis=-1, keepdims=True) + NORM_EPS)


def contrastive_loss(h: jax.Array, h_pos: jax.Array, h_neg: jax.Array, *, loss: Loss, tau: float) -> jax.Array:
    """The batch loss of representations h, h_pos, h_neg: (B, d) (see the module docstring)."""
    f, f_pos, f_neg = _normalise(h), _normalise(h_pos), _normalise(h_neg)
    r_pos = pair_distance(f, f_pos)
    if loss == "simple":
        return jnp.mean(r_pos - pair_distance(f, f_neg))
    if loss == "infonce":
        r_neg = pair_distance(f[:, None, :], f_neg[None, :, :])  # (B anchors, B negatives)
        return jnp.mean(infonce_loss(r_pos, r_neg, tau=tau))
    raise ValueError(f"unknown loss {loss!r}; expected 'simple' or 'infonce'")


class RunsHistory(NamedTuple):
    """What :func:`train_runs` records.

    Attributes:
      step: (E,) steps of the evaluations (0, eval_every, ..., steps).
      metrics: the eval function's pytree with a leading (E, R) pair of axes.
      train_loss: (steps, R) loss of every step (before its update).
      params: final parameters (leading R axis).
      train_time_s: wall time of the loop, evaluations included.
    """

    step: np.ndarray
    metrics: Any
    train_loss: np.ndarray
    params: Any
    train_time_s: float


def train_runs(
    apply_fn: ApplyFn,
    sample_fn: SampleFn,
    eval_fn: EvalFn,
    params: Any,
    data: Any,
    keys: jax.Array,
    *,
    loss: Loss | Sequence[Loss],
    tau: float,
    lr: float,
    batch_size: int,
    steps: int,
    eval_every: int,
) -> RunsHistory:
    """Train R runs with plain SGD (the reference code's optimiser), all vmapped in one jitted step.

    Args:
      apply_fn: the representation (params, x) -> (B, d).
      sample_fn: draws a batch of triples for one run.
      eval_fn: metrics of one run's parameters on its own evaluation data (jitted, vmapped).
      params: initial parameters with a leading axis of R runs (copied, not donated).
      data: per-run data (a pytree with leading axis R), passed to ``sample_fn`` and ``eval_fn``.
      keys: (R,) typed keys, one per run.
      loss, tau: the loss (module docstring), or one loss per run, and the InfoNCE temperature. With mixed
        losses every run computes both and keeps its own (one compiled step for all runs).
      lr, batch_size, steps, eval_every: SGD learning rate, triples per step, updates, steps between evaluations.

    Returns:
      :class:`RunsHistory`.

    Raises:
      ValueError: bad settings (before any compute). DivergenceError: a non-finite loss.
    """
    n_runs = keys.shape[0]
    losses = (loss,) * n_runs if isinstance(loss, str) else tuple(loss)
    if len(losses) != n_runs or any(name not in ("simple", "infonce") for name in losses):
        raise ValueError(f"loss must be 'simple' or 'infonce', or one of them per run ({n_runs} runs); got {loss!r}")
    if not (steps >= 1 and eval_every >= 1 and batch_size >= 2 and lr > 0 and tau > 0):
        raise ValueError(f"need steps >= 1, eval_every >= 1, batch_size >= 2, lr > 0, tau > 0; got steps={steps}, "
                         f"eval_every={eval_every}, batch_size={batch_size}, lr={lr}, tau={tau}")
    tx = optax.sgd(lr)

    names = sorted(set(losses))

    def loss_of(p, run_data, key, use_nce):
        x, x_pos, x_neg = sample_fn(run_data, key, batch_size)
        h = apply_fn(p, jnp.concatenate([x, x_pos, x_neg]))  # one pass: the network is per-example
        h, h_pos, h_neg = h[:batch_size], h[batch_size:2 * batch_size], h[2 * batch_size:]
        values = {name: contrastive_loss(h, h_pos, h_neg, loss=name, tau=tau) for name in names}
        return values[names[0]] if len(names) == 1 else jnp.where(use_nce, values["infonce"], values["simple"])

    def one_step(p, opt_state, run_data, key, use_nce, step):
        value, grads = jax.value_and_grad(loss_of)(p, run_data, jax.random.fold_in(key, step), use_nce)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, value

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step_fn(p, opt_state, run_data, run_keys, use_nce, step):
        return jax.vmap(one_step, in_axes=(0, 0, 0, 0, 0, None))(p, opt_state, run_data, run_keys, use_nce, step)

    use_nce = jnp.asarray([name == "infonce" for name in losses])

    evaluate = jax.jit(jax.vmap(eval_fn))
    params = jax.tree.map(jnp.array, params)  # a copy: the step donates its inputs
    opt_state = jax.vmap(tx.init)(params)
    t0 = time.perf_counter()
    records, eval_steps, losses = [evaluate(params, data)], [0], []
    pending = []
    for step in range(steps):
        params, opt_state, value = step_fn(params, opt_state, data, keys, use_nce, jnp.asarray(step, jnp.int32))
        pending.append(value)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            block = np.asarray(jnp.stack(pending))
            pending = []
            if not np.all(np.isfinite(block)):
                bad = int(np.argwhere(~np.isfinite(block))[0, 0])
                raise DivergenceError(step=step + 1 - len(block) + bad, quantity="training loss",
                                      value=float(block[~np.isfinite(block)][0]), hint="lower the learning rate")
            losses.append(block)
            records.append(evaluate(params, data))
            eval_steps.append(step + 1)
    metrics = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *records)
    return RunsHistory(np.asarray(eval_steps), metrics, np.concatenate(losses), params, time.perf_counter() - t0)


def train_linear_simple(tree: hltm_data.HLTM, w0: jax.Array, keys: jax.Array, *, lr: float,
                        batch_size: int) -> np.ndarray:
    """SGD on L_simp for a linear f = Wx on the leaves of ``tree``, rows renormalised after each step (note checklist
    8): one step per key, each on ``batch_size`` fresh triples. Returns the (steps + 1, rows, n_leaves) trajectory,
    ``w0`` first."""

    @jax.jit
    def train(w0, keys):
        def step(w, k):
            v = hltm_data.sample_views(tree, batch_size, key=k)
            d_pos, d_neg = v.x - v.x_pos, v.x - v.x_neg
            # -grad of mean(1/2 ||W d+||^2 - 1/2 ||W d-||^2) = W (mean d- d-^T - mean d+ d+^T)
            w = w + lr * w @ ((d_neg.T @ d_neg - d_pos.T @ d_pos) / batch_size)
            w = w / jnp.linalg.norm(w, axis=1, keepdims=True)
            return w, w

        return jax.lax.scan(step, w0, keys)[1]

    return np.concatenate([np.asarray(w0)[None], np.asarray(train(w0, keys))])
