"""The two-layer ReLU network of the Grassmann width experiment (Esser et al. 2023; theory note esser2023, section 4).

f(x) = a^T relu(b x / sqrt(d)) / sqrt(m), NTK parametrisation, parameters ``{"a": (m, h), "b": (m, d)}``. The
experiment freezes the hidden layer ``b``, so its features are computed once (:func:`hidden_features`) and the
network is the linear model ``phi(x)^T a`` on them; :func:`two_layer_mse` is the network's supervised loss in that
form. Pure functions rather than an NNX module: the NTK (:func:`stepwise.ntk.empirical_ntk`) takes ``two_layer``
and the parameter dict directly.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["hidden_features", "two_layer", "two_layer_mse"]


def two_layer(params: dict, x: jax.Array) -> jax.Array:
    """f(x) = a^T relu(b x / sqrt(d)) / sqrt(m), NTK parametrisation: (n, d) -> (n, h) with a (m, h), b (m, d)."""
    m, d = params["b"].shape
    return jax.nn.relu(x @ params["b"].T / math.sqrt(d)) @ params["a"] / math.sqrt(m)


def hidden_features(b: jax.Array, x: np.ndarray) -> np.ndarray:
    """phi(x) = relu(b x / sqrt(d)) / sqrt(m), the frozen hidden layer computed once: f(x) = a^T phi(x).

    With W = a / sqrt(m) the network's SSL loss is m L_lin(W) for the linear model on phi (C = C_phi, whose spectrum
    converges as m grows), and grad_a = sqrt(m) grad_W L_lin: a step lr on a (NTK parametrisation) is exactly a
    step lr on W for L_lin. The grassmann experiment trains W that way.
    """
    m, d = b.shape
    return np.asarray(jax.nn.relu(jnp.asarray(x) @ b.T / math.sqrt(d)), np.float64) / math.sqrt(m)


def two_layer_mse(a: jax.Array, feats: jax.Array, y: jax.Array) -> jax.Array:
    """The network's MSE 0.5 E||f(x) - y||^2 on its frozen features: feats @ a = a^T phi(x) = f(x)."""
    return 0.5 * jnp.mean(jnp.sum((feats @ a - y) ** 2, axis=-1))
