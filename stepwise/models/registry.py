"""Model name -> class, and :func:`build_model` with argument checking before any construction."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Literal

import jax
from flax import nnx

from stepwise._validate import bound_errors, config_value_errors
from stepwise.models.functional import PureModel, pure_model
from stepwise.models.nets import MLP, ResNet18, SmallCNN

__all__ = ["MODELS", "NetSpec", "build_model", "scale_leaf", "scale_output_layer"]

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


def scale_output_layer(params, factor: float):
    """Multiply the kernel of the output layer (the one producing the embedding) by ``factor``.

    For the models of :mod:`stepwise.models`: the last Linear of the projector, or without a projector the last of
    the head (CNN, ResNet) or of the backbone (MLP). (The parameter tree's order is alphabetical, so the last kernel
    in tree order is not the output layer in general: for the ResNet it is the stem's.)

    Raises:
      ValueError: the tree has none of those kernels.
    """
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for module in ("projector", "head", "backbone"):
        kernels = [p for p in paths if p.startswith(f"['{module}']") and "kernel" in p]
        if kernels:
            return scale_leaf(params, kernels[-1], factor)
    raise ValueError("the model has no projector, head or backbone kernel to scale")


def scale_leaf(params, path: str, factor: float):
    """``params`` with the leaf at key path ``path`` (``jax.tree_util.keystr`` form) multiplied by ``factor``.

    >>> scale_leaf({"a": 1.0, "b": 2.0}, "['b']", 3.0)
    {'a': 1.0, 'b': 6.0}
    """
    flat, tree = jax.tree_util.tree_flatten_with_path(params)
    return jax.tree.unflatten(tree, [leaf * factor if jax.tree_util.keystr(p) == path else leaf for p, leaf in flat])


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """A network of :data:`MODELS` with a projector, a sub-config (``net``) of the deep experiments' configs.

    Attributes:
      model: ``mlp``, ``cnn`` or ``resnet18``.
      hidden, channels, width: architecture sizes (MLP hidden widths; CNN channels; ResNet width multiplier).
      resnet_blocks: basic blocks per ResNet stage (2: ResNet-18; 1: ResNet-10).
      embed_dim: backbone output width.
      projector: projector widths; the last is the embedding dimension :attr:`d` (else ``embed_dim``).
      init_scale: factor on every initial kernel ("small initialisation").
      head_scale: extra factor on the output layer's initial kernel (:func:`scale_output_layer`).
      dtype: compute dtype of the convolutions and hidden layers (``bfloat16``: mixed precision; the parameters and
        the output layer stay float32, see :mod:`stepwise.models.nets`).
    """

    model: Literal["mlp", "cnn", "resnet18"] = "mlp"
    hidden: tuple[int, ...] = (256, 256)
    channels: tuple[int, ...] = (32, 64)
    width: float = 0.25
    resnet_blocks: int = 2
    embed_dim: int = 16
    projector: tuple[int, ...] = ()
    init_scale: float = 1.0
    head_scale: float = 1.0
    dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self):
        errors = config_value_errors(self)
        for name in ("hidden", "channels", "projector"):
            if any(w < 1 for w in getattr(self, name)):
                errors.append(f"every width in {name} must be >= 1 (got {getattr(self, name)})")
        if self.model == "cnn" and not self.channels:
            errors.append("channels must name at least one conv stage for model='cnn' (got ())")
        errors += bound_errors(self, ("width", "> 0", " (the ResNet's channel multiplier)"), ("embed_dim", ">= 1"),
                               ("resnet_blocks", ">= 1"), ("init_scale", "> 0"), ("head_scale", "> 0"))
        if self.dtype not in ("float32", "bfloat16"):
            errors.append(f"dtype must be 'float32' or 'bfloat16' (got {self.dtype!r})")
        if errors:
            raise ValueError("invalid network: " + "; ".join(errors))

    @property
    def d(self) -> int:
        """The embedding dimension: the projector's last width, else ``embed_dim``."""
        return self.projector[-1] if self.projector else self.embed_dim

    def size(self) -> str:
        """The architecture's size in words (``hidden (256, 256)``, ``channels (32, 64)``, ``width 1, 2 blocks per
        stage``)."""
        return {"mlp": f"hidden {self.hidden}", "cnn": f"channels {self.channels}",
                "resnet18": f"width {self.width:g}, {self.resnet_blocks} blocks per stage"}[self.model]

    def build(self, input_shape: tuple[int, int, int], *, seed: int = 0) -> PureModel:
        """The network at initialisation on ``input_shape`` images, its output layer scaled by ``head_scale``
        (float32 parameters whatever ``dtype``: the same parameters serve the float32 network, e.g. for the NTK)."""
        kwargs = {"projector": self.projector, "init_scale": self.init_scale, "seed": seed, "embed_dim": self.embed_dim,
                  "dtype": None if self.dtype == "float32" else self.dtype}
        kwargs |= {"mlp": {"hidden": self.hidden}, "cnn": {"channels": self.channels},
                   "resnet18": {"width": self.width, "blocks": self.resnet_blocks}}[self.model]
        pure = pure_model(build_model(self.model, input_shape, **kwargs))
        if self.head_scale == 1.0:
            return pure
        return dataclasses.replace(pure, params=scale_output_layer(pure.params, self.head_scale))
