"""Example model for ``stepwise verify`` with BatchNorm: a small CIFAR-style ResNet with ``nnx.BatchNorm``.

    .venv/bin/stepwise verify --model experiments/batchnorm_resnet.py:make_model [--smoke]

Training uses batch statistics per view (Flax's default training mode; running averages carried in the train
state); the NTKs and tracked spectra use ``model.eval()`` with statistics recomputed at the current parameters on
the NTK's training views (results.json ``summary.stateful_layers``). Smoke (digits): ~20 s on an idle 2-core CPU.
"""

import jax.numpy as jnp
from flax import nnx


class BasicBlock(nnx.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus the (projected) shortcut (also ``tests/verify_zoo.py``'s)."""

    def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=stride, padding="SAME", use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(cout, rngs=rngs)
        self.conv2 = nnx.Conv(cout, cout, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(cout, rngs=rngs)
        self.project = stride != 1 or cin != cout
        if self.project:
            self.shortcut = nnx.Conv(cin, cout, (1, 1), strides=stride, use_bias=False, rngs=rngs)
            self.bn_sc = nnx.BatchNorm(cout, rngs=rngs)

    def __call__(self, x):
        y = self.bn2(self.conv2(nnx.relu(self.bn1(self.conv1(x)))))
        return nnx.relu(y + (self.bn_sc(self.shortcut(x)) if self.project else x))


class ResNet(nnx.Module):
    """Stem, two stages of two basic blocks (width, 2 width), global average pooling, a 2-layer projector."""

    def __init__(self, in_channels: int = 1, width: int = 16, embed_dim: int = 16, *, rngs: nnx.Rngs):
        self.stem = nnx.Conv(in_channels, width, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(width, rngs=rngs)
        self.blocks = nnx.List([BasicBlock(width, width, 1, rngs=rngs), BasicBlock(width, width, 1, rngs=rngs),
                                BasicBlock(width, 2 * width, 2, rngs=rngs),
                                BasicBlock(2 * width, 2 * width, 1, rngs=rngs)])
        self.proj1 = nnx.Linear(2 * width, 128, rngs=rngs)
        self.proj2 = nnx.Linear(128, embed_dim, rngs=rngs)

    def __call__(self, x):
        y = nnx.relu(self.bn(self.stem(x)))
        for block in self.blocks:
            y = block(y)
        return self.proj2(nnx.relu(self.proj1(jnp.mean(y, axis=(1, 2)))))


def make_model(rngs: nnx.Rngs) -> nnx.Module:
    return ResNet(rngs=rngs)
