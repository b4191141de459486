"""The function types the library passes around, in one place.

Aliases of ``Callable`` rather than Protocols: the functions are plain closures (an NNX module turned pure by
``nnx.split``, a loss from :mod:`stepwise.losses`), and the aliases document their arguments where they are used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

__all__ = ["ApplyFn", "LossFn", "StateApplyFn", "StatefulApplyFn"]

ApplyFn = Callable[[Any, jax.Array], jax.Array]
"""``apply(params, x) -> y``: a network as a pure function of its parameters and a batch, (n, ...) -> (n, d)."""

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
"""``loss(z1, z2) -> scalar``: a joint-embedding loss of the embeddings of two views, each (n, d)."""

StatefulApplyFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, Any]]
"""``apply_train(params, model_state, x) -> (y, model_state')``: a training-mode forward pass that updates state
(BatchNorm running statistics, dropout RNG counters)."""

StateApplyFn = Callable[[Any, Any, jax.Array], jax.Array]
"""``apply_eval(params, model_state, x) -> y``: an evaluation-mode forward pass that reads state."""
