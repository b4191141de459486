"""Augmentations as pure JAX functions of ``(key, image)``, batched with ``vmap``.

Single-image ops take one (H, W, C) image; :func:`augment_batch` maps a pipeline over a batch with one key per
image. The same pipeline makes a fixed set of positive pairs once (:func:`make_pairs`) or resamples views every
training step inside a jitted step (``augment_batch(aug, jax.random.fold_in(key, step), images)``).

Image ops come from dm-pix where it has them (crop, flips, colour jitter); the rest are a few lines of
``jax.numpy``.
"""

from __future__ import annotations

import dataclasses

import dm_pix as pix
import jax
import jax.numpy as jnp

from stepwise._compat import standard_dtype_promotion
from stepwise._validate import bound_errors

__all__ = [
    "Augmentation",
    "augment_batch",
    "color_jitter",
    "crop",
    "gaussian_noise",
    "make_pairs",
    "random_crop",
    "random_flip",
    "random_shift",
    "ViewAugmentation",
]


def crop(image: jax.Array, offset: tuple[jax.Array, jax.Array], size: tuple[int, int]) -> jax.Array:
    """The (size[0], size[1], C) window of ``image`` whose top-left corner is ``offset`` (row, column)."""
    row, col = jnp.asarray(offset[0]), jnp.asarray(offset[1])
    start = (row, col.astype(row.dtype), jnp.zeros((), row.dtype))  # dynamic_slice wants one index dtype
    return jax.lax.dynamic_slice(image, start, (size[0], size[1], image.shape[2]))


def random_crop(key: jax.Array, image: jax.Array, size: tuple[int, int]) -> jax.Array:
    """A uniformly placed (size[0], size[1]) crop of one (H, W, C) image."""
    h, w, _ = image.shape
    if size[0] > h or size[1] > w:
        raise ValueError(f"crop size {size} does not fit in an image of {h}x{w}")
    return pix.random_crop(key, image, (size[0], size[1], image.shape[2]))


def random_shift(key: jax.Array, image: jax.Array, max_shift: int) -> jax.Array:
    """Translate by up to ``max_shift`` pixels in each direction, filling with edge pixels; shape preserved."""
    if max_shift == 0:
        return image
    h, w, _ = image.shape
    padded = jnp.pad(image, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="edge")
    return random_crop(key, padded, (h, w))


def random_flip(key: jax.Array, image: jax.Array) -> jax.Array:
    """Mirror left-right with probability 1/2."""
    return pix.random_flip_left_right(key, image)


def color_jitter(
    key: jax.Array,
    image: jax.Array,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    hue: float = 0.0,
) -> jax.Array:
    """Random brightness (additive, +-brightness), contrast and saturation (factor in [1 - s, 1 + s]) and hue
    (+-hue of a turn), in that fixed order, clipped to [0, 1]. Saturation and hue apply to RGB images only.
    """
    dtype = image.dtype  # dm-pix's hue shift is drawn in the default float dtype (float64 under x64)
    kb, kc, ks, kh = jax.random.split(key, 4)
    if brightness > 0:
        image = pix.random_brightness(kb, image, brightness)
    if contrast > 0:
        image = pix.random_contrast(kc, image, 1.0 - contrast, 1.0 + contrast)
    if image.shape[-1] == 3:
        with standard_dtype_promotion():  # dm-pix's HSV conversion mixes dtypes (see stepwise._compat)
            if saturation > 0:
                image = pix.random_saturation(ks, image, 1.0 - saturation, 1.0 + saturation)
            if hue > 0:
                image = pix.random_hue(kh, image, hue)
    return jnp.clip(image, 0.0, 1.0).astype(dtype)


def gaussian_noise(key: jax.Array, image: jax.Array, std: float) -> jax.Array:
    """Add i.i.d. N(0, std^2) noise to every pixel."""
    return image + std * jax.random.normal(key, image.shape, image.dtype)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """A pipeline of augmentations, applied in the order of the fields. Frozen and hashable (a static jit arg).

    Attributes:
      crop: output (height, width) of a random crop, or None for no crop.
      shift: random translation of up to this many pixels (after the crop).
      flip: random left-right mirror.
      brightness, contrast, saturation, hue: colour-jitter strengths (0 = off), see :func:`color_jitter`.
      noise_std: standard deviation of additive Gaussian pixel noise (0 = off).
    """

    crop: tuple[int, int] | None = None
    shift: int = 0
    flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    noise_std: float = 0.0

    def __post_init__(self):
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) < 1):
            raise ValueError(f"crop must be (height, width) with positive sides; got {self.crop}")
        for name in ("shift", "brightness", "contrast", "saturation", "hue", "noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"augmentation strength {name} must be >= 0; got {getattr(self, name)}")

    def output_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        if self.crop is None:
            return tuple(image_shape)  # type: ignore[return-value]
        if self.crop[0] > image_shape[0] or self.crop[1] > image_shape[1]:
            raise ValueError(f"crop {self.crop} does not fit in images of shape {tuple(image_shape)}")
        return (self.crop[0], self.crop[1], image_shape[2])

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        """Augment one (H, W, C) image."""
        k_crop, k_shift, k_flip, k_jit, k_noise = jax.random.split(key, 5)
        if self.crop is not None:
            image = random_crop(k_crop, image, self.crop)
        if self.shift:
            image = random_shift(k_shift, image, self.shift)
        if self.flip:
            image = random_flip(k_flip, image)
        if self.brightness or self.contrast or self.saturation or self.hue:
            image = color_jitter(k_jit, image, self.brightness, self.contrast, self.saturation, self.hue)
        if self.noise_std:
            image = gaussian_noise(k_noise, image, self.noise_std)
        return image


@dataclasses.dataclass(frozen=True)
class ViewAugmentation:
    """The augmentations of the deep experiments' views, a sub-config (``aug``) of their configs; the crop belongs
    to the data (:class:`stepwise.data.ImageData`), whose images fix which crops fit.

    Attributes:
      shift, flip, noise_std, brightness, contrast: as :class:`Augmentation`'s; resampled at every step.
    """

    shift: int = 1
    flip: bool = False
    noise_std: float = 0.1
    brightness: float = 0.0
    contrast: float = 0.0

    def __post_init__(self):
        errors = bound_errors(self, *((name, ">= 0") for name in ("shift", "noise_std", "brightness", "contrast")))
        if errors:
            raise ValueError("invalid view augmentation: " + "; ".join(errors))

    def augmentation(self, crop: tuple[int, int] | None = None) -> Augmentation:
        """The :class:`Augmentation` of these views after a random ``crop`` (None: no crop)."""
        return Augmentation(crop=crop, shift=self.shift, flip=self.flip, noise_std=self.noise_std,
                            brightness=self.brightness, contrast=self.contrast)

    @classmethod
    def gpu(cls, *, crop: bool = False) -> "ViewAugmentation":
        """The GPU scale's views: flips, brightness and contrast 0.4, no noise, and pad-4 shifts unless the data
        are random crops (STL-10)."""
        return cls(shift=0 if crop else 4, flip=True, noise_std=0.0, brightness=0.4, contrast=0.4)


def augment_batch(aug: Augmentation, key: jax.Array, images: jax.Array) -> jax.Array:
    """Apply ``aug`` to each image of an (N, H, W, C) batch with independent keys ``split(key, N)``."""
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(aug)(keys, images)


def make_pairs(aug: Augmentation, key: jax.Array, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two independent augmented views of every image: the positive pairs (x_i, x_i')."""
    k1, k2 = jax.random.split(key)
    return augment_batch(aug, k1, images), augment_batch(aug, k2, images)
