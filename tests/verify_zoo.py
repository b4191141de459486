"""Small external-style architectures for `stepwise verify` tests (smoke sizes, 8x8x1 digits views).

Our own small versions of what researchers bring: a ResNet with ``nnx.BatchNorm`` (as in the JAX AI stack's
ResNet-18 for PyTorch users), a ViT-style net with ``nnx.Dropout``, LayerNorm and MultiHeadAttention (as in the
Flax NNX ViT example), an MLP-Mixer, a bfloat16 CNN and a model with several outputs; each file-level factory is
``make_*(rngs)`` for ``--model tests/verify_zoo.py:make_*``.
"""

import jax.numpy as jnp
from flax import nnx

from experiments.batchnorm_resnet import BasicBlock  # the BatchNorm basic block of the verify example


class TinyBatchNormMLP(nnx.Module):
    """flatten -> Linear -> BatchNorm -> ReLU -> Linear: the hand-checked reference model (``features``: the
    backbone up to the ReLU, for ``--features features``)."""

    def __init__(self, din: int, hidden: int, dout: int, *, rngs: nnx.Rngs, momentum: float = 0.9):
        self.lin1 = nnx.Linear(din, hidden, rngs=rngs)
        self.bn = nnx.BatchNorm(hidden, momentum=momentum, rngs=rngs)
        self.lin2 = nnx.Linear(hidden, dout, rngs=rngs)

    def features(self, x):
        return nnx.relu(self.bn(self.lin1(x.reshape(x.shape[0], -1))))

    def __call__(self, x):
        return self.lin2(self.features(x))


class TinyDropoutMLP(nnx.Module):
    def __init__(self, din: int, hidden: int, dout: int, *, rngs: nnx.Rngs, rate: float = 0.5):
        self.lin1 = nnx.Linear(din, hidden, rngs=rngs)
        self.drop = nnx.Dropout(rate, rngs=rngs)
        self.lin2 = nnx.Linear(hidden, dout, rngs=rngs)

    def features(self, x):
        return self.drop(nnx.relu(self.lin1(x.reshape(x.shape[0], -1))))

    def __call__(self, x):
        return self.lin2(self.features(x))


class ResNetBN(nnx.Module):
    """A small ResNet with BatchNorm (stem, two stages of basic blocks, global pooling, linear projector);
    ``features`` is the pooled backbone output (``--features features``)."""

    def __init__(self, in_channels: int = 1, width: int = 8, embed_dim: int = 8, *, rngs: nnx.Rngs):
        self.stem = nnx.Conv(in_channels, width, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(width, rngs=rngs)
        self.block1 = BasicBlock(width, width, 1, rngs=rngs)
        self.block2 = BasicBlock(width, 2 * width, 2, rngs=rngs)
        self.head = nnx.Linear(2 * width, embed_dim, rngs=rngs)

    def features(self, x):
        y = nnx.relu(self.bn(self.stem(x)))
        return jnp.mean(self.block2(self.block1(y)), axis=(1, 2))

    def __call__(self, x):
        return self.head(self.features(x))


class EncoderBlock(nnx.Module):
    def __init__(self, dim: int, heads: int, rate: float, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=dim, dropout_rate=rate, decode=False,
                                           deterministic=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp1 = nnx.Linear(dim, 2 * dim, rngs=rngs)
        self.mlp2 = nnx.Linear(2 * dim, dim, rngs=rngs)
        self.drop = nnx.Dropout(rate, rngs=rngs)

    def __call__(self, x):
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp2(nnx.gelu(self.mlp1(self.norm2(x)))))


class TinyViT(nnx.Module):
    """2x2 patches, a class token, positional embeddings, one encoder block with dropout and attention dropout;
    ``features`` is the normalised class token before the head (``--features features``)."""

    def __init__(self, image: int = 8, channels: int = 1, patch: int = 2, dim: int = 16, heads: int = 2,
                 embed_dim: int = 8, rate: float = 0.1, *, rngs: nnx.Rngs):
        n = (image // patch) ** 2
        self.patch = nnx.Conv(channels, dim, (patch, patch), strides=patch, padding="VALID", rngs=rngs)
        self.cls = nnx.Param(jnp.zeros((1, 1, dim), jnp.float32))
        self.pos = nnx.Param(0.02 * nnx.initializers.normal()(rngs.params(), (1, n + 1, dim), jnp.float32))
        self.drop = nnx.Dropout(rate, rngs=rngs)
        self.block = EncoderBlock(dim, heads, rate, rngs=rngs)
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, embed_dim, rngs=rngs)

    def features(self, x):
        p = self.patch(x)
        p = p.reshape(p.shape[0], -1, p.shape[-1])
        cls = jnp.broadcast_to(self.cls[...], (p.shape[0], 1, p.shape[-1]))
        h = self.drop(jnp.concatenate([cls, p], axis=1) + self.pos[...])
        return self.norm(self.block(h))[:, 0]

    def __call__(self, x):
        return self.head(self.features(x))


def make_resnet_bn(rngs: nnx.Rngs) -> nnx.Module:
    return ResNetBN(rngs=rngs)


def make_vit_dropout(rngs: nnx.Rngs) -> nnx.Module:
    return TinyViT(rngs=rngs)


class TwoOutputs(nnx.Module):
    """Returns (logits, latent) or {"logits": ..., "latent": ...}: a classifier head on top of the embedding."""

    def __init__(self, din: int = 64, hidden: int = 32, d: int = 6, classes: int = 10, as_dict: bool = False, *,
                 rngs: nnx.Rngs):
        self.body = nnx.Linear(din, hidden, rngs=rngs)
        self.latent = nnx.Linear(hidden, d, rngs=rngs)
        self.logits = nnx.Linear(d, classes, rngs=rngs)
        self.as_dict = as_dict

    def __call__(self, x):
        z = self.latent(nnx.relu(self.body(x.reshape(x.shape[0], -1))))
        logits = self.logits(z)
        return {"logits": logits, "latent": z} if self.as_dict else (logits, z)


def make_two_outputs(rngs: nnx.Rngs) -> nnx.Module:
    return TwoOutputs(rngs=rngs)


def make_two_outputs_dict(rngs: nnx.Rngs) -> nnx.Module:
    return TwoOutputs(as_dict=True, rngs=rngs)


class MixerBlock(nnx.Module):
    """MLP-Mixer block: token mixing across patches, then channel mixing, each LayerNorm -> MLP -> residual."""

    def __init__(self, tokens: int, dim: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.tok1 = nnx.Linear(tokens, 2 * tokens, rngs=rngs)
        self.tok2 = nnx.Linear(2 * tokens, tokens, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.ch1 = nnx.Linear(dim, 2 * dim, rngs=rngs)
        self.ch2 = nnx.Linear(2 * dim, dim, rngs=rngs)

    def __call__(self, x):  # (batch, tokens, dim)
        y = jnp.swapaxes(self.norm1(x), 1, 2)
        x = x + jnp.swapaxes(self.tok2(nnx.gelu(self.tok1(y))), 1, 2)
        return x + self.ch2(nnx.gelu(self.ch1(self.norm2(x))))


class TinyMixer(nnx.Module):
    """2x2 patches -> two Mixer blocks -> LayerNorm -> mean over tokens -> linear head (as in the MLP-Mixer paper)."""

    def __init__(self, image: int = 8, channels: int = 1, patch: int = 2, dim: int = 16, embed_dim: int = 8, *,
                 rngs: nnx.Rngs):
        tokens = (image // patch) ** 2
        self.patch = nnx.Conv(channels, dim, (patch, patch), strides=patch, padding="VALID", rngs=rngs)
        self.blocks = nnx.List([MixerBlock(tokens, dim, rngs=rngs) for _ in range(2)])
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, embed_dim, rngs=rngs)

    def __call__(self, x):
        p = self.patch(x)
        h = p.reshape(p.shape[0], -1, p.shape[-1])
        for block in self.blocks:
            h = block(h)
        return self.head(jnp.mean(self.norm(h), axis=1))


class Bf16CNN(nnx.Module):
    """A CNN whose parameters and activations are bfloat16 (``param_dtype`` and ``dtype``), as a mixed-precision
    user writes it; it returns bfloat16 embeddings."""

    def __init__(self, channels: int = 1, width: int = 16, embed_dim: int = 8, *, rngs: nnx.Rngs):
        kw = {"dtype": jnp.bfloat16, "param_dtype": jnp.bfloat16, "rngs": rngs}
        self.conv1 = nnx.Conv(channels, width, (3, 3), padding="SAME", **kw)
        self.conv2 = nnx.Conv(width, 2 * width, (3, 3), strides=2, padding="SAME", **kw)
        self.lin = nnx.Linear(2 * width, 64, **kw)
        self.head = nnx.Linear(64, embed_dim, **kw)

    def __call__(self, x):
        y = nnx.relu(self.conv2(nnx.relu(self.conv1(x.astype(jnp.bfloat16)))))
        return self.head(nnx.relu(self.lin(jnp.mean(y, axis=(1, 2)))))


def make_mixer(rngs: nnx.Rngs) -> nnx.Module:
    return TinyMixer(rngs=rngs)


def make_bf16_cnn(rngs: nnx.Rngs) -> nnx.Module:
    return Bf16CNN(rngs=rngs)


class Trunk(nnx.Module):
    def __init__(self, din: int, width: int, *, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(din, width, rngs=rngs)
        self.l2 = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.l2(nnx.relu(self.l1(x.reshape(x.shape[0], -1)))))


class BackboneProjector(nnx.Module):
    """``backbone`` (a submodule taking the images) then a two-layer projector: for ``--features backbone``."""

    def __init__(self, din: int = 64, width: int = 32, d: int = 8, *, rngs: nnx.Rngs):
        self.backbone = Trunk(din, width, rngs=rngs)
        self.proj1 = nnx.Linear(width, width, rngs=rngs)
        self.proj2 = nnx.Linear(width, d, rngs=rngs)

    def __call__(self, x):
        return self.proj2(nnx.relu(self.proj1(self.backbone(x))))

    def pooled(self, x):  # a method works too: --features pooled
        return self.backbone(x)[:, :16]


def make_backbone_projector(rngs: nnx.Rngs) -> nnx.Module:
    return BackboneProjector(rngs=rngs)
