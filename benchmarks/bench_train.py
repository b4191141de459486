"""Training-step benchmark: the project's jitted SSL step (JAX) against the same step written in PyTorch.

``python benchmarks/bench_train.py --out DIR`` (or ``python -m benchmarks.bench_train``, or ``make bench-train``,
which installs PyTorch) writes ``DIR/bench_train.json`` and a bar chart ``DIR/bench_train.png``; exit status 1 when
the CPU-default networks (mlp_digits, cnn_digits) miss the JAX / PyTorch <= 1.5 target. For each network config
both frameworks run, in one process and side by side, the same training step on the same machine: sample a batch
of the on-device images without replacement, make two views (random shift by up to 1 pixel with edge padding, then
additive Gaussian noise of std 0.1), forward both views, the centred linear-theory Barlow Twins loss
``||C - I||_F^2`` (C the symmetrised cross-covariance / n), backward, plain SGD (lr 0.02). Both in float32, from
the same initial weights (the torch networks are built from the JAX modules, and their outputs are checked to
agree).

Timing: compile / warm up both, then ``rounds`` rounds alternating JAX and PyTorch, each timing ``steps``
consecutive steps (JAX: dispatched asynchronously as in ``train_ssl``, then ``block_until_ready`` on the state and
the loss; PyTorch on the CPU is synchronous); the per-step time is the median over rounds. ``ratio_vs_torch`` is
JAX time / PyTorch time, per config and as the geometric mean over configs.

For the ResNet config, ``profile`` times sampling + augmentation, forward-only (both views and the loss), forward +
backward and the full step separately in both frameworks (each JAX part jitted on its own), the network's
convolutions alone, and the compiled JAX step per HLO op kind (``jax.profiler``). ``tried`` lists what was tried
to speed the JAX step up: XLA CPU flags, each in a worker process timed in rounds alternating with a default-flag
worker (effect = ratio of the medians); ``tried_not_rerun`` lists what was measured during development only.
``load`` records how much CPU other processes used while timing (ratios taken under load are not meaningful).

PyTorch is a benchmark-only dependency (``pip install torch==2.13.0``); it is imported lazily, so this module
imports without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CONFIGS", "BenchConfig", "assemble_results", "main", "make_jax_step", "run"]

LR = 0.02
SHIFT, NOISE_STD = 1, 0.1
N_IMAGES = 1500  # the CPU default's training set size (DeepConfig.n_train)
TORCH_VERSION = "2.13.0"


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One network config: ``stepwise.models.build_model(model, input_shape, **model_kwargs)`` at ``batch``."""

    model: str
    input_shape: tuple[int, int, int]
    batch: int
    model_kwargs: tuple[tuple[str, Any], ...] = ()
    description: str = ""

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_kwargs)


CONFIGS: dict[str, BenchConfig] = {
    "mlp_digits": BenchConfig(
        "mlp", (8, 8, 1), 256, (("hidden", (256, 256)), ("embed_dim", 16)),
        "CPU default of the deep experiment: MLP (256, 256) -> 16 on 8x8x1 digits, batch 256",
    ),
    "cnn_digits": BenchConfig(
        "cnn", (8, 8, 1), 256, (("channels", (32, 64)), ("embed_dim", 64)),
        "SmallCNN (32, 64) channels -> 64 on 8x8x1 digits, batch 256",
    ),
    "resnet18_w025_32": BenchConfig(
        "resnet18", (32, 32, 3), 64, (("width", 0.25), ("embed_dim", 16)),
        "CIFAR ResNet-18 (GroupNorm) at width 0.25 -> 16 on 32x32x3 patches, batch 64",
    ),
}
CPU_DEFAULT = "mlp_digits"
# Timed rounds per framework (the statistic is their median). Seven, not three: on the shared 2-core CPU one round of
# the ResNet step moved by up to 40% within a run (PyTorch 465 / 417 / 329 ms in one run of three rounds).
ROUNDS = 7
PROFILED = "resnet18_w025_32"
VARIANTS = ("one_forward", "no_donate", "ynnpack_on", "recomputed_conv_inputs")


# ----------------------------------------------------------------------------------------------------------------
# Result assembly (pure; tested without torch).


def geometric_mean(values: Sequence[float]) -> float:
    values = [float(v) for v in values]
    if not values or min(values) <= 0:
        raise ValueError(f"the geometric mean needs positive values; got {values}")
    return math.exp(sum(math.log(v) for v in values) / len(values))


def assemble_results(per_config: Mapping[str, Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """The ``bench_train.json`` dictionary from per-config measurements.

    Args:
      per_config: name -> at least ``jax_ms_per_step`` and ``torch_ms_per_step`` (other keys are kept).
      **extra: further top-level entries (device info, profile, tried, ...).

    Returns:
      ``{"configs": {name: {..., "ratio_vs_torch": jax / torch}}, "ratio_vs_torch": geometric mean over configs,
      "cpu_default_ratio": ratio of mlp_digits (None when it was not run), **extra}``.
    """
    if not per_config:
        raise ValueError("no configs were measured")
    configs = {}
    for name, m in per_config.items():
        jax_ms, torch_ms = float(m["jax_ms_per_step"]), float(m["torch_ms_per_step"])
        if not (jax_ms > 0 and torch_ms > 0):
            raise ValueError(f"{name}: per-step times must be positive (jax {jax_ms} ms, torch {torch_ms} ms)")
        configs[name] = {**m, "jax_ms_per_step": jax_ms, "torch_ms_per_step": torch_ms,
                         "ratio_vs_torch": jax_ms / torch_ms}
    ratios = {name: c["ratio_vs_torch"] for name, c in configs.items()}
    return {
        "benchmark": "train_step",
        "what": "time per SSL training step (sample batch, two augmented views, forward both, centred Barlow Twins "
        "||C - I||^2, backward, SGD lr 0.02), JAX (stepwise.training.ssl.make_train_step) vs the same step in PyTorch, "
        "float32, same process and machine, median over alternating rounds",
        "ratio_vs_torch": geometric_mean(list(ratios.values())),
        "ratio_vs_torch_per_config": ratios,
        "cpu_default_ratio": ratios.get(CPU_DEFAULT),
        "configs": configs,
        **extra,
    }


def write_outputs(results: Mapping[str, Any], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``out_dir/bench_train.json`` and the bar chart ``out_dir/bench_train.png``."""
    from stepwise.io import write_json_atomic
    from stepwise.plots._mpl import pyplot, save_atomic

    out_dir = Path(out_dir)
    json_path = write_json_atomic(out_dir / "bench_train.json", results)
    plt = pyplot()
    names = list(results["configs"])
    jax_ms = [results["configs"][n]["jax_ms_per_step"] for n in names]
    torch_ms = [results["configs"][n]["torch_ms_per_step"] for n in names]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    for ax, name, j, t in zip(axes[0], names, jax_ms, torch_ms):
        ax.bar(["JAX", "PyTorch"], [j, t], color=["tab:blue", "tab:orange"])
        ax.set_title(f"{name}\nJAX / torch = {j / t:.2f}", fontsize=9)
        ax.set_ylabel("ms per training step")
    host = results.get("host", {})
    extensions = host.get("vector_extensions", ())
    widest = next((e for e in ("avx512f", "avx2", "avx", "sve", "asimd") if e in extensions), None)
    cpu = ", ".join(str(v) for v in (host.get("cpu_model"), widest) if v)
    fig.suptitle(f"training step, {host.get('cpus', '?')} CPUs{f' ({cpu})' if cpu else ''}; "
                 f"geometric-mean ratio {results['ratio_vs_torch']:.2f}", fontsize=10)
    fig.tight_layout()
    png_path = save_atomic(fig, out_dir / "bench_train.png")
    plt.close(fig)
    return json_path, png_path


# ----------------------------------------------------------------------------------------------------------------
# The JAX side: the project's own training step.


def _images(cfg: BenchConfig, n: int = N_IMAGES, seed: int = 0) -> np.ndarray:
    """Standard-normal (n, H, W, C) float32 images (values do not change the cost of a step)."""
    return np.random.default_rng(seed).normal(size=(n, *cfg.input_shape)).astype(np.float32)


def _loss_fn():
    from stepwise.losses import get_loss

    return get_loss("barlow_twins_theory", center=True)


def _augmentation():
    from stepwise.data.augment import Augmentation

    return Augmentation(shift=SHIFT, noise_std=NOISE_STD)


@dataclasses.dataclass
class JaxBench:
    """The jitted step ``step(state, data) -> (state, loss)`` with its replicated state and data."""

    step: Callable
    state: Any
    data: Any
    module: Any
    pure: Any
    params: int

    def run(self, k: int) -> float:
        """Run ``k`` steps (asynchronous dispatch), wait for the result; returns the wall time in seconds."""
        import jax

        state = self.state
        t0 = time.perf_counter()
        for _ in range(k):
            state, loss = self.step(state, self.data)
        jax.block_until_ready((state, loss))
        elapsed = time.perf_counter() - t0
        self.state = state
        return elapsed


def make_jax_step(cfg: BenchConfig, *, images: np.ndarray | None = None, seed: int = 0,
                  variant: str | None = None, devices: Sequence[Any] | None = None) -> JaxBench:
    """The project's training step (:func:`stepwise.training.ssl.make_train_step`) for ``cfg``, state and data
    placed on a replicated ``NamedSharding`` as in ``train_ssl`` (so the first call compiles once).

    ``variant`` (tried for speed; None is the project's step): ``"one_forward"`` runs the network once on both views
    stacked along the batch axis; ``"no_donate"`` does not donate the state; ``"ynnpack_on"`` compiles with XLA's
    default options (``jax.jit`` instead of :func:`stepwise.training.compilation.jit_step`);
    ``"recomputed_conv_inputs"`` traces the network without :func:`stepwise.models.nets._stored` (XLA may then
    recompute each convolution's input inside the kernel-gradient transposes, as before it was added).
    """
    import jax
    import jax.numpy as jnp
    import optax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from stepwise.models import build_model, param_count, pure_model
    from stepwise.training.ssl import TrainState, make_train_step

    module = build_model(cfg.model, cfg.input_shape, seed=seed, **cfg.kwargs)
    pure = pure_model(module)
    images = _images(cfg) if images is None else np.asarray(images, np.float32)
    tx = optax.sgd(LR)
    mesh = Mesh(np.array(jax.devices() if devices is None else list(devices)), ("data",))
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    if variant is None:
        step = make_train_step(pure.apply, _loss_fn(), tx, _augmentation(), cfg.batch, batch_sharding)
    else:
        step = _variant_step(pure.apply, _loss_fn(), tx, _augmentation(), cfg.batch, batch_sharding, variant)
    # The step donates its state: give it copies, so that the module (and pure.params) keep their weights for the
    # PyTorch twin and the parity check.
    params = jax.tree.map(lambda x: jnp.array(x, copy=True), pure.params)
    state = TrainState(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32),
                       key=jax.random.key(seed))
    state = jax.device_put(state, replicated)
    data = jax.device_put(jnp.asarray(images), replicated)
    return JaxBench(step=step, state=state, data=data, module=module, pure=pure, params=param_count(pure.params))


def _variant_step(apply, loss_fn, tx, aug, batch_size: int, batch_sharding, variant: str):
    """``stepwise.training.ssl.make_train_step`` with one change (for the ``tried`` list)."""
    import jax
    import jax.numpy as jnp
    import optax

    from unittest import mock

    from stepwise.data.augment import make_pairs
    from stepwise.models import nets
    from stepwise.training.compilation import jit_step

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    if variant == "recomputed_conv_inputs":
        apply_stored = apply

        def apply(params, x):  # the patch is in force while the step is traced, which is when it matters
            with mock.patch.object(nets, "_stored", lambda v: v):
                return apply_stored(params, x)

    def step(state, data):
        key = jax.random.fold_in(state.key, state.step)
        k_idx, k_aug = jax.random.split(key)
        idx = jax.random.choice(k_idx, data.shape[0], (batch_size,), replace=False)
        batch = jax.lax.with_sharding_constraint(data[idx], batch_sharding)
        v1, v2 = make_pairs(aug, k_aug, batch)

        def loss_of(params):
            if variant == "one_forward":
                z = apply(params, jnp.concatenate([v1, v2]))
                return loss_fn(z[:batch_size], z[batch_size:])
            return loss_fn(apply(params, v1), apply(params, v2))

        loss, grads = jax.value_and_grad(loss_of)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return dataclasses.replace(state, params=params, opt_state=opt_state, step=state.step + 1), loss

    if variant == "ynnpack_on":
        return jax.jit(step, donate_argnums=0)
    return jit_step(step, donate_argnums=() if variant == "no_donate" else 0)


# ----------------------------------------------------------------------------------------------------------------
# The PyTorch side: the same networks (built from the JAX modules' weights), loss, augmentation, batch and SGD.


def _import_torch():
    try:
        import torch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"the training-step benchmark compares against PyTorch, a benchmark-only dependency: "
            f"`{sys.executable} -m pip install torch=={TORCH_VERSION}` (or `make bench-train`, which installs it)"
        ) from err
    return torch


def _np(variable) -> np.ndarray:
    return np.array(variable[...], dtype=np.float32)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """XLA / flax ``padding="SAME"``: (low, high) padding of one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def torch_network(module, input_shape: tuple[int, int, int]):
    """A ``torch.nn.Module`` computing exactly what the flax ``module`` (MLP, SmallCNN or ResNet18) computes, with
    its weights copied, on NCHW images. Raises ValueError for other module types."""
    torch = _import_torch()
    import torch.nn.functional as F
    from torch import nn

    from stepwise.models.nets import MLP, ResNet18, SmallCNN

    def linear(layer) -> nn.Linear:
        kernel = _np(layer.kernel)
        lin = nn.Linear(kernel.shape[0], kernel.shape[1], bias=layer.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(kernel.T.copy()))
            if layer.bias is not None:
                lin.bias.copy_(torch.from_numpy(_np(layer.bias)))
        return lin

    class Dense(nn.Module):
        """stepwise.models.nets._Dense: Linear layers with ReLU between them."""

        def __init__(self, dense, first_kernel_rows=None):
            super().__init__()
            self.layers = nn.ModuleList([linear(layer) for layer in dense.layers])
            if first_kernel_rows is not None and len(self.layers):  # NHWC-flatten rows -> NCHW-flatten rows
                with torch.no_grad():
                    w = self.layers[0].weight
                    w.copy_(w[:, first_kernel_rows])

        def forward(self, h):
            for i, layer in enumerate(self.layers):
                h = layer(h) if i == 0 else layer(F.relu(h))
            return h

    class ConvNorm(nn.Module):
        """stepwise.models.nets._ConvNorm: SAME conv [+ GroupNorm(gcd(32, C), eps 1e-6)], no activation."""

        def __init__(self, conv_norm, hw: tuple[int, int]):
            super().__init__()
            conv = conv_norm.conv
            kernel = _np(conv.kernel)  # (kh, kw, c_in, c_out)
            kh, kw, c_in, c_out = kernel.shape
            stride = conv.strides if isinstance(conv.strides, int) else conv.strides[0]
            pads = [_same_padding(hw[0], kh, stride), _same_padding(hw[1], kw, stride)]
            symmetric = all(lo == hi for lo, hi in pads)
            # Symmetric SAME padding goes into the conv; asymmetric (stride 2, even size: (0, 1)) is an explicit pad.
            self.pad = None if symmetric else (pads[1][0], pads[1][1], pads[0][0], pads[0][1])
            self.conv = nn.Conv2d(c_in, c_out, (kh, kw), stride=stride,
                                  padding=(pads[0][0], pads[1][0]) if symmetric else 0, bias=conv.bias is not None)
            with torch.no_grad():
                self.conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
                if conv.bias is not None:
                    self.conv.bias.copy_(torch.from_numpy(_np(conv.bias)))
            self.norm = None
            if conv_norm.norm is not None:
                gn = conv_norm.norm
                self.norm = nn.GroupNorm(gn.num_groups, c_out, eps=gn.epsilon)
                with torch.no_grad():
                    self.norm.weight.copy_(torch.from_numpy(_np(gn.scale)))
                    self.norm.bias.copy_(torch.from_numpy(_np(gn.bias)))
            self.out_hw = (-(-hw[0] // stride), -(-hw[1] // stride))
            self.conv_spec = (hw[0], hw[1], c_in, c_out, kh, stride)  # for the convolution profile

        def forward(self, x):
            if self.pad is not None:
                x = F.pad(x, self.pad)
            x = self.conv(x)
            return x if self.norm is None else self.norm(x)

    class TorchMLP(nn.Module):
        def __init__(self, m):
            super().__init__()
            h, w, c = m.input_shape
            # row of the NCHW flatten (c, i, j) in the NHWC flatten order (i, j, c)
            rows = np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
            self.backbone = Dense(m.backbone, first_kernel_rows=torch.from_numpy(rows))
            self.projector = Dense(m.projector)

        def forward(self, x):
            return self.projector(self.backbone(x.flatten(1)))

    class TorchSmallCNN(nn.Module):
        def __init__(self, m):
            super().__init__()
            h, w, _ = m.input_shape
            convs = []
            for conv, window in zip(m.convs, m.pool_windows):
                convs.append(ConvNorm(conv, (h, w)))
                h, w = h // window[0], w // window[1]
            self.convs = nn.ModuleList(convs)
            self.pool_windows = m.pool_windows
            self.head, self.projector = Dense(m.head), Dense(m.projector)

        def forward(self, x):
            for conv, window in zip(self.convs, self.pool_windows):
                x = F.avg_pool2d(F.relu(conv(x)), window)
            return self.projector(self.head(x.mean(dim=(2, 3))))

    class Block(nn.Module):
        def __init__(self, b, hw):
            super().__init__()
            self.conv1 = ConvNorm(b.conv1, hw)
            self.conv2 = ConvNorm(b.conv2, self.conv1.out_hw)
            self.shortcut = None if b.shortcut is None else ConvNorm(b.shortcut, hw)
            self.out_hw = self.conv2.out_hw

        def forward(self, x):
            y = self.conv2(F.relu(self.conv1(x)))
            return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))

    class TorchResNet18(nn.Module):
        def __init__(self, m):
            super().__init__()
            h, w, _ = m.input_shape
            self.stem = ConvNorm(m.stem, (h, w))
            hw, blocks = self.stem.out_hw, []
            for b in m.blocks:
                blocks.append(Block(b, hw))
                hw = blocks[-1].out_hw
            self.blocks = nn.ModuleList(blocks)
            self.head, self.projector = Dense(m.head), Dense(m.projector)

        def forward(self, x):
            x = F.relu(self.stem(x))
            for block in self.blocks:
                x = block(x)
            return self.projector(self.head(x.mean(dim=(2, 3))))

    for cls, torch_cls in ((MLP, TorchMLP), (SmallCNN, TorchSmallCNN), (ResNet18, TorchResNet18)):
        if isinstance(module, cls):
            return torch_cls(module).float()
    raise ValueError(f"no PyTorch twin for {type(module).__name__}")


def torch_param_count(net) -> int:
    return sum(p.numel() for p in net.parameters())


def torch_bt_loss(z1, z2):
    """stepwise.losses.barlow_twins_theory(z1, z2, center=True) in torch."""
    torch = _import_torch()
    n, d = z1.shape
    z1 = z1 - z1.mean(dim=0, keepdim=True)
    z2 = z2 - z2.mean(dim=0, keepdim=True)
    g = z1.T @ z2
    r = (g + g.T) * (0.5 / n) - torch.eye(d, dtype=z1.dtype, device=z1.device)
    return (r * r).sum()


def torch_augment(x, generator=None):
    """Augmentation(shift=1, noise_std=0.1) on an (N, C, H, W) batch, vectorised: edge-pad by the shift, take a
    uniformly placed H x W window per image (advanced indexing), add Gaussian noise."""
    torch = _import_torch()
    import torch.nn.functional as F

    n, c, h, w = x.shape
    s = SHIFT
    padded = F.pad(x, (s, s, s, s), mode="replicate")
    dev = x.device  # the generator must live on the same device (a CUDA generator for a GPU batch)
    oy = torch.randint(0, 2 * s + 1, (n, 1), generator=generator, device=dev)
    ox = torch.randint(0, 2 * s + 1, (n, 1), generator=generator, device=dev)
    rows = (oy + torch.arange(h, device=dev))[:, None, :, None]
    cols = (ox + torch.arange(w, device=dev))[:, None, None, :]
    out = padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                 rows, cols]
    noise = torch.randn(out.shape, generator=generator, dtype=out.dtype, device=dev)
    return out + NOISE_STD * noise


@dataclasses.dataclass
class TorchBench:
    """The PyTorch training step as a closure ``step() -> loss`` over its network, optimiser and data."""

    step: Callable
    net: Any
    params: int
    views: Callable  # () -> (v1, v2): batch sampling and both views
    forward: Callable  # () -> loss (no grad)
    forward_backward: Callable  # () -> loss (gradients accumulated, no update)

    def run(self, k: int) -> float:
        t0 = time.perf_counter()
        for _ in range(k):
            self.step()  # synchronous on the CPU
        return time.perf_counter() - t0


def make_torch_step(module, cfg: BenchConfig, *, images: np.ndarray | None = None, seed: int = 0,
                    device: str = "cpu") -> TorchBench:
    """The PyTorch twin of :func:`make_jax_step`: same network and weights, loss, augmentation, batch and SGD.

    ``device="cuda"`` puts the network, the images and the random generator on the GPU (``run`` then returns
    after the queued work is enqueued: callers synchronise, see ``benchmarks/gpu/bench_train.py``).
    """
    torch = _import_torch()

    net = torch_network(module, cfg.input_shape).to(device)
    images = _images(cfg) if images is None else np.asarray(images, np.float32)
    data = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(device)  # NCHW, contiguous
    gen = torch.Generator(device=device).manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    n = data.shape[0]

    def views():
        idx = torch.randperm(n, generator=gen, device=device)[: cfg.batch]  # without replacement, as jax.random.choice
        batch = data[idx]
        return torch_augment(batch, gen), torch_augment(batch, gen)

    def forward_backward():
        v1, v2 = views()
        loss = torch_bt_loss(net(v1), net(v2))
        loss.backward()
        return loss.detach()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = forward_backward()
        opt.step()
        return loss

    def forward():
        with torch.no_grad():
            v1, v2 = views()
            return torch_bt_loss(net(v1), net(v2))

    def fwd_bwd():
        opt.zero_grad(set_to_none=True)
        return forward_backward()

    return TorchBench(step=step, net=net, params=torch_param_count(net), views=views, forward=forward,
                      forward_backward=fwd_bwd)


def parity(jb: JaxBench, tb: TorchBench, cfg: BenchConfig, n: int = 8) -> dict[str, float]:
    """Max |difference| of the two networks' outputs (and the loss) on the same images, with the initial weights.

    Uses the JAX module's parameters (the step may already have changed ``jb.state``) and a fresh torch twin.
    """
    torch = _import_torch()
    import jax
    import jax.numpy as jnp

    x = _images(cfg, n=2 * n, seed=1)
    net = torch_network(jb.module, cfg.input_shape)
    z_jax = np.asarray(jax.jit(jb.pure.apply)(jb.pure.params, jnp.asarray(x)))
    with torch.no_grad():
        z_torch = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
        z = torch.from_numpy(z_jax.copy())
        loss_torch = float(torch_bt_loss(z[:n], z[n:]))
    loss_jax = float(_loss_fn()(jnp.asarray(z_jax[:n]), jnp.asarray(z_jax[n:])))
    return {
        "output_max_abs_diff": float(np.max(np.abs(z_jax - z_torch))),
        "output_max_abs": float(np.max(np.abs(z_jax))),
        "loss_rel_diff": abs(loss_jax - loss_torch) / max(abs(loss_jax), 1e-30),
    }


# ----------------------------------------------------------------------------------------------------------------
# Timing.


def _round_ms(run: Callable[[int], float], k: int) -> float:
    return run(k) / k * 1e3


def calibrate_steps(run: Callable[[int], float], round_seconds: float, *, lo: int = 2, hi: int = 5000) -> int:
    """Steps per round so that one round takes about ``round_seconds`` (from two timed steps)."""
    per_step = run(2) / 2
    return int(min(max(math.ceil(round_seconds / max(per_step, 1e-6)), lo), hi))


def warm_up(run: Callable[[int], float], round_seconds: float, steps: int | None) -> int:
    """Compile / warm up (one step, then about one round's worth: XLA CPU's first steps are slower while the host
    allocator settles) and return the steps per round (``steps`` if given)."""
    run(1)
    k = calibrate_steps(run, round_seconds) if steps is None else steps
    run(k)
    return k


def time_side_by_side(runs: Mapping[str, Callable[[int], float]], *, rounds: int, round_seconds: float,
                      steps: int | None = None) -> dict[str, dict[str, Any]]:
    """Warm up each, then ``rounds`` rounds of ``k`` steps each, alternating the order every round.

    Returns name -> {"ms_per_step": median over rounds, "ms_per_step_rounds": [...], "steps_per_round": k}.
    """
    ks = {name: warm_up(run, round_seconds, steps) for name, run in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            times[name].append(_round_ms(runs[name], ks[name]))
    return {name: {"ms_per_step": statistics.median(t), "ms_per_step_rounds": t, "steps_per_round": ks[name]}
            for name, t in times.items()}


class CpuMeter:
    """CPU used by other processes while timing: (machine busy time - this process's CPU time) / wall time, in
    cores, from /proc/stat (None where there is none). The frameworks compete with such load very differently:
    PyTorch's OpenMP threads meet at a barrier after every op, so a core taken by another process can stall each
    op for a scheduler time slice (measured here: the MLP step went from ~4.7 ms to ~450 ms), while XLA's
    work-stealing thread pool degrades gracefully. Ratios measured under load are therefore not meaningful."""

    def __init__(self, pids: Sequence[int] = ()):
        self.pids = tuple(pids)  # our worker processes, counted as ours

    def __enter__(self):
        self._t, self._busy, self._own = time.perf_counter(), self._machine_busy(), self._own_cpu()
        self.other_cores: float | None = None
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self._t
        busy = self._machine_busy()
        if busy is not None and self._busy is not None and wall > 0:
            self.other_cores = max(0.0, (busy - self._busy - (self._own_cpu() - self._own)) / wall)
        return False

    def _own_cpu(self) -> float:
        t = os.times()
        own = t.user + t.system
        for pid in self.pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                own += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
            except (OSError, ValueError, IndexError):
                pass
        return own

    @staticmethod
    def _machine_busy() -> float | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is in user)
        return busy / os.sysconf("SC_CLK_TCK")


OTHER_LOAD_WARN_CORES = 0.25


def _jit_timer(fn: Callable, *args) -> Callable[[int], float]:
    """``run(k)``: call the jitted ``fn(*args)`` k times (asynchronously), block, return seconds."""
    import jax

    def run(k: int) -> float:
        t0 = time.perf_counter()
        out = None
        for _ in range(k):
            out = fn(*args)
        jax.block_until_ready(out)
        return time.perf_counter() - t0

    return run


def _torch_timer(fn: Callable) -> Callable[[int], float]:
    def run(k: int) -> float:
        t0 = time.perf_counter()
        for _ in range(k):
            fn()  # synchronous on the CPU
        return time.perf_counter() - t0

    return run


def measure_config(name: str, *, rounds: int, round_seconds: float, steps: int | None = None,
                   keep: bool = False) -> tuple[dict[str, Any], tuple | None]:
    """JAX and PyTorch step of ``CONFIGS[name]`` side by side (see the module docstring)."""
    cfg = CONFIGS[name]
    t0 = time.perf_counter()
    jb = make_jax_step(cfg)
    jb.run(1)
    compile_s = time.perf_counter() - t0
    tb = make_torch_step(jb.module, cfg)
    if jb.params != tb.params:
        raise AssertionError(f"{name}: parameter counts differ: JAX {jb.params}, PyTorch {tb.params}")
    check = parity(jb, tb, cfg)
    if check["output_max_abs_diff"] > 1e-4 * max(1.0, check["output_max_abs"]) or check["loss_rel_diff"] > 1e-4:
        raise AssertionError(f"{name}: the PyTorch twin does not compute the same network: {check}")
    with CpuMeter() as meter:
        timed = time_side_by_side({"jax": jb.run, "torch": tb.run}, rounds=rounds, round_seconds=round_seconds,
                                  steps=steps)
    result = {
        "jax_ms_per_step": timed["jax"]["ms_per_step"],
        "torch_ms_per_step": timed["torch"]["ms_per_step"],
        "params": jb.params,
        "batch": cfg.batch,
        "input_shape": list(cfg.input_shape),
        "model": cfg.model,
        "model_kwargs": cfg.kwargs,
        "description": cfg.description,
        "jax_ms_per_step_rounds": timed["jax"]["ms_per_step_rounds"],
        "torch_ms_per_step_rounds": timed["torch"]["ms_per_step_rounds"],
        "steps_per_round": {"jax": timed["jax"]["steps_per_round"], "torch": timed["torch"]["steps_per_round"]},
        "jax_first_call_s": compile_s,
        "other_processes_cpu_cores": meter.other_cores,
        "parity": check,
    }
    return result, ((jb, tb) if keep else None)


# ----------------------------------------------------------------------------------------------------------------
# Profile: where the time of a step goes.


def profile_step(name: str, jb: JaxBench, tb: TorchBench, *, rounds: int, round_seconds: float) -> dict[str, Any]:
    """Time sampling + augmentation, forward (both views + loss), forward + backward and the full step, in both
    frameworks (each JAX part jitted on its own; all eight timed in alternating rounds), plus the network's
    convolutions alone."""
    import jax
    import jax.numpy as jnp

    from stepwise.data.augment import make_pairs
    from stepwise.training.compilation import jit_step

    cfg = CONFIGS[name]
    aug, loss_fn, apply = _augmentation(), _loss_fn(), jb.pure.apply

    def views(key, data):
        k_idx, k_aug = jax.random.split(key)
        idx = jax.random.choice(k_idx, data.shape[0], (cfg.batch,), replace=False)
        return make_pairs(aug, k_aug, data[idx])

    def loss_of(params, key, data):
        v1, v2 = views(key, data)
        return loss_fn(apply(params, v1), apply(params, v2))

    # a copy: the step (timed below too) donates jb.state
    params = jax.tree.map(lambda x: jnp.array(x, copy=True), jb.state.params)
    key = jax.random.fold_in(jax.random.key(0), 7)
    parts = ("sample_augment", "forward", "forward_backward", "step")
    runs = {
        "jax/sample_augment": _jit_timer(jit_step(views), key, jb.data),
        "jax/forward": _jit_timer(jit_step(loss_of), params, key, jb.data),
        "jax/forward_backward": _jit_timer(jit_step(jax.value_and_grad(loss_of)), params, key, jb.data),
        "jax/step": jb.run,
        "torch/sample_augment": _torch_timer(tb.views),
        "torch/forward": _torch_timer(tb.forward),
        "torch/forward_backward": _torch_timer(tb.forward_backward),
        "torch/step": tb.run,
    }
    with CpuMeter() as meter:
        timed = time_side_by_side(runs, rounds=rounds, round_seconds=round_seconds)

    def split(framework):
        ms = {part: timed[f"{framework}/{part}"]["ms_per_step"] for part in parts}
        ms["derived"] = {
            "network_forward_and_loss": ms["forward"] - ms["sample_augment"],
            "backward": ms["forward_backward"] - ms["forward"],
            "sgd_update_and_rest": ms["step"] - ms["forward_backward"],
        }
        return ms

    out: dict[str, Any] = {"jax_ms": split("jax"), "torch_ms": split("torch"),
                           "other_processes_cpu_cores": meter.other_cores}
    out["ratio_vs_torch"] = {part: out["jax_ms"][part] / out["torch_ms"][part] for part in parts}
    out["convolutions"] = conv = profile_convolutions(tb.net, cfg.batch, views_per_step=2)
    out["convolution_share_of_step"] = {
        "jax": conv["jax_forward_backward_ms"] / out["jax_ms"]["step"],
        "torch": conv["torch_forward_backward_ms"] / out["torch_ms"]["step"],
    }
    # the step minus its convolutions timed alone: GroupNorm, ReLU, residual adds, layout changes, augmentation...
    out["non_convolution_ms"] = {
        "jax": out["jax_ms"]["step"] - conv["jax_forward_backward_ms"],
        "torch": out["torch_ms"]["step"] - conv["torch_forward_backward_ms"],
    }
    out["what"] = (
        "per-part times, each part a separate jitted function (JAX) / call (PyTorch), median over alternating "
        "rounds: sample_augment = batch sampling and both views; forward = that + both forward passes + loss; "
        "forward_backward = that + gradients; step = that + SGD update. 'convolutions': each distinct conv layer "
        "of the network alone (forward, and forward + gradients w.r.t. input and kernel) times its count and 2 "
        "views; 'xla_ops': the compiled JAX step's time per HLO op kind. The parts are compiled separately, so XLA "
        "fuses them differently: differences of a few percent (e.g. a negative 'sgd_update_and_rest') are that and "
        "noise; the SGD update itself is negligible"
    )
    return out


def profile_convolutions(net, batch: int, *, views_per_step: int = 2, reps: int = 10) -> dict[str, Any]:
    """Each distinct convolution of the torch twin ``net`` (same shapes as the JAX network) timed alone in both
    frameworks: forward, and forward + gradients w.r.t. input and kernel."""
    torch = _import_torch()
    import torch.nn.functional as F

    import jax
    import jax.numpy as jnp

    from stepwise.training.compilation import jit_step

    counts: dict[tuple, int] = {}
    for m in net.modules():
        spec = getattr(m, "conv_spec", None)
        if spec is not None:
            counts[spec] = counts.get(spec, 0) + 1
    rng = np.random.default_rng(0)
    layers, totals = [], dict.fromkeys(("jax_forward_ms", "jax_forward_backward_ms", "torch_forward_ms",
                                         "torch_forward_backward_ms"), 0.0)
    for (h, w, c_in, c_out, k, stride), count in counts.items():
        x = rng.normal(size=(batch, h, w, c_in)).astype(np.float32)
        kern = (0.1 * rng.normal(size=(k, k, c_in, c_out))).astype(np.float32)

        def conv(x, kern, stride=stride):  # what flax's nnx.Conv calls
            return jax.lax.conv_general_dilated(x, kern, (stride, stride), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))

        xj, kj = jnp.asarray(x), jnp.asarray(kern)
        gj = jnp.ones(conv(xj, kj).shape, jnp.float32)
        fwd = jit_step(conv)  # compiled as the training step is
        fwd_bwd = jit_step(lambda x, kern, g: jax.vjp(conv, x, kern)[1](g))
        pads = [_same_padding(h, k, stride), _same_padding(w, k, stride)]
        symmetric = all(lo == hi for lo, hi in pads)
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
        kt = torch.from_numpy(kern.transpose(3, 2, 0, 1).copy()).requires_grad_()

        def tconv(xt=xt, kt=kt, pads=pads, symmetric=symmetric, stride=stride):
            if symmetric:
                return F.conv2d(xt, kt, stride=stride, padding=(pads[0][0], pads[1][0]))
            return F.conv2d(F.pad(xt, (pads[1][0], pads[1][1], pads[0][0], pads[0][1])), kt, stride=stride)

        gt = torch.ones(tconv().shape)

        def tfwd(tconv=tconv):
            with torch.no_grad():
                return tconv()

        def tfwd_bwd(tconv=tconv, gt=gt, xt=xt, kt=kt):
            return torch.autograd.grad(tconv(), (xt, kt), gt)

        times = {}
        for label, run in (("jax_forward_ms", _jit_timer(fwd, xj, kj)),
                           ("jax_forward_backward_ms", _jit_timer(fwd_bwd, xj, kj, gj)),
                           ("torch_forward_ms", _torch_timer(tfwd)),
                           ("torch_forward_backward_ms", _torch_timer(tfwd_bwd))):
            run(2)
            times[label] = statistics.median(_round_ms(run, reps) for _ in range(3))
            totals[label] += times[label] * count * views_per_step
        layers.append({"input_hw": [h, w], "c_in": c_in, "c_out": c_out, "kernel": k, "stride": stride,
                       "count": count, **times,
                       "ratio_forward_backward": times["jax_forward_backward_ms"] / times["torch_forward_backward_ms"]})
    return {**totals, "ratio_forward": totals["jax_forward_ms"] / totals["torch_forward_ms"],
            "ratio_forward_backward": totals["jax_forward_backward_ms"] / totals["torch_forward_backward_ms"],
            "batch_per_view": batch, "layers": layers}


def xla_op_breakdown(jb: JaxBench, steps: int = 4, top: int = 12) -> dict[str, Any]:
    """Per-HLO-op time of the compiled step from a ``jax.profiler`` trace, summed by op kind (the name without its
    ``.N`` suffix). XLA's CPU runtime runs independent ops concurrently on its threads, so the sum exceeds the wall
    time: read the shares, not the sum."""
    import collections
    import gzip
    import re
    import tempfile

    import jax

    jb.run(2)
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            jb.run(steps)
        traces = sorted(Path(tmp).rglob("*perfetto_trace.json.gz"))
        if not traces:
            raise RuntimeError("jax.profiler wrote no perfetto trace")
        with gzip.open(traces[0]) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    skip = ("$", "ThunkExecutor", "PjitFunction", "SlinkyThreadPool", "CommonPjRt", "PjRt")
    by_kind: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") == "X" and name and not name.startswith(skip):
            kind = re.sub(r"(\.\d+)+$", "", name)
            by_kind[kind] += e.get("dur", 0) / 1e3 / steps
            count[kind] += 1
    total = sum(by_kind.values())
    kinds = [{"op": k, "ms_per_step": v, "share": v / total, "ops_per_step": count[k] // steps}
             for k, v in by_kind.most_common(top)]
    return {"summed_op_ms_per_step": total, "top": kinds,
            "what": "jax.profiler trace of the compiled step: time per op kind (summed over XLA's threads)"}


# ----------------------------------------------------------------------------------------------------------------
# What was tried to speed up the JAX step. XLA flags are read once, when the backend starts, so each attempt runs
# in its own worker process; to be robust to the machine's changing load, every attempt is timed in rounds
# alternating with a baseline worker (default flags, same step), and its effect is the ratio of the two medians.


@dataclasses.dataclass(frozen=True)
class Attempt:
    name: str
    description: str
    xla_flags: str = ""
    variant: str | None = None
    configs: tuple[str, ...] = (PROFILED,)


ATTEMPTS: tuple[Attempt, ...] = (
    Attempt("ynnpack_on", "the step compiled with XLA's default options, i.e. with YNNPACK fusions (jaxlib 0.8+'s "
            "default for convolutions, forward and stride-1 backward, and some dots), instead of the project's "
            "xla_cpu_experimental_ynn_fusion_type='' (stepwise.training.compilation.CPU_STEP_OPTIONS), which runs them "
            "on XLA's Eigen kernels", variant="ynnpack_on", configs=(PROFILED, "cnn_digits", CPU_DEFAULT)),
    Attempt("recomputed_conv_inputs", "the network traced without stepwise.models.nets._stored, the opaque identity "
            "on every convolution's input: XLA then recomputes GroupNorm / ReLU / the residual add inside the "
            "(strided, untiled) transposes of the kernel gradients (the ResNet's only: the SmallCNN has none)",
            variant="recomputed_conv_inputs"),
    Attempt("thunk_runtime_off", "XLA_FLAGS=--xla_cpu_use_thunk_runtime=false (the legacy CPU runtime; jaxlib 0.10 "
            "warns that the flag is no longer supported)", "--xla_cpu_use_thunk_runtime=false"),
)


class _Worker:
    """A fresh process holding one compiled JAX step (``python -m benchmarks.bench_train _worker``); ``run(k)`` times k
    steps there and returns the seconds."""

    def __init__(self, config: str, variant: str | None = None, xla_flags: str = ""):
        import tempfile

        from benchmarks.common import worker_command, worker_env

        env = worker_env({"XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()})
        cmd = worker_command("bench_train", "--config", config)
        if variant:
            cmd += ["--variant", variant]
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, bufsize=1)
        self.info: dict[str, Any] | None = None

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"worker exited with status {self.proc.returncode}: {self.stderr_tail()}")
        return json.loads(line)

    def ready(self) -> dict[str, Any]:
        if self.info is None:
            self.info = self._read()
        return self.info

    def run(self, k: int) -> float:
        self.proc.stdin.write(f"run {k}\n")
        self.proc.stdin.flush()
        return float(self._read()["seconds"])

    def stderr_tail(self, n: int = 1) -> str:
        self._stderr.seek(0)
        lines = [line for line in self._stderr.read().splitlines() if line.strip()]
        return " | ".join(lines[-n:])[:500] or "(no output)"

    def stderr_matching(self, text: str) -> str | None:
        self._stderr.seek(0)
        return next((line[:300] for line in self._stderr.read().splitlines() if text in line), None)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


def _worker_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_train _worker")
    parser.add_argument("--config", required=True, choices=list(CONFIGS))
    parser.add_argument("--variant", default=None)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    jb = make_jax_step(CONFIGS[args.config], variant=args.variant)
    jb.run(1)
    print(json.dumps({"ready": True, "first_call_s": time.perf_counter() - t0,
                      "xla_flags": os.environ.get("XLA_FLAGS", "")}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[:1] == ["run"]:
            print(json.dumps({"seconds": jb.run(int(cmd[1]))}), flush=True)
        else:
            break
    return 0


def run_attempts(attempts: Sequence[Attempt], configs: Sequence[str], *, rounds: int, round_seconds: float,
                 log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Time each attempt against a baseline worker, in alternating rounds (see above).

    All workers are started (and compile) at once, before any timing, to save wall time.
    """
    jobs = [(att, c) for att in attempts for c in att.configs if c in configs]
    if not jobs:
        return []
    baselines = {c: _Worker(c) for c in dict.fromkeys(c for _, c in jobs)}
    workers = {(att.name, c): _Worker(c, att.variant, att.xla_flags) for att, c in jobs}
    results, failed = [], {}
    try:
        for c, w in baselines.items():
            w.ready()
        for key, w in workers.items():  # all compiled before any timing: compiling workers would skew it
            try:
                w.ready()
            except (RuntimeError, ValueError) as err:
                failed[key] = str(err)[:500]
        steps = {c: calibrate_steps(w.run, round_seconds) for c, w in baselines.items()}
        for att in attempts:
            entry: dict[str, Any] = {"name": att.name, "description": att.description, "xla_flags": att.xla_flags,
                                     "variant": att.variant, "ms_per_step": {}, "baseline_ms_per_step": {},
                                     "vs_baseline": {}}
            for c in att.configs:
                if (att.name, c) not in workers:
                    continue
                w = workers[(att.name, c)]
                if (att.name, c) in failed:
                    entry["error"] = failed[(att.name, c)]
                    break
                try:
                    with CpuMeter(pids=(baselines[c].proc.pid, w.proc.pid)) as meter:
                        timed = time_side_by_side({"baseline": baselines[c].run, att.name: w.run}, rounds=rounds,
                                                  round_seconds=round_seconds, steps=steps[c])
                except (RuntimeError, ValueError) as err:
                    entry["error"] = str(err)[:500]
                    break
                entry["ms_per_step"][c] = timed[att.name]["ms_per_step"]
                entry["baseline_ms_per_step"][c] = timed["baseline"]["ms_per_step"]
                entry["vs_baseline"][c] = timed[att.name]["ms_per_step"] / timed["baseline"]["ms_per_step"]
                entry.setdefault("other_processes_cpu_cores", {})[c] = meter.other_cores
                entry.setdefault("rounds_ms", {})[c] = {"attempt": timed[att.name]["ms_per_step_rounds"],
                                                        "baseline": timed["baseline"]["ms_per_step_rounds"]}
                warning = w.stderr_matching("no longer supported")
                if warning:
                    entry["xla_warning"] = warning
            results.append(entry)
            effect = ", ".join(f"{c} x{r:.2f}" for c, r in entry["vs_baseline"].items()) or entry.get("error", "")
            load = max((v for v in entry.get("other_processes_cpu_cores", {}).values() if v is not None), default=None)
            log(f"  tried {att.name}: {effect} (time relative to the default step; other processes: "
                f"{_cores(load)} cores)")
    finally:
        for w in [*workers.values(), *baselines.values()]:
            w.close()
    return results


def _static_notes() -> list[dict[str, str]]:
    """Tried on the ResNet step during development (same machine, fresh processes, one measurement each under a
    varying load, so differences under ~10% are noise) and not re-run by the benchmark."""
    return [
        {"name": "onednn", "xla_flags": "--xla_cpu_use_onednn=true",
         "effect": "no effect: x1.04, x1.02 and x0.99 of the default step time in three runs of this benchmark's "
                   "alternating-worker timing (jaxlib 0.10.2's CPU wheel does not route these convolutions to "
                   "oneDNN)"},
        {"name": "ynnpack_off_legacy_fusion",
         "xla_flags": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_fusion_emitters=false",
         "effect": "x0.87, x0.85, x0.89 of the default step time in three runs: the same as YNNPACK off alone "
                   "(x0.91, x0.83, x0.92 in the same runs), which the project's step now is (CPU_STEP_OPTIONS)"},
        {"name": "one_forward",
         "effect": "slower: one forward pass over both views concatenated (batch 128) took 595 vs 488 ms/step "
                   "(default flags) and 492 vs 395 ms/step (YNNPACK off)"},
        {"name": "eigen_single_thread", "xla_flags": "--xla_cpu_multi_thread_eigen=false",
         "effect": "slower: 1056 vs 950 ms/step (measured under a load of ~1 extra busy core)"},
        {"name": "no_donation", "effect": "no measurable effect (871 vs 950 ms/step, within the noise); the "
                                          "project's step donates its state already"},
        {"name": "fusion_emitters_off", "xla_flags": "--xla_cpu_use_fusion_emitters=false",
         "effect": "no measurable effect alone (484 vs 509 ms/step)"},
        {"name": "concurrency_optimized_scheduler",
         "xla_flags": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
         "effect": "no measurable effect (493 vs 509 ms/step)"},
        {"name": "im2col_convolutions",
         "effect": "slower: the network's convolutions written as shifted slices + one matmul took 227 ms (forward) "
                   "and 337 ms (forward + gradients) per view vs 51 / 138 ms for lax.conv_general_dilated"},
        {"name": "prng_impl",
         "effect": "no gain: jax_default_prng_impl=rbg gave the same MLP / CNN step times as threefry (3.7 vs 3.6 ms, "
                   "16.0 vs 14.9 ms); unsafe_rbg was slower (6.6 ms, 18.8 ms)"},
        {"name": "malloc_tuning",
         "effect": "no clear gain: MALLOC_MMAP_THRESHOLD_=32MiB, MALLOC_TRIM_THRESHOLD_=256MiB; the first ~15 steps "
                   "after compilation are slower either way, so every timing warms up for a round first"},
        {"name": "channels_layout",
         "effect": "not applicable: XLA's CPU layout assignment keeps activations in NHWC (b01f) for the "
                   "convolution kernels; an NCHW network would only add transposes. The slow transposes XLA does "
                   "insert are for the kernel gradients (activations to C x H x W x N), see profile.xla_ops"},
        {"name": "float32", "effect": "already float32 everywhere: no f64 in the lowered step ('float32_only')"},
        # Measured 2026-12-05 on jaxlib 0.10.2 / torch 2.13 (variants timed in one process, interleaved rounds).
        {"name": "block_optimization_barrier",
         "effect": "no gain: jax.lax.optimization_barrier on each residual block's output (XLA otherwise recomputes "
                   "the block's GroupNorm / ReLU / residual-add chain inside every kernel-gradient transpose that "
                   "reads it) took 372 vs 359 ms CPU per step on one idle core (taskset, "
                   "--xla_cpu_multi_thread_eigen=false; PyTorch 199 ms there), 416 vs 426 ms under load"},
        {"name": "group_norm_reshape_mean_var",
         "effect": "slower: GroupNorm as one reshape to (N, H, W, G, C/G), two-pass mean and variance and rsqrt "
                   "instead of flax's nnx.GroupNorm took 309 vs 249 ms/step on 2 idle cores (503 vs 426 ms CPU per "
                   "step on one core under load)"},
        {"name": "kernel_gradient_as_dots",
         "effect": "slower: a jax.custom_jvp convolution whose kernel tangent is 9 shifted slices x einsum, so that "
                   "reverse mode computes each kernel gradient as dots over (N, H, W) with no activation "
                   "transposes (gradients equal to 8e-7 relative), took 791 vs 359 ms CPU per step on one idle core"},
        {"name": "library_flags",
         "xla_flags": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true; "
                      "--xla_cpu_experimental_onednn_fusion_type=dot,eltwise,reduce; --xla_cpu_use_xnnpack=true; "
                      "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
         "effect": "no effect: each leaves jaxlib 0.10.2's compiled step unchanged (370 YNNPACK fusions, 118 "
                   "convolutions, no custom calls)"},
        # Measured 2026-12-06 on jaxlib 0.10.2 / torch 2.13, YNNPACK off, each variant's step in one process with
        # PyTorch's, 7 interleaved rounds.
        {"name": "stored_conv_inputs_alternatives",
         "effect": "the opaque identity on each convolution input (stepwise.models.nets._stored, a lax.cond whose "
                   "predicate reads the input): 402 vs 512 ms/step without it (PyTorch 346 ms in the same rounds); "
                   "a cond whose two branches both return the input unchanged: 470 ms (XLA drops it); "
                   "jax.lax.optimization_barrier on the input: no gain (XLA expands barriers before fusion). "
                   "With YNNPACK on, the cond alone: 642 vs 664 ms"},
        {"name": "one_forward_after",
         "effect": "one forward pass over both views (batch 128) with YNNPACK off and stored inputs: 430 vs 431 "
                   "ms/step, no gain"},
        {"name": "other_xla_cpu_flags",
         "xla_flags": "--xla_cpu_experimental_enable_tiling_propagation=true; --xla_cpu_use_xnnpack=true; "
                      "--xla_cpu_experimental_xnn_fusion_type=; --xla_cpu_use_multi_output_fusion=false",
         "effect": "no gain with YNNPACK off (ratios to PyTorch 1.37-1.66 against 1.34 without them, one process "
                   "each); tiling propagation makes a plain transpose of 4 MB 8x slower (3.4 vs 0.4 ms)"},
        # Measured 2026-12-06 on jaxlib 0.10.2, in one process, 5 interleaved rounds of 5 steps each (median ms).
        {"name": "group_norm_per_channel_sums",
         "effect": "no gain: GroupNorm written as a sum over (H, W) per channel (channels contiguous), then over each "
                   "group's channels, two-pass variance, equal to nnx.GroupNorm to 1e-6 in float32 and 2e-15 in "
                   "float64, was 2x faster alone (forward + gradient at batch 128: 7.0 vs 11.9 ms at 32x32x16, 1.4 vs "
                   "2.8 ms at 4x4x128) but not in the step: 448 vs 431, 486 vs 489, 476 vs 469 ms/step (three runs, "
                   "ours vs Flax's); see non_convolution_parts_removed for what GroupNorm costs in the step"},
        {"name": "group_norm_custom_jvp",
         "effect": "kept (stepwise.models.nets.GroupNorm): GroupNorm with its derivative written out (jax.custom_jvp: "
                   "the closed-form tangent of the normalisation, and the scale / bias tangents through an outer "
                   "product with ones over N, so that reverse mode sums each (example, channel) and then contracts "
                   "the N partial sums by a dot instead of one slow reduction over (N, H, W)); values equal to "
                   "nnx.GroupNorm to 1e-7 relative in float32 and 2e-16 in float64. Against nnx.GroupNorm in one "
                   "process, 7-9 interleaved rounds of 4 steps: CPU time per step 649 vs 680, 726 vs 753, 800 vs 824 "
                   "ms (3-5% less); side by side with PyTorch in three pairs of runs the ratio went 1.23 -> 1.19, "
                   "1.04 -> 1.01, 1.16 -> 0.99"},
        {"name": "both_sides_without_group_norm_and_relu",
         "effect": "where the remaining gap is (before group_norm_custom_jvp; both frameworks run the same network, "
                   "5 rounds, two runs): the step 366 vs 331 and 406 vs 320 ms (JAX vs PyTorch; 1.11, 1.27); with "
                   "norm='none' (convolutions with bias, no GroupNorm) 338 vs 272 and 355 vs 308 (1.24, 1.15); "
                   "with norm='none' and ReLU replaced by the identity on both sides 272 vs 260 and 278 vs 262 "
                   "(1.05, 1.06). So XLA's convolutions, with their gradients and transposes, run within 6% of "
                   "PyTorch's; JAX spends about 70-130 ms per step on the layers between them where PyTorch "
                   "spends about 60-70"},
        {"name": "relu_mask_from_output_and_forward_only_store",
         "effect": "no gain: ReLU with a custom_jvp whose mask reads its output (which is stored for the next "
                   "convolution anyway) instead of its input: 381 vs 380 ms/step (GroupNorm), 305 vs 305 "
                   "(norm='none'); _stored with an identity tangent (no conditionals in the backward pass: 34 instead "
                   "of 66): 690 vs 697 ms CPU per step"},
        {"name": "ynn_library_fusion_types",
         "effect": "slower or no gain: xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE 439 vs 407 "
                   "ms/step, LIBRARY_FUSION_TYPE_ELTWISE 834 vs 407, both 828 vs 407 (one process, 5 rounds); "
                   "xla_cpu_prefer_vector_width=512 490 vs 460 (no AVX-512 here)"},
        {"name": "non_convolution_parts_removed",
         "effect": "an upper bound on what rewriting the layers between the convolutions can give (each a different "
                   "network, traced with the part patched out; one process, 5 interleaved rounds, median ms/step, "
                   "three runs whose spread shows the noise): the step 440 / 403 / 451; GroupNorm removed (identity) "
                   "407 / 376 / 389; ReLU removed 473 / - / 392; both removed, i.e. convolutions, residual adds and "
                   "loss only, - / 308 / 322; GroupNorm as its affine part only 431 / - / - (453 vs 476 in a fourth "
                   "run). So the layers between the convolutions cost up to 20-30% of the step together, while no "
                   "single one of them costs more than about 14%, and the convolution-only network runs at about "
                   "PyTorch's whole step"},
        {"name": "avx512_cpu",
         "effect": "on an AVX-512 CPU (AMD EPYC family 26, 2 cores; 2026-12-07) the ResNet row is 1.34-1.78 on JAX "
                   "0.10.2 (179.9 vs 134.3, 172.7 vs 119.2, 181.9 vs 120.5, 184.9 vs 119.0, 191.1 vs 127.0, 216.3 vs "
                   "121.2 ms/step), 1.59-1.63 on 0.7.2 (195.4 vs 123.2, 183.0 vs 112.4) and 1.72 on 0.12.1 (205.0 vs "
                   "118.9), against 0.98-1.37 on the AVX2 CPU of the earlier rows. Both steps are faster "
                   "there, PyTorch's more: its oneDNN kernels use 512-bit vectors; jaxlib's convolutions are Eigen "
                   "contractions. With norm='none' on both sides 145.7 vs 106.7 ms (1.37), so GroupNorm costs JAX "
                   "about 36 ms per step and PyTorch 14. Each framework alone in its own process: JAX 188 ms, PyTorch "
                   "109-111 ms (the same ratio as side by side)"},
        {"name": "group_norm_relu_alone_avx512",
         "effect": "GroupNorm + ReLU forward and backward at (64, 32, 32, 16), 16 groups, on the AVX-512 CPU: "
                   "2.4-3.0 ms in JAX vs 0.57-0.65 ms in PyTorch; 0.6-0.7 vs 0.26-0.31 at (64, 16, 16, 32), 0.4-0.7 vs "
                   "0.16 at (64, 8, 8, 64). XLA compiles the step's GroupNorm into about 18 passes over the "
                   "activations: the grouped reshape makes each reduction run over 1024 positions, which XLA's CPU "
                   "tree-reduction rewriter splits into a reduce-window over a materialised product plus a reduce"},
        {"name": "group_norm_alternatives_avx512",
         "effect": "no gain in the step (one process, 5 interleaved rounds, CPU ms per step, project's step first): "
                   "the backward through per-(example, channel) sums over positions, then over each group "
                   "(equal gradients to 4e-16 in float64): 345 vs 332; the same with every sum over positions a dot "
                   "with ones: 318 vs 305; reductions over (H, W, C / G) as separate axes, each <= 32 (no "
                   "reduce-window: every reduction fuses its producer, 2 full-size writes instead of about 8), "
                   "slower alone (3.3 vs 3.0 ms at (64, 32, 32, 16)): XLA's CPU reduction loops over the non-minor "
                   "position axes are slower than the passes they save. xla_cpu_prefer_vector_width=512: 300 vs 305 "
                   "(no effect); YNNPACK on: 543 vs 333 (x1.63)"},
        {"name": "older_jax",
         "effect": "JAX 0.7.2 (no YNNPACK) is faster on this step: 221 vs 125 ms (ratio 1.77) against 259 vs 109 ms "
                   "(2.38) for JAX 0.10.2, run minutes apart on the same 2-core CPU (other processes <= 0.25 cores)"},
    ]


def _float32_only(jb: JaxBench) -> bool:
    """True when the lowered step has no float64 values."""
    return "f64" not in jb.step.lower(jb.state, jb.data).as_text()


# ----------------------------------------------------------------------------------------------------------------
# Driver.

TARGET_RATIO = 1.5
CPU_TARGET_CONFIGS = ("mlp_digits", "cnn_digits")


def run(out_dir: str | os.PathLike = "bench", *, configs: Sequence[str] | None = None, steps: int | None = None,
        rounds: int = ROUNDS, round_seconds: float = 1.5, profile: bool = True, tried: bool = True,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure, assemble and write ``out_dir/bench_train.json`` (+ ``.png``). Returns the results dictionary."""
    import jax

    torch = _import_torch()
    from stepwise.io import environment

    t_start = time.perf_counter()
    configs = list(CONFIGS) if configs is None else list(configs)
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        raise ValueError(f"unknown benchmark config(s) {unknown}; valid: {sorted(CONFIGS)}")
    torch.set_num_threads(os.cpu_count() or 1)
    per_config, extra, phases = {}, {}, {}
    for name in configs:
        t_config = time.perf_counter()
        result, kept = measure_config(name, rounds=rounds, round_seconds=round_seconds, steps=steps,
                                      keep=profile and name == PROFILED)
        per_config[name] = result
        phases[name] = time.perf_counter() - t_config
        log(f"{name}: JAX {result['jax_ms_per_step']:.2f} ms/step, PyTorch {result['torch_ms_per_step']:.2f} "
            f"ms/step, ratio {result['jax_ms_per_step'] / result['torch_ms_per_step']:.2f} (other processes: "
            f"{_cores(result['other_processes_cpu_cores'])} cores)")
        if kept is not None:
            jb, tb = kept
            t0 = time.perf_counter()
            extra["profile"] = {
                "config": name,
                **profile_step(name, jb, tb, rounds=rounds, round_seconds=0.4 * round_seconds),
                "float32_only": _float32_only(jb),
            }
            try:
                extra["profile"]["xla_ops"] = xla_op_breakdown(jb)
            except Exception as err:  # the profiler is optional: record why, keep the benchmark
                extra["profile"]["xla_ops"] = {"error": f"{type(err).__name__}: {err}"[:300]}
            extra["profile"]["wall_s"] = phases["profile"] = time.perf_counter() - t0
            p = extra["profile"]
            log(f"  profile: JAX {_fmt(p['jax_ms'])}; PyTorch {_fmt(p['torch_ms'])}; convolutions "
                f"{p['convolutions']['jax_forward_backward_ms']:.0f} vs "
                f"{p['convolutions']['torch_forward_backward_ms']:.0f} ms")
            del jb, tb, kept
    if tried:
        t0 = time.perf_counter()
        extra["tried"] = run_attempts(ATTEMPTS, configs, rounds=rounds, round_seconds=0.67 * round_seconds, log=log)
        extra["tried_not_rerun"] = _static_notes()
        phases["tried"] = time.perf_counter() - t0
    others = [c["other_processes_cpu_cores"] for c in [*per_config.values(), extra.get("profile", {})]
              if c.get("other_processes_cpu_cores") is not None]
    others += [v for t in extra.get("tried", []) for v in t.get("other_processes_cpu_cores", {}).values()
               if v is not None]
    busiest = max(others) if others else None
    load = {"max_other_processes_cpu_cores": busiest, "warn_above_cores": OTHER_LOAD_WARN_CORES,
            "warning": None if busiest is None or busiest <= OTHER_LOAD_WARN_CORES else (
                f"other processes used up to {busiest:.2f} of {os.cpu_count()} cores while timing; PyTorch's "
                f"OpenMP threads suffer far more from that than XLA's thread pool, so the ratios understate PyTorch: "
                f"re-run on an idle machine"), "note": " ".join((CpuMeter.__doc__ or "").split())}
    if load["warning"]:
        log(f"WARNING: {load['warning']}")
    env = environment()
    target = {c: per_config[c]["jax_ms_per_step"] / per_config[c]["torch_ms_per_step"]
              for c in CPU_TARGET_CONFIGS if c in per_config}
    results = assemble_results(
        per_config,
        target={"ratio_at_most": TARGET_RATIO, "configs": list(CPU_TARGET_CONFIGS),
                "meets_target": all(r <= TARGET_RATIO for r in target.values()) if target else None},
        load=load,
        **extra,
        timing={"rounds": rounds, "round_seconds": round_seconds, "steps": steps,
                "statistic": "median over rounds of (round wall time / steps)", "dtype": "float32",
                "images": N_IMAGES, "augmentation": {"shift": SHIFT, "noise_std": NOISE_STD},
                "loss": "barlow_twins_theory(center=True)", "optimizer": f"SGD lr {LR}"},
        devices={"jax": [str(d) for d in jax.devices()], "jax_backend": jax.default_backend(),
                 "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                 "torch_mkldnn": bool(torch.backends.mkldnn.is_available()), "cpu_count": os.cpu_count(),
                 "cpu_model": env["host"]["cpu_model"], "load_average_at_end": list(os.getloadavg()),
                 "xla_flags": os.environ.get("XLA_FLAGS", "")},
        versions={**env["versions"], "torch": torch.__version__},
        host=env["host"],
        wall_time_s=time.perf_counter() - t_start,
        phase_wall_s=phases,
    )
    write_outputs(results, out_dir)
    return results


def _cores(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f}"


def _fmt(parts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in parts.items() if isinstance(v, float))


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/bench_train.py --out DIR [--configs ...] [--steps N] [--rounds R] [--no-profile]
    [--no-tried]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        return _worker_main(argv[1:])
    parser = argparse.ArgumentParser(prog="bench_train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench"), help="folder for bench_train.json / .png")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=None, help="steps per timed round (default: ~1.5 s worth)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"timed rounds per framework (default {ROUNDS})")
    parser.add_argument("--round-seconds", type=float, default=1.5)
    parser.add_argument("--no-profile", action="store_true", help="skip the ResNet profile")
    parser.add_argument("--no-tried", action="store_true", help="skip the speed-up attempts (fresh processes)")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be >= 1")
    try:
        results = run(args.out, configs=args.configs, steps=args.steps, rounds=args.rounds,
                      round_seconds=args.round_seconds, profile=not args.no_profile, tried=not args.no_tried)
    except ImportError as err:
        print(f"bench_train: error: {err}", file=sys.stderr)
        return 2
    for name, c in results["configs"].items():
        print(f"{name:<18} JAX {c['jax_ms_per_step']:9.2f} ms/step  PyTorch {c['torch_ms_per_step']:9.2f} ms/step  "
              f"ratio {c['ratio_vs_torch']:.2f}")
    met = results["target"]["meets_target"]
    verdict = {True: "meet", False: "miss", None: "(not measured) -"}[met]
    print(f"overall ratio (geometric mean) {results['ratio_vs_torch']:.2f}; CPU-default networks {verdict} the "
          f"<= {TARGET_RATIO} target -> {Path(args.out) / 'bench_train.json'} ({results['wall_time_s']:.0f} s)")
    return 0 if met in (True, None) else 1


if __name__ == "__main__":
    if not __package__:  # run as a file: the repository root, not benchmarks/, on the path (workers import from it)
        sys.path[0] = str(Path(__file__).resolve().parents[1])
    from stepwise import reuse_freed_memory

    reuse_freed_memory()  # as the command line does: freed blocks reused, not mapped anew each step
    sys.exit(main())
