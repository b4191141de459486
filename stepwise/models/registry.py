"""Model name -> class, and :func:`build_model` with argument checking before any construction."""

from __future__ import annotations

import inspect

from flax import nnx

from stepwise.models.nets import MLP, ResNet18, SmallCNN

__all__ = ["MODELS", "build_model"]

MODELS: dict[str, type] = {"mlp": MLP, "cnn": SmallCNN, "resnet18": ResNet18}


def build_model(name: str, input_shape: tuple[int, int, int], *, seed: int = 0, **kwargs) -> nnx.Module:
    """Constructs ``MODELS[name](input_shape, **kwargs, rngs=nnx.Rngs(seed))``.

    Args:
      name: a key of :data:`MODELS`.
      input_shape: image shape (H, W, C).
      seed: initialisation seed.
      **kwargs: the model's keyword arguments (e.g. ``width``, ``projector``, ``init_scale``).

    Returns:
      The initialised module.

    Raises:
      ValueError: for an unknown ``name`` or a keyword the model does not take (checked before constructing), or
        whatever the model's own validation raises.

    Example:
      >>> build_model("mlp", (4, 4, 1), hidden=(8,), embed_dim=2).out_dim
      2
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {sorted(MODELS)}")
    cls = MODELS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "input_shape", "rngs")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{cls.__name__} ({name!r}) got unknown keyword(s) {unknown}; valid keywords: {accepted}")
    return cls(input_shape, **kwargs, rngs=nnx.Rngs(seed))
