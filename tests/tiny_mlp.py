"""A ReLU MLP as a pure ``(params, x)`` pair for the training-engine tests (test_training_ssl and the worker of
test_distributed, which imports this file by path before any other test code)."""

import jax
import jax.numpy as jnp
import numpy as np


def init_mlp(key, sizes=(36, 16, 8), scale=1.0):
    """Lecun-normal kernels times ``scale`` and zero biases, in JAX's default float dtype."""
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        key, k = jax.random.split(key)
        w = jax.random.normal(k, (a, b))
        params.append({"w": scale * w / np.sqrt(a).astype(w.dtype), "b": jnp.zeros(b)})
    return params


def features(params, x):
    """The hidden ReLU layers on the flattened images."""
    h = x.reshape(x.shape[0], -1)
    for p in params[:-1]:
        h = jax.nn.relu(h @ p["w"] + p["b"][None, :])
    return h


def apply(params, x):
    """The output Linear layer after :func:`features`."""
    return features(params, x) @ params[-1]["w"] + params[-1]["b"][None, :]
