"""Full-batch GD of a centred network g(x) = f(theta, x) - f(theta_0, x) on the theory-form Barlow Twins loss
||C - I||_F^2 over fixed pairs (the width sweep's nets, theory note 3 and 6.9): small initialisation by centring, the
initial displacement, and the net's linearisation at theta_0. Receives ``apply(params, x)`` functions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stepwise.losses import barlow_twins_theory

__all__ = ["centred_delta", "train_centred", "train_linearised"]


def train_centred(apply, theta0, delta, xs, lr: float, steps: int, chunk: int = 2000):
    """Full-batch GD on ||C - I||^2 of g(x) = apply(theta, x) - apply(theta_0, x) from theta_0 + delta.

    Returns the final parameters, the loss (steps + 1,) and the eigenvalues of C, largest first, (steps + 1, d), each
    before every update and after the last (float64). C = (g_1^T g_2 + g_2^T g_1) / 2n is the matrix the loss
    compares with I (:func:`stepwise.losses.barlow_twins_theory`); its eigenvalues ride along as an auxiliary output,
    so the gradient and the trajectory are those of the loss alone.
    """
    n = xs.shape[0] // 2
    f0 = apply(theta0, xs)

    def loss_fn(theta):
        g = apply(theta, xs) - f0
        c = (g[:n].T @ g[n:] + g[n:].T @ g[:n]) / (2 * n)
        return barlow_twins_theory(g[:n], g[n:]), jnp.linalg.eigvalsh(c)[::-1]

    def body(theta, _):
        (loss, eigs), grad = jax.value_and_grad(loss_fn, has_aux=True)(theta)
        return jax.tree.map(lambda p, q: p - lr * q, theta, grad), (loss, eigs)

    scan = jax.jit(lambda th, k: jax.lax.scan(body, th, None, length=k), static_argnums=1)
    theta = jax.tree.map(lambda p, q: p + q, theta0, delta)
    losses, eigs, done = [], [], 0
    while done < steps:
        k = min(chunk, steps - done)
        theta, (ls, es) = scan(theta, k)
        losses.append(np.asarray(ls))
        eigs.append(np.asarray(es))
        done += k
    last_loss, last_eigs = loss_fn(theta)
    losses.append(np.asarray([last_loss]))
    eigs.append(np.asarray(last_eigs)[None])
    out = np.concatenate(losses)
    if not np.all(np.isfinite(out)):
        raise FloatingPointError(f"GD diverged (first non-finite loss at update {int(np.argmin(np.isfinite(out)))}); "
                                 "lower lr_scale")
    return theta, out, np.concatenate(eigs)


def centred_delta(apply, theta0, xs, key: jax.Array, rms: float):
    """A random parameter direction (standard normal leaves, one key each from ``key``) scaled so that the centred
    initial function g(theta_0 + delta) ~ J delta has root-mean-square ``rms`` on ``xs`` (float64 leaves)."""
    leaves, tree = jax.tree.flatten(theta0)
    keys = jax.random.split(key, len(leaves))
    direction = jax.tree.unflatten(tree, [jax.random.normal(k, p.shape, jnp.float64) for k, p in zip(keys, leaves)])
    _, jd = jax.jvp(lambda th: apply(th, xs), (theta0,), (direction,))
    scale = rms / float(jnp.sqrt(jnp.mean(jd**2)))
    return jax.tree.map(lambda p: scale * p, direction)


def train_linearised(apply, theta0, delta, xs, lr: float, steps: int) -> np.ndarray:
    """:func:`train_centred` on the linearisation of ``apply`` at theta_0 (g = J(theta_0) (theta - theta_0), from the
    same ``delta`` at the same lr): the eigenvalues of C, largest first, (steps + 1, d). A model whose NTK is exactly
    the one at initialisation, output blocks included. Parametrised by the displacement dt = theta - theta_0 (no
    cancellation against theta_0)."""
    # jax.linearize outside the jitted loop: a jvp at theta_0 inside it would have XLA constant-fold the net's
    # forward pass at theta_0 on every compile (seconds at width 4096).
    _, jvp_train = jax.linearize(lambda th: apply(th, xs), theta0)

    def apply_lin(dt, x):
        assert x is xs, "the linearisation is taken on the training points only"
        return jvp_train(dt)

    return train_centred(apply_lin, jax.tree.map(jnp.zeros_like, theta0), delta, xs, lr, steps)[2]
