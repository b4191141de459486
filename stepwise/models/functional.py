"""Turn an NNX module into pure functions of ``(params, x)``: the one function used for training, eval and the NTK.

The module is split once, outside any ``jit``, into its graph definition (static Python structure), its
``nnx.Param`` variables (the pytree that is trained and differentiated) and the rest (any other variables; empty
for the models in :mod:`stepwise.models.nets`, which have no BatchNorm statistics and no RNG state). ``apply`` and
``features`` close over the graph definition and the rest and rebuild the module from ``params`` on every call;
under ``jit`` that rebuild happens only at trace time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

__all__ = ["PureModel", "param_count", "pure_model"]


@dataclasses.dataclass(frozen=True)
class PureModel:
    """A module turned into pure functions of (params, x).

    Both functions are deterministic and per-example (no BatchNorm), and can be ``jax.jit``-ed, ``jax.vmap``-ed over
    ``x`` (each mapped slice must still be a batch, e.g. vmap over ``x[:, None]``) and differentiated with respect
    to ``params`` (``jax.grad``, ``jax.jacrev``, ``jax.jvp``).

    Attributes:
      apply: ``(params, x: (N, H, W, C)) -> (N, out_dim)``, the projector output (the module's ``__call__``).
      features: ``(params, x: (N, H, W, C)) -> (N, feature_dim)``, the backbone output (the module's ``features``).
      params: the ``nnx.State`` of the module's ``nnx.Param`` variables, a pytree of arrays.
      out_dim: width of ``apply``'s output.
      feature_dim: width of ``features``' output.
    """

    apply: Callable
    features: Callable
    params: Any
    out_dim: int
    feature_dim: int


def pure_model(module: nnx.Module) -> PureModel:
    """Splits ``module`` once and returns pure ``apply`` / ``features`` functions and its parameters.

    Args:
      module: a model from :mod:`stepwise.models.nets` (anything with ``__call__``, ``features``, ``out_dim`` and
        ``feature_dim``). It is not modified, and later changes to it do not affect the result (and vice versa).

    Returns:
      A :class:`PureModel`. ``pure.apply(pure.params, x)`` equals ``module(x)``.

    Example:
      >>> from stepwise.models import MLP
      >>> pure = pure_model(MLP((2, 2, 1), hidden=(4,), embed_dim=3, rngs=nnx.Rngs(0)))
      >>> jax.jit(pure.apply)(pure.params, jax.numpy.ones((5, 2, 2, 1), "float32")).shape
      (5, 3)
    """
    # Split a clone: nnx.split (flax 0.12) returns States that share their Variable objects with the module, so an
    # in-place update of the module (nnx.update, an nnx.Optimizer step) would otherwise silently change `params`.
    # `...` collects every non-Param variable; `rest` is an empty State when there is none, and merge accepts it.
    graphdef, params, rest = nnx.split(nnx.clone(module), nnx.Param, ...)

    def apply(params, x: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, params, rest)(x)

    def features(params, x: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, params, rest).features(x)

    return PureModel(
        apply=apply, features=features, params=params, out_dim=module.out_dim, feature_dim=module.feature_dim
    )


def param_count(params: Any) -> int:
    """Total number of scalars in a pytree of arrays (or of ``jax.ShapeDtypeStruct``, e.g. from ``nnx.eval_shape``).

    Example:
      >>> param_count({"w": jax.numpy.zeros((3, 4)), "b": jax.numpy.zeros(4)})
      16
    """
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
