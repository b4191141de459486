"""Embedded and local datasets, and augmentations as pure JAX functions."""

from stepwise.data.augment import (
    Augmentation,
    augment_batch,
    color_jitter,
    crop,
    gaussian_noise,
    make_pairs,
    random_crop,
    random_flip,
    random_shift,
)
from stepwise.data.datasets import (
    DATASETS,
    PHOTOGRAPHS,
    DataNotFoundError,
    Dataset,
    load_cifar10,
    load_dataset,
    load_images,
    load_digits,
    load_patches,
    load_stl10,
)

__all__ = [
    "DATASETS",
    "PHOTOGRAPHS",
    "Augmentation",
    "DataNotFoundError",
    "Dataset",
    "augment_batch",
    "color_jitter",
    "crop",
    "gaussian_noise",
    "load_cifar10",
    "load_dataset",
    "load_images",
    "load_digits",
    "load_patches",
    "load_stl10",
    "make_pairs",
    "random_crop",
    "random_flip",
    "random_shift",
]
