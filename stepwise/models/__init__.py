"""Image-embedding models (Flax NNX, no BatchNorm) and their pure ``(params, x) -> y`` form.

``nets``        MLP, SmallCNN, ResNet18 (``features`` backbone + optional projector head, ``init_scale``)
``functional``  :func:`pure_model` (split once; ``apply`` / ``features`` of ``(params, x)``), :func:`param_count`
``registry``    :data:`MODELS` name -> class, :func:`build_model`
``tree``        the tree-shaped ReLU network of the HLTM experiment (pure functions, :func:`tree_net`)
``two_layer``   the two-layer ReLU network of the Grassmann width experiment (pure functions, :func:`two_layer`)
"""

from stepwise.models.functional import PureModel as PureModel
from stepwise.models.functional import param_count as param_count
from stepwise.models.functional import pure_model as pure_model
from stepwise.models.nets import MLP as MLP
from stepwise.models.nets import ResNet18 as ResNet18
from stepwise.models.nets import SmallCNN as SmallCNN
from stepwise.models.registry import MODELS as MODELS
from stepwise.models.registry import NetSpec as NetSpec
from stepwise.models.registry import build_model as build_model
from stepwise.models.registry import scale_leaf as scale_leaf
from stepwise.models.registry import scale_output_layer as scale_output_layer
from stepwise.models.tree import init_tree_net as init_tree_net
from stepwise.models.tree import tree_net as tree_net
from stepwise.models.two_layer import hidden_features as hidden_features
from stepwise.models.two_layer import two_layer as two_layer
from stepwise.models.two_layer import two_layer_mse as two_layer_mse

__all__ = [
    "MLP",
    "MODELS",
    "PureModel",
    "ResNet18",
    "SmallCNN",
    "build_model",
    "hidden_features",
    "init_tree_net",
    "param_count",
    "pure_model",
    "scale_leaf",
    "scale_output_layer",
    "tree_net",
    "two_layer",
    "two_layer_mse",
]
