"""Which images a network experiment trains and evaluates on: :class:`ImageData`, a frozen sub-config shared by the
deep experiments (``stepwise_deep``, ``noncontrastive_deep``, ``directpred``), with its validation, its loading and
the GPU scale's choice of data in one place."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from stepwise._validate import bound_errors, config_value_errors
from stepwise.data.datasets import detect_local_dataset, image_shape, load_images

__all__ = ["ImageData", "GPU_DATASETS"]

#: Datasets the GPU scale runs on (the embedded photographs' patches or a local folder).
GPU_DATASETS = ("patches", "cifar10", "stl10")


@dataclasses.dataclass(frozen=True)
class ImageData:
    """The images of a run and how they are prepared.

    Attributes:
      dataset: image source (``digits`` and ``patches`` are embedded; ``cifar10`` / ``stl10`` need ``data_dir`` or
        the environment variables).
      data_dir: local dataset folder.
      n_train, n_eval: training images, and held-out images whose fixed views are tracked and probed.
      normalize: ``pixel`` standardises every pixel over the training images (removes the mean-image mode);
        ``none`` keeps [0, 1] pixels.
      crop: side of the square random crop of every view (None: the whole image).
      patch_size: side of the RGB patches of ``dataset="patches"``.
    """

    dataset: Literal["digits", "patches", "cifar10", "stl10"] = "digits"
    data_dir: str | None = None
    n_train: int = 1500
    n_eval: int = 297
    normalize: Literal["pixel", "none"] = "pixel"
    crop: int | None = None
    patch_size: int = 32

    def __post_init__(self):
        # Two is the least an evaluation spectrum (and a probe's split) is defined on.
        errors = config_value_errors(self) + bound_errors(
            self, ("n_train", ">= 1"), ("patch_size", ">= 1"), ("n_eval", ">= 2"))
        if self.crop is not None and self.crop < 1:
            errors.append(f"crop must be >= 1 or None (got {self.crop})")
        elif self.crop is not None and self.patch_size >= 1:
            h, w, _ = image_shape(self.dataset, patch_size=self.patch_size)
            if self.crop > min(h, w):
                errors.append(f"crop {self.crop} does not fit in {self.dataset} images of {h}x{w}")
        if errors:
            raise ValueError("invalid image data: " + "; ".join(errors))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the images before augmentation."""
        return image_shape(self.dataset, patch_size=self.patch_size)

    @property
    def crop_size(self) -> tuple[int, int] | None:
        """The crop as :class:`stepwise.data.Augmentation` takes it."""
        return None if self.crop is None else (self.crop, self.crop)

    def load(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(train, evals, eval_labels)``: a seeded subset of ``n_train + n_eval`` images, the first ``n_train`` to
        train on; with ``normalize="pixel"`` every image is standardised with the training images' per-pixel mean
        and overall standard deviation. Raises the loader's errors (missing folder, too few images)."""
        ds = load_images(self.dataset, self.n_train + self.n_eval, seed=seed, data_dir=self.data_dir,
                         patch_size=self.patch_size)
        images = ds.images
        if self.normalize == "pixel":
            train = images[: self.n_train]
            images = (images - train.mean(axis=0)) / max(float(train.std()), 1e-12)
        return images[: self.n_train], images[self.n_train :], ds.labels[self.n_train :]

    @classmethod
    def gpu(cls, dataset: str | None = None, data_dir: str | None = None, *, n_eval: int = 1000) -> "ImageData":
        """The GPU scale's data: with no folder the embedded photographs' 32x32 patches (10000 to train); with
        ``data_dir`` the local STL-10 (its labelled training images, 64x64 random crops of 96x96: 4000 to train) or
        CIFAR-10 (as the patches) found there (:func:`stepwise.data.detect_local_dataset`); ``dataset`` forces one.

        Raises:
          ValueError: ``dataset`` is not one of :data:`GPU_DATASETS`.
        """
        if dataset is None:
            dataset = "patches" if data_dir is None else detect_local_dataset(data_dir)
        if dataset not in GPU_DATASETS:
            raise ValueError(f"the GPU scale runs on patches, cifar10 or stl10 (got {dataset!r})")
        if dataset == "stl10":
            return cls(dataset=dataset, data_dir=data_dir, n_train=4000, n_eval=n_eval, crop=64)
        return cls(dataset=dataset, data_dir=data_dir, n_train=10000, n_eval=n_eval, crop=None, patch_size=32)
