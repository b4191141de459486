"""Image-embedding models (Flax NNX, no BatchNorm) and their pure ``(params, x) -> y`` form.

``nets``        MLP, SmallCNN, ResNet18 (``features`` backbone + optional projector head, ``init_scale``)
``functional``  :func:`pure_model` (split once; ``apply`` / ``features`` of ``(params, x)``), :func:`param_count`
``registry``    :data:`MODELS` name -> class, :func:`build_model`
``tree``        the tree-shaped ReLU network of the HLTM experiment (pure functions, :func:`tree_net`)
"""

from stepwise.models.functional import PureModel as PureModel
from stepwise.models.functional import param_count as param_count
from stepwise.models.functional import pure_model as pure_model
from stepwise.models.nets import MLP as MLP
from stepwise.models.nets import ResNet18 as ResNet18
from stepwise.models.nets import SmallCNN as SmallCNN
from stepwise.models.registry import MODELS as MODELS
from stepwise.models.registry import build_model as build_model
from stepwise.models.tree import init_tree_net as init_tree_net
from stepwise.models.tree import tree_net as tree_net

__all__ = [
    "MLP",
    "MODELS",
    "PureModel",
    "ResNet18",
    "SmallCNN",
    "build_model",
    "init_tree_net",
    "param_count",
    "pure_model",
    "tree_net",
]
