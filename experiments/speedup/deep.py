"""The deep stand-in: ``stepwise_deep``'s MLP on digits, trained plain and with the boosted Barlow Twins loss.

The boost needs no Gamma: it is a loss whose value is the centred theory-form Barlow Twins loss and whose gradient
is the per-mode rescaled one (:func:`boosted_bt_loss`), so :func:`stepwise.training.train_ssl` trains it unchanged
(SGD, resampled augmented pairs, the same tracking of held-out views). The input-space variant would need the
kernel's Gamma, which for a network moves with the backbone; it is not run here.

Gamma is needed for two things only, both at initialisation: the learning rate (a fraction of 1 / (4 gamma_1)) and
the lazy-regime prediction of both runs' step times. With a tiny output layer the network's NTK is the kernel of the
output layer's inputs h(x) (the backbone barely moves until the head has grown), so Gamma is the symmetrised
cross-covariance of h over ``deep.n_pairs`` fixed augmented training pairs (each view centred, as the loss centres
its batch). h is read off the network as the derivative of the first output with respect to the first column of
the output layer's kernel (exact: the output is linear in that kernel), found by
:func:`stepwise.verify.output_layer`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.speedup.config import SpeedupConfig
from experiments.stepwise_deep.config import DeepConfig
from stepwise import compare
from stepwise.io import replace_config
from stepwise.data.augment import make_pairs
from stepwise.losses import get_loss
from stepwise.theory import linear
from stepwise.theory import speedup as theory
from stepwise.training import TrainConfig, train_ssl
from stepwise.verify import output_layer

__all__ = ["DeepPair", "boosted_bt_loss", "deep_config", "head_inputs", "run_deep_pair"]

PAIRS_TAG = 2**31 - 2  # fold_in tag of the Gamma pairs' key: independent of every training and evaluation key


def boosted_bt_loss(z1: jax.Array, z2: jax.Array, *, eps: float, center: bool = True) -> jax.Array:
    """Centred theory-form Barlow Twins loss ||C - I||_F^2 whose gradient is rescaled per eigenmode of C.

    Value: ``barlow_twins_theory(z1, z2, center=center)``. Gradient: that of tr(K (C - I)^2) with
    K = U diag(kappa(lambda)) U^T, kappa(lambda) = (1 + eps)/(max(lambda, 0) + eps), computed from the batch's own
    C = U diag(lambda) U^T and held fixed (stop-gradient). Since K commutes with C, d tr(K (C - I)^2)/dC =
    2 K (C - I): the plain gradient 2 (C - I) rescaled by kappa along every eigendirection of C. For linear
    embeddings z = x W^T the update is W <- W - lr 4 K(C) (C - I) W Gamma, the ``boost`` variant of
    :mod:`stepwise.theory.speedup` (tested in ``tests/test_experiment_speedup.py``).

    Args:
      z1, z2: (n, d) embeddings of the two views; row i of each is a positive pair.
      eps: the boost's eps > 0.
      center: centre each view over the batch first (the ``stepwise_deep`` form).

    Returns:
      () scalar, the Barlow Twins loss.
    """
    if center:
        z1 = z1 - jnp.mean(z1, axis=0, keepdims=True)
        z2 = z2 - jnp.mean(z2, axis=0, keepdims=True)
    n, d = z1.shape
    g = z1.T @ z2
    c = (g + g.T) * (0.5 / n)
    lam, u = jnp.linalg.eigh(jax.lax.stop_gradient(c))
    kappa = (1.0 + eps) / (jnp.maximum(lam, 0.0) + eps)
    k = (u * kappa[None, :]) @ u.T
    e = c - jnp.eye(d, dtype=c.dtype)
    boosted = jnp.sum(k * (e @ e))
    plain = jnp.sum(e * e)
    return jax.lax.stop_gradient(plain) + boosted - jax.lax.stop_gradient(boosted)


def head_inputs(apply, params, path: str, x: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Inputs h(x) of the output layer and its kernel W (in, d), float64.

    f(x) = h(x) W + b, so h(x) = d f_0(x) / d W[:, 0] exactly (one forward-mode derivative per input unit).
    """
    flat, tree = jax.tree_util.tree_flatten_with_path(params)
    names = [jax.tree_util.keystr(p) for p, _ in flat]
    i = names.index(path)
    leaves = [leaf for _, leaf in flat]
    kernel = leaves[i]

    def first_output(col):
        ls = list(leaves)
        ls[i] = kernel.at[:, 0].set(col)
        return apply(jax.tree.unflatten(tree, ls), x)[:, 0]

    h = jax.jit(jax.jacfwd(first_output))(kernel[:, 0])  # one compilation instead of one per operation
    return np.asarray(h, np.float64), np.asarray(kernel, np.float64)


def deep_config(cfg: SpeedupConfig, seed: int, steps: int = 1, lr: float = 0.02) -> DeepConfig:
    """``stepwise_deep``'s Barlow Twins configuration (centred theory form) with this experiment's sizes."""
    return replace_config(
        DeepConfig.for_loss("barlow_twins_theory"),
        net={"hidden": cfg.deep.hidden, "embed_dim": cfg.deep.d, "projector": (), "head_scale": cfg.deep.head_scale},
        train={"steps": steps, "lr": lr, "batch_size": cfg.deep.batch_size, "track_every": cfg.deep.track_every,
               "seed": seed, "optimizer": "sgd"},
        data={"n_train": cfg.deep.n_train, "n_eval": cfg.deep.n_eval, "data_dir": cfg.data.data_dir},
        theory_center=True,
    )


@dataclasses.dataclass(frozen=True)
class DeepPair:
    """One seed: the head kernel's prediction and the two trained networks.

    Attributes:
      seed, steps, lr: the run's seed, SGD steps and learning rate.
      gammas: (d + 2,) top eigenvalues of the head kernel's Gamma at initialisation; gamma_min its smallest.
      predicted: {variant: SpeedupPrediction} for ``plain`` and ``boost`` (head kernel held fixed, random init:
        Gram-Schmidt amplitudes as in ``linear_bt``).
      step: (T,) tracked steps; loss: {variant: (T,) held-out loss}; eigenvalues: {variant: (T, d) covariance
        eigenvalues of the held-out embeddings}; final_embeddings: {variant: (n_eval, d)}.
      last_step: {variant: first step at which the held-out loss is <= the level (nan if never)}.
      train_time_s: {variant: training wall time}; gamma_time_s: time to estimate Gamma.
    """

    seed: int
    steps: int
    lr: float
    gammas: np.ndarray
    gamma_min: float
    predicted: dict
    step: np.ndarray
    loss: dict
    eigenvalues: dict
    final_embeddings: dict
    last_step: dict
    train_time_s: dict
    gamma_time_s: float


def run_deep_pair(cfg: SpeedupConfig, seed: int, *, progress: bool = False) -> DeepPair:
    """Estimate the head kernel's Gamma, predict, and train the MLP plain and boosted from the same initialisation,
    batches and views."""
    base = deep_config(cfg, seed)
    train, evals, _ = base.load_data()
    aug = base.augmentation()
    model = base.build_model(aug.output_shape(train.shape[1:]))
    train, evals = train.astype(np.float32), evals.astype(np.float32)

    t0 = time.perf_counter()
    pairs = jax.jit(lambda k, x: make_pairs(aug, k, x))
    x1, x2 = pairs(jax.random.fold_in(jax.random.key(seed), PAIRS_TAG), jnp.asarray(train[: cfg.deep.n_pairs]))
    path = output_layer(model.apply, model.params, x1[:2])
    h1, kernel = head_inputs(model.apply, model.params, path, x1)
    h2, _ = head_inputs(model.apply, model.params, path, x2)
    gamma = linear.cross_correlation(h1 - h1.mean(axis=0), h2 - h2.mean(axis=0))
    g, v = linear.eigh_desc(gamma)
    gamma_time = time.perf_counter() - t0
    d = cfg.deep.d
    if not g[d - 1] > 0:
        raise ValueError(f"the head kernel's Gamma has fewer than d = {d} positive eigenvalues; lower deep.d")
    a = linear.eigenbasis_amplitudes(g, v, kernel.T, "gram_schmidt")
    predicted = {"plain": theory.predict(g, a, "plain", lr_scale=cfg.deep.lr_scale),
                 "boost": theory.predict(g, a, "boost", lr_scale=cfg.deep.lr_scale, eps=cfg.deep.eps)}
    lr = predicted["plain"].lr
    every = cfg.deep.track_every
    steps = cfg.deep.steps or int(every * math.ceil(cfg.deep.steps_factor * predicted["plain"].last_step / every))
    tcfg = TrainConfig(steps=steps, batch_size=cfg.deep.batch_size, lr=lr, optimizer="sgd", track_every=every,
                       n_snapshot=cfg.deep.n_eval, seed=seed)
    losses = {"plain": get_loss("barlow_twins_theory", center=True),
              "boost": functools.partial(boosted_bt_loss, eps=cfg.deep.eps, center=True)}
    runs = {name: train_ssl(model.apply, None, model.params, fn, train, aug, tcfg, eval_images=evals,
                            progress=progress)
            for name, fn in losses.items()}
    step = runs["plain"].step.astype(np.float64)
    level = cfg.deep.loss_level
    last = {k: float(compare.crossing_times(step, -np.asarray(r.eval_loss, np.float64), -level)[0])
            for k, r in runs.items()}
    return DeepPair(
        seed=seed, steps=steps, lr=lr, gammas=g[: d + 2], gamma_min=float(g[-1]), predicted=predicted, step=step,
        loss={k: np.asarray(r.eval_loss, np.float64) for k, r in runs.items()},
        eigenvalues={k: np.asarray(r.cov_out, np.float64) for k, r in runs.items()},
        final_embeddings={k: np.asarray(r.snapshots[-1], np.float64) for k, r in runs.items()},
        last_step=last, train_time_s={k: r.train_time_s for k, r in runs.items()}, gamma_time_s=gamma_time,
    )
