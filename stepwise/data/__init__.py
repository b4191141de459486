"""Embedded and local datasets, augmentations as pure JAX functions, the latent-tree sampler and positive pairs for
the linear and two-layer SSL models (:mod:`stepwise.data.pairs`)."""

# Each module's public names (its __all__) are the package's.
from stepwise.data import augment, datasets, hltm, image_data, pairs
from stepwise.data.augment import *  # noqa: F403
from stepwise.data.datasets import *  # noqa: F403
from stepwise.data.hltm import *  # noqa: F403
from stepwise.data.image_data import *  # noqa: F403
from stepwise.data.pairs import *  # noqa: F403

__all__ = [*augment.__all__, *datasets.__all__, *hltm.__all__, *image_data.__all__, *pairs.__all__]
