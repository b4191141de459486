"""Image-embedding models (Flax NNX, no BatchNorm) and their pure ``(params, x) -> y`` form.

``nets``        MLP, SmallCNN, ResNet18 (``features`` backbone + optional projector head, ``init_scale``)
``functional``  :func:`pure_model` (split once; ``apply`` / ``features`` of ``(params, x)``), :func:`param_count`
``registry``    :data:`MODELS` name -> class, :func:`build_model`
"""

from stepwise.models.functional import PureModel, param_count, pure_model
from stepwise.models.nets import MLP, ResNet18, SmallCNN
from stepwise.models.registry import MODELS, build_model

__all__ = ["MLP", "MODELS", "PureModel", "ResNet18", "SmallCNN", "build_model", "param_count", "pure_model"]
