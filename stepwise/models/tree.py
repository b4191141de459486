"""The tree-shaped ReLU network of the HLTM experiment (Tian et al. 2020; theory note tian2020, sections 2.5 and 5.2).

The network mirrors a latent tree of ``depth`` levels with ``children`` children per node (see
:mod:`stepwise.data.hltm`; level t = 0 is the root, level ``depth`` the leaves = the inputs). Every latent node mu
(levels 0..depth-1) owns a group N_mu of ``hid`` units whose only inputs are its children's groups (for the level
just above the leaves: the children's leaf values themselves):

    h_mu = W_mu concat_{nu in ch(mu)} relu(h_nu) + b_mu        (leaves: relu(x) = x for x in {0, 1})
    output = h_root (hid values, no ReLU); the losses l2-normalise it.

This is the reference code's model ([V-code] ``ssl/hltm/simCLR_hltm.py``): one ``nn.Linear(in, hid)`` per node with
PyTorch's default initialisation U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases; ``bias=False`` gives
the bias-free network of the covariance-operator theory.

The nodes of one level are stacked, so a level is one batched contraction and the parameters are a plain pytree
``{"w": (W_0, ..., W_{depth-1}), "b": (...)}`` with W_t of shape (children**t, hid, fan_in_t). Pure functions rather
than an NNX module: the experiment initialises and trains many seeds at once under ``jax.vmap``, which this keeps
to one ``vmap`` of ``init_tree_net`` and of the step.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

__all__ = ["init_tree_net", "tree_net"]

Params = dict[str, Any]


def _positive_int(name: str, value) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def init_tree_net(key: jax.Array, depth: int, children: int, hid: int, *, bias: bool = True,
                  dtype: DTypeLike = jnp.float32) -> Params:
    """Parameters of the tree network, PyTorch-default initialisation (note 5.2 [V-code]).

    Args:
      key: PRNG key.
      depth: levels of the latent tree below the root (>= 1); the input has children**depth leaves.
      children: children per node (>= 1).
      hid: units per latent node (the README's "degree of over-parameterisation"; per node, note 2.5).
      bias: include biases (the reference code does; the covariance-operator theory has none).
      dtype: parameter dtype.

    Returns:
      ``{"w": tuple, "b": tuple}``; entry t (level t = 0..depth-1) has shapes (children**t, hid, fan_in_t) and
      (children**t, hid), fan_in = children at level depth-1 and children * hid above. Without ``bias``,
      ``"b"`` is an empty tuple.
    """
    depth, children, hid = (_positive_int(n, v) for n, v in (("depth", depth), ("children", children), ("hid", hid)))
    shapes = []
    for t in range(depth):
        fan_in = children if t == depth - 1 else children * hid
        shapes.append(((children**t, hid, fan_in), (children**t, hid), fan_in))
    # One random draw for everything (each threefry call adds noticeably to the compile time on CPU).
    sizes = [math.prod(w) + (math.prod(b) if bias else 0) for w, b, _ in shapes]
    u = jax.random.uniform(key, (sum(sizes),), dtype, -1.0, 1.0)
    ws, bs, start = [], [], 0
    for (w_shape, b_shape, fan_in), size in zip(shapes, sizes):
        chunk = u[start:start + size] / fan_in**0.5
        start += size
        ws.append(chunk[: math.prod(w_shape)].reshape(w_shape))
        if bias:
            bs.append(chunk[math.prod(w_shape):].reshape(b_shape))
    return {"w": tuple(ws), "b": tuple(bs)}


def tree_net(params: Params, x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Forward pass, bottom-up.

    Args:
      params: from :func:`init_tree_net`.
      x: (N, children**depth) leaf values.

    Returns:
      ``(out, pre)``: ``out`` (N, hid) is the root's pre-activation (the representation); ``pre[t]`` (N,
      children**t, hid) the pre-activations of every node of level t = 0..depth-1 (``pre[0][:, 0] == out``), the
      quantities whose correlation with the latents is measured.
    """
    ws, bs = params["w"], params["b"]
    depth = len(ws)
    children = ws[-1].shape[2]
    if jnp.ndim(x) != 2 or jnp.shape(x)[1] != children**depth:
        raise ValueError(f"x must have shape (N, children**depth = {children**depth}) for this network; got "
                         f"{jnp.shape(x)}")
    n = x.shape[0]
    act = x.reshape(n, children ** (depth - 1), children)  # leaves grouped by parent, relu(x) = x
    pre: list[jax.Array] = [jnp.zeros(())] * depth
    for t in range(depth - 1, -1, -1):
        h = jnp.einsum("nji,jhi->njh", act, ws[t])
        if bs:
            h = h + bs[t][None]
        pre[t] = h
        if t:
            act = jax.nn.relu(h).reshape(n, children ** (t - 1), children * h.shape[2])
    return pre[0][:, 0], tuple(pre)
