"""Tests for stepwise.data.augment, in dm-pix's style: every op eager == jit == vmap, against NumPy references."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise._compat import enable_x64
from stepwise.data import (
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

H, W, C = 10, 12, 3
TOL = dict(rtol=1e-6, atol=1e-6)


def _image(seed: int = 0, shape=(H, W, C), low: float = 0.0, high: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32)


@pytest.fixture
def image() -> jax.Array:
    return jnp.asarray(_image(0), dtype=jnp.float32)


@pytest.fixture
def images() -> jax.Array:
    """A batch of 5 different images."""
    return jnp.asarray(_image(1, (5, H, W, C)), dtype=jnp.float32)


def _keys(n: int, seed: int = 0) -> jax.Array:
    return jax.random.split(jax.random.key(seed), n)


def _windows(image: np.ndarray, size: tuple[int, int]) -> list[tuple[int, int]]:
    """Every top-left offset of a size window inside image."""
    h, w = image.shape[:2]
    return [(r, c) for r in range(h - size[0] + 1) for c in range(w - size[1] + 1)]


def _find_window(out: np.ndarray, image: np.ndarray) -> list[tuple[int, int]]:
    """Brute force: every offset (r, c) with image[r:r+h, c:c+w] == out."""
    h, w = out.shape[:2]
    return [(r, c) for r, c in _windows(image, (h, w)) if np.array_equal(image[r : r + h, c : c + w], out)]


def _check_eager_jit_vmap(op, keys, images, exact: bool, eager_vmap: bool = True, jit_vmap: bool = True):
    """op(key, image) eagerly, under jit, and vmapped over (keys, images) vs a Python loop; returns the loop.

    ``eager_vmap=False`` checks the vmap under jit only: an op-by-op vmap of the colour ops costs seconds of
    per-primitive compilation and tests nothing that jit(vmap) does not. ``jit_vmap=False`` where the vmap of
    the same ops is compiled by another test (compilation dominates the run time).
    """
    loop = np.stack([np.asarray(op(k, x)) for k, x in zip(keys, images)])
    jitted = jax.jit(op)
    others = [np.stack([np.asarray(jitted(k, x)) for k, x in zip(keys, images)])]
    if jit_vmap:
        others.append(np.asarray(jax.jit(jax.vmap(op))(keys, images)))
    if eager_vmap:
        others.append(np.asarray(jax.vmap(op)(keys, images)))
    for other in others:
        assert other.shape == loop.shape and other.dtype == loop.dtype
        if exact:
            np.testing.assert_array_equal(other, loop)
        else:
            np.testing.assert_allclose(other, loop, **TOL)
    return loop


# ------------------------------------------------------------------------------------------------------------
# crop


@pytest.mark.parametrize(
    "offset, size",
    [((0, 0), (4, 5)), ((2, 3), (4, 5)), ((6, 7), (4, 5)), ((9, 11), (1, 1)), ((3, 0), (1, W)), ((0, 0), (H, W))],
)
def test_crop_matches_numpy(image, offset, size):
    out = crop(image, offset, size)
    expected = np.asarray(image)[offset[0] : offset[0] + size[0], offset[1] : offset[1] + size[1]]
    assert out.shape == (*size, C) and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, expected)


def test_crop_jit_traced_offsets_and_vmap(image, images):
    size = (4, 5)
    traces = []

    def traced_crop(x, offset, sz):
        traces.append(sz)
        return crop(x, offset, sz)

    jitted = jax.jit(traced_crop, static_argnums=2)
    img = np.asarray(image)
    for r, c in [(0, 0), (3, 2), (6, 7), (5, 0)]:
        # jnp.asarray of a Python int: the default integer dtype (int64 under x64, else int32).
        out = jitted(image, (jnp.asarray(r), jnp.asarray(c)), size)
        np.testing.assert_array_equal(out, img[r : r + 4, c : c + 5])
    assert len(traces) == 1  # offsets are traced: one compilation for every offset
    rows, cols = jnp.asarray([0, 1, 2, 6, 3]), jnp.asarray([7, 0, 4, 1, 2])
    batched = jax.vmap(lambda x, r, c: crop(x, (r, c), size))(images, rows, cols)
    expected = np.stack([np.asarray(x)[r : r + 4, c : c + 5] for x, r, c in zip(images, rows, cols)])
    np.testing.assert_array_equal(batched, expected)


def test_crop_int32_offsets_under_x64(image):
    with enable_x64(True):
        out = crop(image, (jnp.int32(2), jnp.int32(3)), (4, 5))
    np.testing.assert_array_equal(out, np.asarray(image)[2:6, 3:8])


# ------------------------------------------------------------------------------------------------------------
# random_crop


def test_random_crop_is_a_window(images):
    size = (6, 7)
    keys = _keys(len(images))
    outs = _check_eager_jit_vmap(lambda k, x: random_crop(k, x, size), keys, images, exact=True)
    assert outs.shape == (len(images), 6, 7, C)
    for out, img in zip(outs, np.asarray(images)):
        assert len(_find_window(out, img)) == 1


def test_random_crop_different_keys_different_windows(image):
    size = (5, 5)
    img = np.asarray(image)
    found = set()
    for k in _keys(20, seed=7):
        (offset,) = _find_window(np.asarray(random_crop(k, image, size)), img)
        found.add(offset)
    assert len(found) > 5  # 48 possible windows
    # Same key, same window.
    k = jax.random.key(3)
    np.testing.assert_array_equal(random_crop(k, image, size), random_crop(k, image, size))


def test_random_crop_full_size_is_identity(image):
    np.testing.assert_array_equal(random_crop(jax.random.key(1), image, (H, W)), image)


@pytest.mark.parametrize("size", [(H + 1, W), (H, W + 1), (H + 5, W + 5)])
def test_random_crop_too_large(image, size):
    with pytest.raises(ValueError, match="does not fit"):
        random_crop(jax.random.key(0), image, size)


# ------------------------------------------------------------------------------------------------------------
# random_shift


def test_random_shift_is_window_of_edge_padded(images):
    s = 2
    keys = _keys(len(images), seed=1)
    outs = _check_eager_jit_vmap(lambda k, x: random_shift(k, x, s), keys, images, exact=True)
    assert outs.shape == images.shape
    for out, img in zip(outs, np.asarray(images)):
        padded = np.pad(img, ((s, s), (s, s), (0, 0)), mode="edge")
        assert len(_find_window(out, padded)) == 1


def test_random_shift_takes_several_shifts(image):
    s = 2
    img = np.asarray(image)
    padded = np.pad(img, ((s, s), (s, s), (0, 0)), mode="edge")
    found = set()
    for k in _keys(20, seed=2):
        (offset,) = _find_window(np.asarray(random_shift(k, image, s)), padded)
        assert max(abs(offset[0] - s), abs(offset[1] - s)) <= s
        found.add(offset)
    assert len(found) > 5  # 25 possible shifts


def test_random_shift_zero_is_identity(image):
    np.testing.assert_array_equal(random_shift(jax.random.key(0), image, 0), image)
    np.testing.assert_array_equal(jax.jit(lambda k, x: random_shift(k, x, 0))(jax.random.key(0), image), image)


# ------------------------------------------------------------------------------------------------------------
# random_flip


def test_random_flip(image):
    img = np.asarray(image)
    keys = _keys(12, seed=3)
    outs = _check_eager_jit_vmap(random_flip, keys, jnp.stack([image] * len(keys)), exact=True)
    flipped = []
    for out in outs:
        is_same, is_flipped = np.array_equal(out, img), np.array_equal(out, img[:, ::-1])
        assert is_same != is_flipped
        flipped.append(is_flipped)
    assert 0 < sum(flipped) < len(flipped)


# ------------------------------------------------------------------------------------------------------------
# color_jitter


def test_color_jitter_range_shape_and_transforms(images):
    def op(k, x):
        return color_jitter(k, x, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)

    keys = _keys(3, seed=4)
    outs = _check_eager_jit_vmap(op, keys, images[:3], exact=False, eager_vmap=False)
    assert outs.shape == images[:3].shape
    assert outs.min() >= 0.0 and outs.max() <= 1.0
    assert not np.allclose(outs, np.asarray(images[:3]), atol=1e-3)
    # Different keys, different jitter.
    a, b = op(jax.random.key(0), images[0]), op(jax.random.key(1), images[0])
    assert not np.allclose(a, b, atol=1e-3)


def test_color_jitter_zero_strength_is_clipped_identity():
    x = jnp.asarray(_image(5, low=-0.5, high=1.5), dtype=jnp.float32)
    out = color_jitter(jax.random.key(0), x)
    np.testing.assert_array_equal(out, np.clip(np.asarray(x), 0.0, 1.0))
    out = jax.jit(color_jitter, static_argnums=(2, 3, 4, 5))(jax.random.key(0), x, 0.0, 0.0, 0.0, 0.0)
    np.testing.assert_array_equal(out, np.clip(np.asarray(x), 0.0, 1.0))


def test_color_jitter_brightness_is_a_constant_shift(image):
    for k in _keys(6, seed=5):
        out = np.asarray(color_jitter(k, image, brightness=0.3))
        assert out.dtype == np.float32
        diff = out - np.asarray(image)
        inside = (out > 0.0) & (out < 1.0)
        assert inside.sum() > out.size // 2
        delta = diff[inside]
        np.testing.assert_allclose(delta, delta[0], atol=1e-6)
        assert abs(delta[0]) <= 0.3
        # Clipped pixels went the way of the shift.
        assert np.all(out[~inside] == (0.0 if delta[0] < 0 else 1.0))


def test_color_jitter_contrast_scales_about_the_mean():
    x = _image(6, low=0.4, high=0.6)  # no clipping for contrast factors in [0.8, 1.2]
    for k in _keys(4, seed=6):
        out = np.asarray(color_jitter(k, jnp.asarray(x, dtype=jnp.float32), contrast=0.2), np.float64)
        mean = x.mean(axis=(0, 1), dtype=np.float64)
        np.testing.assert_allclose(out.mean(axis=(0, 1)), mean, atol=1e-6)  # per-channel mean kept
        factor = (out - mean) / (x - mean)
        np.testing.assert_allclose(factor, np.median(factor), rtol=1e-3, atol=1e-3)
        assert 0.8 <= np.median(factor) <= 1.2


def test_color_jitter_grayscale():
    gray = jnp.asarray(_image(7, shape=(H, W, 1)), dtype=jnp.float32)
    k = jax.random.key(8)
    # Saturation and hue do not apply to a single channel: clipped identity, no error.
    out = color_jitter(k, gray, saturation=0.5, hue=0.3)
    assert out.shape == (H, W, 1)
    np.testing.assert_array_equal(out, np.asarray(gray))
    # With brightness and contrast they change nothing either: same result as without them.
    full = color_jitter(k, gray, brightness=0.2, contrast=0.3, saturation=0.5, hue=0.3)
    np.testing.assert_array_equal(full, color_jitter(k, gray, brightness=0.2, contrast=0.3))
    assert not np.array_equal(full, np.asarray(gray))
    assert full.min() >= 0.0 and full.max() <= 1.0
    grays = jnp.asarray(_image(9, shape=(3, H, W, 1)), dtype=jnp.float32)
    op = lambda kk, x: color_jitter(kk, x, 0.2, 0.3, 0.5, 0.3)  # noqa: E731
    _check_eager_jit_vmap(op, _keys(3), grays, exact=False, eager_vmap=False)


@pytest.mark.parametrize("kwargs", [dict(brightness=0.2), dict(contrast=0.2), dict(saturation=0.2)])
def test_color_jitter_keeps_float32_under_x64(image, kwargs):
    with enable_x64(True):
        assert color_jitter(jax.random.key(0), image, **kwargs).dtype == jnp.float32


def test_color_jitter_hue_keeps_float32_under_x64(image):
    with enable_x64(True):
        assert color_jitter(jax.random.key(0), image, hue=0.1).dtype == jnp.float32


# ------------------------------------------------------------------------------------------------------------
# gaussian_noise


def test_gaussian_noise_matches_formula(images):
    std = 0.1
    keys = _keys(len(images), seed=10)
    outs = _check_eager_jit_vmap(lambda k, x: gaussian_noise(k, x, std), keys, images, exact=False)
    for out, k, x in zip(outs, keys, images):
        expected = x + std * jax.random.normal(k, x.shape, x.dtype)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, **TOL)


def test_gaussian_noise_zero_is_identity(image):
    np.testing.assert_array_equal(gaussian_noise(jax.random.key(0), image, 0.0), image)


def test_gaussian_noise_statistics():
    x = jnp.full((200, 200, 3), 0.5, dtype=jnp.float32)
    std = 0.25
    noise = np.asarray(gaussian_noise(jax.random.key(11), x, std), np.float64) - 0.5
    assert abs(noise.mean()) < 0.01
    assert abs(noise.std() / std - 1.0) < 0.02  # 120000 samples: relative error of the std ~ 0.2%
    a = gaussian_noise(jax.random.key(11), x, std)
    b = gaussian_noise(jax.random.key(12), x, std)
    assert not np.allclose(a, b)


# ------------------------------------------------------------------------------------------------------------
# Augmentation, augment_batch, make_pairs

FULL = Augmentation(crop=(8, 9), shift=1, flip=True, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05,
                    noise_std=0.05)


def test_augmentation_frozen_and_hashable():
    a = Augmentation(crop=(8, 8), flip=True, brightness=0.2)
    b = Augmentation(crop=(8, 8), flip=True, brightness=0.2)
    assert a == b and hash(a) == hash(b) and a is not b
    assert a != Augmentation(crop=(8, 8), flip=True, brightness=0.3)
    assert len({a, b, Augmentation()}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.flip = False  # type: ignore[misc]


def test_augmentation_static_jit_argument(images):
    traces = []

    def f(aug, key, x):
        traces.append(aug)
        return augment_batch(aug, key, x)

    jf = jax.jit(f, static_argnums=0)
    key = jax.random.key(0)
    out1 = jf(Augmentation(crop=(8, 8)), key, images)
    out2 = jf(Augmentation(crop=(8, 8)), key, images)  # equal instance: cache hit
    np.testing.assert_array_equal(out1, out2)
    assert len(traces) == 1
    out3 = jf(Augmentation(crop=(6, 6)), key, images)
    assert len(traces) == 2 and out3.shape == (len(images), 6, 6, C)


@pytest.mark.parametrize(
    "field", ["shift", "brightness", "contrast", "saturation", "hue", "noise_std"]
)
def test_augmentation_negative_strength(field):
    with pytest.raises(ValueError, match=field):
        Augmentation(**{field: -1})


@pytest.mark.parametrize("bad", [(0, 4), (4, 0), (-2, 3), (4,), (4, 4, 4)])
def test_augmentation_bad_crop(bad):
    with pytest.raises(ValueError, match="crop"):
        Augmentation(crop=bad)


def test_augmentation_output_shape():
    assert Augmentation().output_shape((H, W, C)) == (H, W, C)
    assert Augmentation(shift=2, flip=True).output_shape((H, W, 1)) == (H, W, 1)
    assert Augmentation(crop=(8, 9)).output_shape((H, W, C)) == (8, 9, C)
    assert FULL.output_shape((H, W, C)) == (8, 9, C)
    with pytest.raises(ValueError, match="does not fit"):
        Augmentation(crop=(H + 1, 4)).output_shape((H, W, C))
    with pytest.raises(ValueError, match="does not fit"):
        Augmentation(crop=(4, W + 1)).output_shape((H, W, C))


def test_augmentation_default_is_identity(image):
    aug = Augmentation()
    np.testing.assert_array_equal(aug(jax.random.key(0), image), image)
    np.testing.assert_array_equal(augment_batch(aug, jax.random.key(0), image[None]), image[None])


@pytest.mark.parametrize(
    "aug",
    [FULL, Augmentation(crop=(6, 6)), Augmentation(shift=2, flip=True), Augmentation(noise_std=0.1, contrast=0.5)],
    ids=["full", "crop", "shift_flip", "noise_contrast"],
)
def test_augmentation_call_eager_jit_vmap(aug, images):
    keys = _keys(3, seed=12)
    # The ops are checked under an eager vmap above and a pipeline in test_augment_batch_eager; the vmapped
    # saturation/hue in test_color_jitter_range_shape_and_transforms (compiling FULL's vmap again costs seconds).
    outs = _check_eager_jit_vmap(aug, keys, images[:3], exact=False, eager_vmap=False, jit_vmap=aug is not FULL)
    assert outs.shape == (3, *aug.output_shape(images.shape[1:]))
    assert not np.allclose(outs[0], outs[1][: outs.shape[1], : outs.shape[2]])


def test_augmentation_crop_only_is_a_window(images):
    aug = Augmentation(crop=(6, 7))
    for k, x in zip(_keys(len(images), seed=13), np.asarray(images)):
        out = np.asarray(aug(k, jnp.asarray(x)))
        assert len(_find_window(out, x)) == 1


def test_augmentation_flip_only(image):
    aug = Augmentation(flip=True)
    img = np.asarray(image)
    flips = []
    for k in _keys(12, seed=14):
        out = np.asarray(aug(k, image))
        assert np.array_equal(out, img) or np.array_equal(out, img[:, ::-1])
        flips.append(np.array_equal(out, img[:, ::-1]))
    assert 0 < sum(flips) < len(flips)


augment_batch_jit = jax.jit(augment_batch, static_argnums=0)
LIGHT = Augmentation(crop=(8, 9), shift=1, flip=True, brightness=0.3, noise_std=0.05)


def test_augment_batch_equals_loop(images):
    # LIGHT, not FULL: the vmapped saturation/hue are checked in the color_jitter tests (compilation is slow).
    aug = LIGHT
    key = jax.random.key(15)
    keys = jax.random.split(key, len(images))
    loop = np.stack([np.asarray(aug(k, x)) for k, x in zip(keys, images)])
    assert loop.shape == (len(images), 8, 9, C)
    np.testing.assert_allclose(augment_batch_jit(aug, key, images), loop, **TOL)


def test_augment_batch_eager(images):
    aug = Augmentation(crop=(6, 6), flip=True)  # eager (op-by-op) vmap: cheap ops only, compilation is slow
    key = jax.random.key(20)
    keys = jax.random.split(key, len(images))
    loop = np.stack([np.asarray(aug(k, x)) for k, x in zip(keys, images)])
    np.testing.assert_array_equal(augment_batch(aug, key, images), loop)


def test_augment_batch_resampled_per_step(images):
    aug = Augmentation(crop=(6, 6), flip=True)
    step_fn = jax.jit(lambda key, step, x: augment_batch(aug, jax.random.fold_in(key, step), x))
    key = jax.random.key(16)
    a, b = step_fn(key, 0, images), step_fn(key, 1, images)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, step_fn(key, 0, images))


def test_make_pairs(images):
    aug = Augmentation(crop=(6, 7), flip=True)
    key = jax.random.key(17)
    v1, v2 = make_pairs(aug, key, images)
    assert v1.shape == v2.shape == (len(images), 6, 7, C)
    assert not np.array_equal(v1, v2)
    # Each view is a crop of its own image (possibly mirrored).
    for a, b, x in zip(np.asarray(v1), np.asarray(v2), np.asarray(images)):
        for v in (a, b):
            assert _find_window(v, x) or _find_window(v[:, ::-1], x)
    # Deterministic for a fixed key, and exactly two independent augment_batch calls.
    w1, w2 = make_pairs(aug, key, images)
    np.testing.assert_array_equal(v1, w1)
    np.testing.assert_array_equal(v2, w2)
    k1, k2 = jax.random.split(key)
    np.testing.assert_array_equal(v1, augment_batch(aug, k1, images))
    np.testing.assert_array_equal(v2, augment_batch(aug, k2, images))
    # Another key, other pairs.
    u1, _ = make_pairs(aug, jax.random.key(18), images)
    assert not np.array_equal(u1, v1)


def test_make_pairs_under_jit(images):
    key = jax.random.key(19)
    k1, k2 = jax.random.split(key)
    expected = augment_batch_jit(LIGHT, k1, images), augment_batch_jit(LIGHT, k2, images)
    jitted = jax.jit(make_pairs, static_argnums=0)(LIGHT, key, images)
    for e, j in zip(expected, jitted):
        assert j.shape == (len(images), 8, 9, C)
        np.testing.assert_allclose(j, e, **TOL)
    assert not np.allclose(jitted[0], jitted[1])
