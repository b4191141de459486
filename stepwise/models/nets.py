"""Image-embedding networks as Flax NNX modules: an MLP, a small CNN and a CIFAR-style ResNet-18.

Every model maps images ``x: (N, H, W, C)`` to embeddings and has the same surface:

* ``features(x) -> (N, feature_dim)``: the backbone output;
* ``__call__(x) -> (N, out_dim)``: the backbone followed by the optional projector head, ``projector=(d1, ..., dk)``
  Linear layers with ReLU between them (none after the last); ``projector=()`` means ``__call__ == features``;
* ``init_scale`` multiplies every initial kernel (Linear and Conv) at construction ("small initialisation"); biases
  start at 0 and GroupNorm scales at 1, so without normalisation the network is positively homogeneous in its
  kernels and the output of a bias-free ReLU net with L kernel layers scales by ``init_scale**L``.

There is no BatchNorm anywhere, by design: the project turns each module into one pure, deterministic
``(params, x) -> y`` function (:func:`stepwise.models.pure_model`) that is used for training, for evaluation and
for the empirical neural tangent kernel alike. BatchNorm would break that in two ways: it has separate train and
eval modes (batch statistics vs running averages, so there is no single function), and in train mode it couples
the examples of a batch (example i's output depends on example j, so per-example Jacobians and the NTK are not
those of a per-example map). GroupNorm normalises within one example and needs no running state, so it is used
where normalisation is wanted (``norm="group"``).

Dtypes: parameters are created in ``param_dtype`` (float32 by default) and inputs must have the same dtype under
``jax_numpy_dtype_promotion="strict"`` (use ``param_dtype=jnp.float64`` with float64 images).

Mixed precision: ``dtype`` (default None: ``param_dtype``, the computation of earlier versions unchanged) is the
compute dtype of every convolution and Linear layer except the output layer, e.g. ``dtype=jnp.bfloat16`` with float32
parameters (inputs and kernels are cast to bf16 for the matrix products; parameters, their gradients and the
optimizer stay float32). What stays in ``param_dtype`` whatever ``dtype`` says:

* GroupNorm statistics (computed in at least float32, as Flax does; the normalised output is cast to ``dtype``);
* the spatial mean before the head, and the output of ``features`` (cast to ``param_dtype``);
* the output layer (the last Linear of ``__call__``: the projector's last layer, or the backbone's last without a
  projector), on inputs cast to ``param_dtype``. Its output is the embedding whose covariance the losses and the
  tracking use. Keeping it in float32 keeps each output direction's rounding error proportional to that direction's
  own scale (the noise of its bf16 input passes through the same small kernel), so the tiny eigenvalues of a small
  initialisation are not swamped by the rounding of the learned ones.

bf16 has an 8-bit significand (unit roundoff 2^-8 = 3.9e-3; eps 2^-7 = 7.8e-3), so a network of L bf16 layers
differs from its float32 version by a relative error of the order of L x 8e-3 (``tests/test_models.py``).
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from stepwise._compat import standard_dtype_promotion

__all__ = ["MLP", "ResNet18", "SmallCNN"]

Norm = Literal["group", "none"]


def _check_input_shape(input_shape: tuple[int, int, int], model: str) -> tuple[int, int, int]:
    """Returns ``input_shape`` as a tuple of three positive ints (H, W, C), or raises ValueError."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(_is_positive_int(s) for s in shape):
        raise ValueError(f"{model}: input_shape must be (H, W, C) with positive ints, got {input_shape!r}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _is_positive_int(n) -> bool:
    return isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0


def _check_images(x: jax.Array, input_shape: tuple[int, int, int], model: str) -> None:
    """Raises ValueError unless ``x`` has shape (N, *input_shape). Shapes are static, so this also works in jit."""
    if x.ndim != 4 or tuple(x.shape[1:]) != input_shape:
        raise ValueError(
            f"{model} was built for images of shape (N, {', '.join(map(str, input_shape))}) "
            f"(input_shape={input_shape}), but got an array of shape {tuple(x.shape)}"
        )


def _check_norm(norm: str, model: str) -> None:
    if norm not in ("group", "none"):
        raise ValueError(f"{model}: norm must be 'group' or 'none', got {norm!r}")


def _compute_dtype(dtype: DTypeLike | None) -> jnp.dtype | None:
    """``dtype`` as a NumPy dtype (names such as ``"bfloat16"`` accepted), or None; floating types only."""
    if dtype is None:
        return None
    try:
        resolved = jnp.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"dtype must be a floating dtype such as 'float32' or 'bfloat16', got {dtype!r}") from err
    if not jnp.issubdtype(resolved, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype such as 'float32' or 'bfloat16', got {dtype!r}")
    return resolved


def _scaled_lecun_normal(scale: float) -> nnx.Initializer:
    """Flax's default kernel initialiser (LeCun normal) times ``scale``."""
    if not (isinstance(scale, numbers.Real) and 0 < scale < float("inf")):
        raise ValueError(f"init_scale must be a positive finite number, got {scale!r}")
    scale = float(scale)  # a Python float is weakly typed: the kernel keeps param_dtype
    base = nnx.initializers.lecun_normal()

    def init(key, shape, dtype=jnp.float32):
        return scale * base(key, shape, dtype)

    return init


def _group_norm(channels: int, param_dtype: DTypeLike, rngs: nnx.Rngs, dtype: DTypeLike | None = None) -> nnx.GroupNorm:
    # gcd(32, C) groups: min(32, C) for the usual power-of-two channel counts (32 for C >= 32, 8 for C = 8), and a
    # divisor of C for any C (e.g. 8 groups for C = 40, where min(32, C) would not divide).
    # Two-pass variance: the NTK and finite-difference checks differentiate through it, so accuracy matters more
    # than the E[x^2]-E[x]^2 shortcut.
    return GroupNorm(
        channels, num_groups=math.gcd(32, channels), use_fast_variance=False, dtype=dtype, param_dtype=param_dtype,
        rngs=rngs,
    )


class GroupNorm(nnx.GroupNorm):
    """``nnx.GroupNorm`` (two-pass variance, statistics over all non-batch axes, no mask) computed by
    :func:`group_norm`: the same values, parameters and dtypes, with a derivative rule that makes the training step's
    backward pass cheaper on the CPU.

    Dtypes as in Flax: input, scale and bias are cast to ``dtype`` when it is set; the statistics and the
    normalisation run in ``promote_types(that dtype, float32)``; the output is cast back to ``dtype`` (or to the
    inputs' common dtype when ``dtype`` is None).
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, ..., C) -> (N, ..., C)."""
        if self.reduction_axes is not None or self.use_fast_variance or self.scale is None or self.bias is None:
            raise ValueError("GroupNorm: only the default reduction axes, two-pass variance, scale and bias")
        scale, bias = self.scale[...], self.bias[...]
        if self.dtype is not None:
            x, scale, bias = x.astype(self.dtype), scale.astype(self.dtype), bias.astype(self.dtype)
        out_dtype = jnp.result_type(x, scale, bias)
        compute = jnp.promote_types(out_dtype, jnp.float32)
        y = group_norm(x.astype(compute), scale.astype(compute), bias.astype(compute), self.num_groups, self.epsilon)
        return y.astype(out_dtype)


def _check_group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int) -> None:
    if x.ndim < 2 or not _is_positive_int(groups) or x.shape[-1] % groups:
        raise ValueError(f"group_norm: x must be (N, ..., C) with C divisible by groups; got shape {x.shape} and "
                         f"groups={groups!r}")
    if scale.shape != (x.shape[-1],) or bias.shape != (x.shape[-1],):
        raise ValueError(f"group_norm: scale and bias must be of shape ({x.shape[-1]},), one entry per channel; got "
                         f"{scale.shape} and {bias.shape}")


def _group_norm_parts(x, scale, bias, groups, epsilon):
    """The checked forward pass of :func:`group_norm` in the grouped layout (N, S, G, C / G): the output, the
    normalised input, each (example, group)'s 1 / sqrt(var + epsilon), and the scale (two-pass variance)."""
    _check_group_norm(x, scale, bias, groups)
    n, c = x.shape[0], x.shape[-1]
    xg = x.reshape(n, -1, groups, c // groups)
    d = xg - xg.mean(axis=(1, 3), keepdims=True)
    r = jax.lax.rsqrt((d * d).mean(axis=(1, 3), keepdims=True) + epsilon)
    xhat = d * r
    scale_g = scale.reshape(1, 1, groups, -1)
    return xhat * scale_g + bias.reshape(1, 1, groups, -1), xhat, r, scale_g


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int, epsilon: float) -> jax.Array:
    """Group normalisation of ``x: (N, ..., C)``: each example's ``groups`` groups of ``C / groups`` consecutive
    channels are normalised over their channels and all the middle axes, ``(x - mean) / sqrt(var + epsilon)``
    (two-pass variance), then scaled and shifted per channel by ``scale, bias: (C,)``. All in ``x.dtype``.

    Values are those of ``nnx.GroupNorm(use_fast_variance=False)``. The derivative is written out (a
    ``jax.custom_jvp``, so forward mode works for the NTK and reverse mode is its transpose), for the CPU: left to
    autodiff, XLA reduces the scale and bias cotangents over (N, ..., ) in one pass to C values, which its CPU
    backend does slowly (3.5-6.5x the time of a copy of the activations). Here each (example, channel) is summed
    first and the N partial sums are then contracted by a dot, which XLA does not merge back into one reduction.

    Raises:
      ValueError: if ``x`` has fewer than 2 axes, ``groups`` does not divide its channels, or ``scale`` / ``bias``
        are not of shape (C,).
    ``make bench-train`` (``tried_not_rerun``: group_norm_custom_jvp) measures the ResNet-18 step with it against
    ``nnx.GroupNorm``.

    Wu & He, "Group Normalization", ECCV 2018, Eq. (1)-(3).
    """
    return _group_norm_parts(x, scale, bias, groups, epsilon)[0].reshape(x.shape)


@group_norm.defjvp
def _group_norm_jvp(groups, epsilon, primals, tangents):
    x, scale, bias = primals
    dx, dscale, dbias = tangents
    y, xhat, r, scale_g = _group_norm_parts(x, scale, bias, groups, epsilon)
    n, c = x.shape[0], x.shape[-1]
    # d xhat = r (dd - xhat mean(xhat dd)) with dd = dx - mean(dx): exact for any epsilon (d r = -r^3 mean(d dd)).
    t = dx.reshape(xhat.shape)
    dd = t - t.mean(axis=(1, 3), keepdims=True)
    dxhat = r * (dd - xhat * (xhat * dd).mean(axis=(1, 3), keepdims=True))
    # The per-channel tangents reach the (N, ..., C) map through an outer product with ones over N: its transpose is
    # a dot of the N per-example channel sums (see the docstring). HIGHEST: no reduced-precision passes on GPUs.
    ones = jnp.ones((n,), x.dtype)

    def per_example(v):
        return jnp.einsum("n,c->nc", ones, v, precision=jax.lax.Precision.HIGHEST).reshape(n, 1, groups, c // groups)

    dy = dxhat * scale_g + xhat * per_example(dscale) + per_example(dbias)
    return y.reshape(x.shape), dy.reshape(x.shape)


def _stored(x: jax.Array) -> jax.Array:
    """``x`` itself (value and derivatives): in a program compiled for the CPU, computed once and read back from
    memory by every use. Applied to every convolution input of :class:`ResNet18`.

    Why: the gradient of a convolution's kernel needs its input in a transposed layout (channels x H x W x batch
    for XLA's CPU kernels). Left alone, XLA's CPU compiler fuses the cheap producer of that input (GroupNorm, ReLU,
    the residual add) into the transpose, i.e. recomputes it there, and such a fused transpose reads its inputs
    element by element with a large stride: about 4x slower than a plain (tiled) transpose of the stored array.
    An identity XLA cannot see through stops the fusion: a conditional (never fused) whose predicate depends on
    ``x``, so it is not decided at compile time, and whose branches both return ``x`` (one as ``x + 0.0``, so that
    XLA does not replace a conditional of two identical branches by its operand). Other platforms get ``x``
    unchanged. ``make bench-train`` (``tried``: recomputed_conv_inputs) measures the ResNet-18 step without it at
    x1.16 to x1.21 of the time with it. The SmallCNN has none: its step was x0.93 of the time without it (8x8 maps,
    where the conditionals cost more than the transposes they speed up).
    """
    return jax.lax.platform_dependent(x, cpu=_opaque_identity, default=lambda v: v)


def _opaque_identity(x: jax.Array) -> jax.Array:
    return jax.lax.cond(jnp.isfinite(x.reshape(-1)[0]), lambda v: v, lambda v: v + 0.0, x)


def _avg_pool(x: jax.Array, window: tuple[int, int]) -> jax.Array:
    """Non-overlapping average pooling (stride = window, VALID: a trailing odd row/column is dropped).

    (N, H, W, C) -> (N, H // wh, W // ww, C). Written out rather than ``nnx.avg_pool``, which (flax 0.12.8) divides
    by an int64 window size and so fails under x64 with ``jax_numpy_dtype_promotion="strict"``.
    """
    n, h, w, c = x.shape
    (wh, ww), h_out, w_out = window, h // window[0], w // window[1]
    x = x[:, : h_out * wh, : w_out * ww]
    return x.reshape(n, h_out, wh, w_out, ww, c).mean(axis=(2, 4))


def _spatial_mean(x: jax.Array, compute_dtype: jnp.dtype | None, param_dtype: jnp.dtype) -> jax.Array:
    """(N, H, W, C) -> (N, C): the mean over positions, accumulated in ``param_dtype`` under mixed precision."""
    if compute_dtype is None:
        return jnp.mean(x, axis=(1, 2))
    return jnp.mean(x, axis=(1, 2), dtype=param_dtype)


def _to(x: jax.Array, compute_dtype: jnp.dtype | None, param_dtype: jnp.dtype) -> jax.Array:
    """``x`` in ``param_dtype`` under mixed precision (``compute_dtype`` set), else unchanged."""
    return x if compute_dtype is None else x.astype(param_dtype)


class _Dense(nnx.Module):
    """Linear layers ``in_dim -> widths[0] -> ... -> widths[-1]`` with ReLU between them, not after the last.

    ``widths=()`` is the identity. Used for the MLP backbone and for every projector head. ``dtype`` is the compute
    dtype of every layer but the last, which computes in ``last_dtype`` (None: inferred from its input and kernel).
    """

    def __init__(
        self,
        in_dim: int,
        widths: tuple[int, ...],
        *,
        init_scale: float,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
        dtype: DTypeLike | None = None,
        last_dtype: DTypeLike | None = None,
    ):
        if not all(_is_positive_int(d) for d in widths):
            raise ValueError(f"layer widths must be positive ints, got {widths!r}")
        dims = (in_dim, *(int(d) for d in widths))
        self.layers = nnx.List(
            [
                nnx.Linear(
                    d_in,
                    d_out,
                    kernel_init=_scaled_lecun_normal(init_scale),
                    dtype=last_dtype if i == len(dims) - 2 else dtype,
                    param_dtype=param_dtype,
                    rngs=rngs,
                )
                for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:]))
            ]
        )
        self.out_dim = dims[-1]

    def __call__(self, h: jax.Array) -> jax.Array:
        """(N, in_dim) -> (N, out_dim)."""
        for i, layer in enumerate(self.layers):
            h = layer(h) if i == 0 else layer(jax.nn.relu(h))
        return h


class _ConvNorm(nnx.Module):
    """A SAME-padded ``kernel x kernel`` convolution followed by GroupNorm if ``norm="group"`` (no activation).

    The convolution has a bias only without normalisation (GroupNorm's own bias makes it redundant).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        kernel: int,
        stride: int,
        norm: Norm,
        init_scale: float,
        param_dtype: DTypeLike,
        rngs: nnx.Rngs,
        dtype: DTypeLike | None = None,
    ):
        self.conv = nnx.Conv(
            c_in,
            c_out,
            (kernel, kernel),
            strides=stride,
            padding="SAME",
            use_bias=norm == "none",
            kernel_init=_scaled_lecun_normal(init_scale),
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.norm = _group_norm(c_out, param_dtype, rngs, dtype) if norm == "group" else None

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, c_in) -> (N, ceil(H / stride), ceil(W / stride), c_out)."""
        x = self.conv(x)
        if self.norm is None:
            return x
        with standard_dtype_promotion():  # flax GroupNorm's statistics dtype (see stepwise._compat)
            return self.norm(x)


class _Embedder(nnx.Module):
    """The surface every model shares (see the module docstring): ``__call__`` is the projector head after
    ``features``; the backbone's last Linear layers and the head compute in ``dtype`` up to the output layer."""

    def _set_dtypes(self, param_dtype: DTypeLike, dtype: DTypeLike | None) -> None:
        self.compute_dtype = _compute_dtype(dtype)
        self.param_dtype = jnp.dtype(param_dtype)

    def _init_layers(
        self, name: str, in_dim: int, widths: tuple[int, ...], projector: tuple[int, ...], *, init_scale: float,
        param_dtype: DTypeLike, rngs: nnx.Rngs,
    ) -> None:
        """After :meth:`_set_dtypes`: ``self.<name>`` (the backbone's last Linear layers ``in_dim -> widths``), the
        projector head after them and ``feature_dim``."""
        out = None if self.compute_dtype is None else param_dtype  # the output layer (see the module docstring)
        kw = dict(init_scale=init_scale, param_dtype=param_dtype, rngs=rngs, dtype=self.compute_dtype)
        last = _Dense(in_dim, widths, **kw, last_dtype=self.compute_dtype if projector else out)
        setattr(self, name, last)
        self.projector = _Dense(last.out_dim, tuple(projector), **kw, last_dtype=out)
        self.feature_dim = last.out_dim

    def _features_out(self, h: jax.Array) -> jax.Array:
        """``features``' output: the backbone's output ``h`` in ``param_dtype`` (see the module docstring)."""
        return _to(h, self.compute_dtype, self.param_dtype)

    def _pooled_head(self, x: jax.Array) -> jax.Array:
        """``features``' output of a conv backbone: the spatial mean of its feature map ``x``, then ``self.head``."""
        return self._features_out(self.head(_spatial_mean(x, self.compute_dtype, self.param_dtype)))

    @property
    def out_dim(self) -> int:
        """Width of ``__call__``'s output: ``projector[-1]``, or ``feature_dim`` without a projector."""
        return self.projector.out_dim

    def __call__(self, x: jax.Array) -> jax.Array:
        """Projector output. (N, H, W, C) -> (N, out_dim)."""
        return self.projector(self.features(x))


class MLP(_Embedder):
    """Fully connected network on flattened images.

    ``features``: flatten -> [Linear -> ReLU] for each hidden width -> Linear to ``embed_dim`` (no activation).

    Args:
      input_shape: image shape (H, W, C); the network takes (N, H, W, C).
      hidden: hidden widths; ``()`` gives a linear map.
      embed_dim: backbone output width (``feature_dim``).
      projector: widths of the projector head's Linear layers (ReLU between); ``()`` for none.
      init_scale: factor on every initial kernel; biases start at zero.
      param_dtype: parameter dtype; inputs must have the same dtype.
      dtype: compute dtype of every layer but the output layer (None: ``param_dtype``; see the module docstring).
      rngs: initialisation randomness.

    Raises:
      ValueError: for a malformed ``input_shape``, non-positive widths or a non-floating ``dtype``; at call time, for
        images of another shape.

    Example:
      >>> m = MLP((4, 4, 1), hidden=(8,), embed_dim=3, projector=(5,), rngs=nnx.Rngs(0))
      >>> m(jnp.ones((2, 4, 4, 1), jnp.float32)).shape, m.features(jnp.ones((2, 4, 4, 1), jnp.float32)).shape
      ((2, 5), (2, 3))
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        *,
        hidden: tuple[int, ...] = (256,),
        embed_dim: int = 64,
        projector: tuple[int, ...] = (),
        init_scale: float = 1.0,
        param_dtype: DTypeLike = jnp.float32,
        dtype: DTypeLike | None = None,
        rngs: nnx.Rngs,
    ):
        self.input_shape = _check_input_shape(input_shape, "MLP")
        self._set_dtypes(param_dtype, dtype)
        self._init_layers("backbone", math.prod(self.input_shape), (*hidden, embed_dim), projector,
                          init_scale=init_scale, param_dtype=param_dtype, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Backbone embedding. (N, H, W, C) -> (N, feature_dim)."""
        _check_images(x, self.input_shape, "MLP")
        return self._features_out(self.backbone(x.reshape(x.shape[0], -1)))


class SmallCNN(_Embedder):
    """A few conv layers, global average pooling and a Linear map to ``embed_dim``.

    ``features``: for each entry of ``channels`` a 3x3 conv (stride 1, SAME) [-> GroupNorm] -> ReLU -> 2x2 average
    pool (stride 2, VALID; skipped along an axis once that axis has size 1), then the spatial mean, then Linear.
    Without normalisation every stage is positively homogeneous, so with zero biases the output scales by
    ``init_scale**(len(channels) + 1)``.

    Args:
      input_shape: image shape (H, W, C); any H, W >= 1.
      channels: output channels of each conv stage.
      embed_dim: backbone output width (``feature_dim``).
      norm: ``"none"`` (convs with bias) or ``"group"`` (GroupNorm with gcd(32, channels) groups after each conv).
      projector: widths of the projector head's Linear layers (ReLU between); ``()`` for none.
      init_scale: factor on every initial kernel; biases start at zero, GroupNorm scales at one.
      param_dtype: parameter dtype; inputs must have the same dtype.
      dtype: compute dtype of every layer but the output layer (None: ``param_dtype``; see the module docstring).
      rngs: initialisation randomness.

    Raises:
      ValueError: for a malformed ``input_shape``, ``channels``, ``norm`` or ``dtype``; at call time, for images of
        another shape.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        *,
        channels: tuple[int, ...] = (32, 64),
        embed_dim: int = 64,
        norm: Norm = "none",
        projector: tuple[int, ...] = (),
        init_scale: float = 1.0,
        param_dtype: DTypeLike = jnp.float32,
        dtype: DTypeLike | None = None,
        rngs: nnx.Rngs,
    ):
        self.input_shape = _check_input_shape(input_shape, "SmallCNN")
        _check_norm(norm, "SmallCNN")
        if not channels or not all(_is_positive_int(c) for c in channels):
            raise ValueError(f"SmallCNN: channels must be a non-empty tuple of positive ints, got {channels!r}")
        self._set_dtypes(param_dtype, dtype)
        kw = dict(init_scale=init_scale, param_dtype=param_dtype, rngs=rngs, dtype=self.compute_dtype)
        h, w, c_in = self.input_shape
        convs, pools = [], []
        for c_out in map(int, channels):
            convs.append(_ConvNorm(c_in, c_out, kernel=3, stride=1, norm=norm, **kw))
            pools.append((2 if h > 1 else 1, 2 if w > 1 else 1))  # static: fixed by input_shape
            h, w, c_in = max(h // 2, 1), max(w // 2, 1), c_out
        self.convs = nnx.List(convs)
        self.pool_windows = tuple(pools)
        self._init_layers("head", c_in, (embed_dim,), projector, init_scale=init_scale, param_dtype=param_dtype,
                          rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Backbone embedding. (N, H, W, C) -> (N, feature_dim)."""
        _check_images(x, self.input_shape, "SmallCNN")
        for conv, window in zip(self.convs, self.pool_windows):
            x = _avg_pool(jax.nn.relu(conv(x)), window)
        return self._pooled_head(x)


class _BasicBlock(nnx.Module):
    """ResNet basic block: relu(convnorm(relu(convnorm(x))) + shortcut(x)), 1x1 projection when the shape changes.

    References:
      He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Fig. 2 and option (B) shortcuts.
    """

    def __init__(
        self, c_in: int, c_out: int, *, stride: int, norm: Norm, init_scale: float, param_dtype: DTypeLike, rngs,
        dtype: DTypeLike | None = None,
    ):
        kw = dict(norm=norm, init_scale=init_scale, param_dtype=param_dtype, rngs=rngs, dtype=dtype)
        self.conv1 = _ConvNorm(c_in, c_out, kernel=3, stride=stride, **kw)
        self.conv2 = _ConvNorm(c_out, c_out, kernel=3, stride=1, **kw)
        changes_shape = stride != 1 or c_in != c_out
        self.shortcut = _ConvNorm(c_in, c_out, kernel=1, stride=stride, **kw) if changes_shape else None

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, c_in) -> (N, ceil(H / stride), ceil(W / stride), c_out)."""
        x = _stored(x)  # the input of conv1 and of the shortcut
        y = self.conv2(_stored(jax.nn.relu(self.conv1(x))))
        return jax.nn.relu(y + (x if self.shortcut is None else self.shortcut(x)))


def _resnet_channels(base: int, width: float) -> int:
    """``base * width`` rounded to a multiple of 8, at least 8 (so GroupNorm's group count divides it)."""
    return max(8, 8 * round(base * width / 8))


class ResNet18(_Embedder):
    """CIFAR-style ResNet-18 (3x3 stride-1 stem, no max-pool) with GroupNorm instead of BatchNorm.

    ``features``: stem conv [-> GroupNorm] -> ReLU -> 4 stages of 2 basic blocks with (64, 128, 256, 512) * width
    channels (rounded to multiples of 8, at least 8), stride 2 at the start of stages 2-4 -> spatial mean ->
    (N, 512 * width), or a Linear map to ``embed_dim`` if given. With ``width=1`` and no ``embed_dim`` it has
    11,168,832 parameters (the standard CIFAR ResNet-18 without its classifier; GroupNorm has as many affine
    parameters as BatchNorm).

    Args:
      input_shape: image shape (H, W, C) with H, W >= 8 (three stride-2 stages; 8x8 images end at 1x1, and
        inputs up to 96x96 and beyond work).
      width: channel multiplier; 0.125 gives (8, 16, 32, 64) channels.
      blocks: basic blocks per stage (2: ResNet-18; 1: the ResNet-10 of the ``stepwise_deep`` CPU stand-in, half
        the depth and about half the FLOPs, the same stem, stages, strides and shortcuts).
      embed_dim: if given, a final Linear map to this width; otherwise ``feature_dim = 512 * width`` (rounded).
      norm: ``"group"`` (default) or ``"none"`` (convs with bias, no normalisation).
      projector: widths of the projector head's Linear layers (ReLU between); ``()`` for none.
      init_scale: factor on every initial kernel; biases start at zero, GroupNorm scales at one.
      param_dtype: parameter dtype; inputs must have the same dtype.
      dtype: compute dtype of every layer but the output layer (None: ``param_dtype``; see the module docstring).
      rngs: initialisation randomness.

    Raises:
      ValueError: for images smaller than 8x8 or a malformed argument; at call time, for images of another shape.

    Note:
      GroupNorm statistics run over (H, W, C / groups) values per group. With tiny widths and tiny images they get
      few: at width 0.125 (64 channels, 32 groups) and 8x8 inputs the last stage is 1x1, so each group holds 2
      values and normalising them is close to a sign function (ill-conditioned; float32 rounding is amplified to
      ~1e-5). Fine for tests; for experiments prefer >= 16x16 images or more channels, or ``norm="none"``.

    References:
      He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (Sec. 4.2 for the CIFAR variant);
      Wu & He, "Group Normalization", ECCV 2018.
    """

    STAGES = (64, 128, 256, 512)

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        *,
        width: float = 1.0,
        blocks: int = 2,
        embed_dim: int | None = None,
        norm: Norm = "group",
        projector: tuple[int, ...] = (),
        init_scale: float = 1.0,
        param_dtype: DTypeLike = jnp.float32,
        dtype: DTypeLike | None = None,
        rngs: nnx.Rngs,
    ):
        self.input_shape = _check_input_shape(input_shape, "ResNet18")
        h, w, c = self.input_shape
        if h < 8 or w < 8:
            raise ValueError(
                f"ResNet18: images of shape {self.input_shape} are too small: the three stride-2 stages need "
                f"height and width >= 8 (8x8 reaches 1x1 in the last stage)"
            )
        _check_norm(norm, "ResNet18")
        if not width > 0:
            raise ValueError(f"ResNet18: width must be positive, got {width!r}")
        if not _is_positive_int(blocks):
            raise ValueError(f"ResNet18: blocks (basic blocks per stage) must be a positive int, got {blocks!r}")
        widths = [_resnet_channels(base, width) for base in self.STAGES]
        self._set_dtypes(param_dtype, dtype)
        kw = dict(norm=norm, init_scale=init_scale, param_dtype=param_dtype, rngs=rngs, dtype=self.compute_dtype)
        self.stem = _ConvNorm(c, widths[0], kernel=3, stride=1, **kw)
        per_stage, blocks, c_in = int(blocks), [], widths[0]
        for stage, c_out in enumerate(widths):
            for i in range(per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(_BasicBlock(c_in, c_out, stride=stride, **kw))
                c_in = c_out
        self.blocks = nnx.List(blocks)
        self._init_layers("head", c_in, () if embed_dim is None else (embed_dim,), projector, init_scale=init_scale,
                          param_dtype=param_dtype, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Backbone embedding. (N, H, W, C) -> (N, feature_dim)."""
        _check_images(x, self.input_shape, "ResNet18")
        x = jax.nn.relu(self.stem(_stored(x)))
        for block in self.blocks:
            x = block(x)
        return self._pooled_head(x)
