"""Example of a new architecture checked with ``stepwise verify`` (README: "Verify your own architecture").

    stepwise verify --model experiments/custom_architecture.py:make_model --out runs/verify_example
    make verify-example                                  # the same, as part of `make reproduce`

``make_model(rngs)`` is all ``stepwise verify`` needs: it returns a Flax NNX module mapping a batch of images
(N, H, W, C) to (N, d) embeddings. Here: a small ConvMixer-style network (patch embedding, convolutional mixing blocks
with residual connections, flattened tokens) with a two-layer projector, for 8x8 single-channel images (the
embedded digits). The last layer must be linear for ``--init head`` (the default) to make the initialisation small.

The spatial mixing is a full 3x3 convolution rather than ConvMixer's depthwise one: per-example Jacobians of a
depthwise (feature-grouped) convolution are pathologically slow on XLA's CPU backend (measured: the empirical NTK of
96 digits took 22.8 s with depthwise mixing, 0.46 s with full convolutions).
"""

from __future__ import annotations

import jax
from flax import nnx

CHANNELS = 32
DEPTH = 2
PATCH = 2
EMBED_DIM = 16
HIDDEN = 256
TOKENS = (8 // PATCH) ** 2  # 8x8 digits


class MixerBlock(nnx.Module):
    """3x3 convolution (spatial mixing) with a residual connection, then a pointwise one (channel mixing)."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.spatial = nnx.Conv(channels, channels, (3, 3), padding="SAME", rngs=rngs)
        self.pointwise = nnx.Conv(channels, channels, (1, 1), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + jax.nn.gelu(self.spatial(x))
        return jax.nn.gelu(self.pointwise(x))


class ConvMixer(nnx.Module):
    """Patch embedding -> DEPTH mixer blocks -> flatten -> Linear -> GELU -> Linear (the embedding).

    Measured with ``stepwise verify``: global average pooling instead of flattening leaves a contrastive NTK spectrum
    that falls 7x from gamma_1 to gamma_2 and 30x to gamma_4 (with a 64-wide hidden layer), so 3000 steps learn one
    mode; flattened 4x4 tokens and 256 hidden units give gamma_1..5 = 0.21, 0.16, 0.10, 0.079, 0.070.
    """

    def __init__(self, in_channels: int, *, rngs: nnx.Rngs):
        self.patch = nnx.Conv(in_channels, CHANNELS, (PATCH, PATCH), strides=(PATCH, PATCH), padding="VALID", rngs=rngs)
        self.blocks = nnx.List([MixerBlock(CHANNELS, rngs=rngs) for _ in range(DEPTH)])
        self.hidden = nnx.Linear(CHANNELS * TOKENS, HIDDEN, rngs=rngs)
        self.out = nnx.Linear(HIDDEN, EMBED_DIM, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.gelu(self.patch(x))
        for block in self.blocks:
            h = block(h)
        h = h.reshape(h.shape[0], -1)
        return self.out(jax.nn.gelu(self.hidden(h)))


def make_model(rngs: nnx.Rngs) -> nnx.Module:
    """The factory ``stepwise verify`` calls: a ConvMixer for single-channel images."""
    return ConvMixer(1, rngs=rngs)
