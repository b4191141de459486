"""``stepwise verify``: check a new architecture against the stepwise theory (Simon et al. 2023) and its own NTK.

The user supplies ``make_model(rngs: flax.nnx.Rngs) -> nnx.Module`` mapping a batch of images (N, H, W, C) to (N, d)
embeddings, as ``path/to/file.py:make_model`` or ``package.module:make_model``. :func:`verify`

1. validates everything before any training: the model path imports, the factory takes one ``rngs`` argument and
   returns an NNX module, and the module maps batches of the dataset's augmented views to (batch, d) finite arrays
   for two batch sizes;
2. makes the initialisation small (``init="head"``: the output layer's kernel, found as the matrix parameter used
   last in the forward computation, is multiplied by ``init_scale``);
3. computes the empirical NTK at initialisation (:func:`stepwise.ntk.empirical_ntk`) over fixed augmented training
   pairs and the evaluation views; its top contrastive eigenvalue gamma_1 sets the learning rate (a per-loss
   fraction of the GD stability limit 1/(4 gamma_1), unless ``lr`` is given) and the kernel theory with that kernel
   held fixed predicts the step times (reported next to the measured ones; not gated: a finite network's kernel
   moves during training);
4. trains it with a joint-embedding loss on resampled augmented pairs (:func:`stepwise.training.train_ssl`),
   tracking the embedding covariance spectrum and evaluation snapshots, and computes the NTK again after training;
5. runs every check that applies (:mod:`stepwise.compare.steps`, :mod:`stepwise.compare.ntk_agreement`): steps
   present and well separated, unit rank increments, ordered onsets; step order against the after-training NTK's
   contrastive eigenvalue order; step times against 1/gamma_j (sign gated, slope reported); the final embedding
   against the after-training NTK's prediction (E6), beyond a same-kernel random baseline (the same statistics with
   the NTK at initialisation are reported);
6. writes ``verify.npz``, ``verify.png`` (drawn from it), ``results.json`` and a one-page ``report.html``.

Runtime: the example architecture (``experiments/custom_architecture.py``, ``make verify-example``) on digits: 161 s
on an idle 2-core CPU (training 45 s, two NTKs of 897 points 105 s; measured, also in its results.json).
"""

from __future__ import annotations

import dataclasses
import json
import importlib
import importlib.util
import inspect
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from stepwise import compare, io
from stepwise._validate import config_value_errors, raise_config_errors
from stepwise.compare import diagnose, hidden
from stepwise.compare import ntk_agreement as cntk
from stepwise.data import ImageData, ViewAugmentation, detect_local_dataset
from stepwise.data.augment import make_pairs
from stepwise.losses import get_loss
from stepwise.models import scale_leaf
from stepwise.theory import kernel as theory
from stepwise.theory import linear
from stepwise.training import TrainConfig, train_ssl
from stepwise.training.ssl import Checkpointing, checkpoint_kwargs, eval_key, train_ssl_stateful

__all__ = ["VerifyConfig", "ModelSpecError", "StatefulLayers", "load_factory", "output_layer", "build_model_checked",
           "output_selector", "stateful_layers", "features_function", "backbone_semantics", "plan", "float32_copy",
           "verify"]

Loss = Literal["barlow_twins", "simclr", "vicreg", "barlow_twins_theory", "infonce_floored"]
DATA = "verify.npz"

# ``lr_fraction``: the learning rate as a fraction of the kernel theory's GD stability limit 1/(4 gamma_1), gamma_1
# the top contrastive eigenvalue of the model's centred NTK at initialisation. They were calibrated on the built-in
# MLP with the theory forms (experiments/stepwise_deep/config.py: lr 0.02 for the centred Barlow Twins form, 0.15
# for the floored InfoNCE, 0.02 for VICReg, at its gamma_1 = 0.749 on 300 digit pairs: fractions 0.06, 0.45, 0.06),
# then taken at 0.4 of those because they diverged on the example ConvMixer (experiments/custom_architecture.py,
# step 745), whose NTK grows 15x during training (gamma_1 0.21 -> 3.3) against the MLP's 4.4x. The published losses
# use the same fractions as the theory form they extend (stepwise_deep's CPU defaults use the same lr for both);
# they are not separately tuned. ``kwargs``: the loss's own hyper-parameters (none: the published defaults of
# :mod:`stepwise.losses`).
LOSS_DEFAULTS: dict[str, dict] = {
    "barlow_twins": {"lr_fraction": 0.025, "kwargs": {}},
    "simclr": {"lr_fraction": 0.19, "kwargs": {}},
    "vicreg": {"lr_fraction": 0.025, "kwargs": {}},
    "barlow_twins_theory": {"lr_fraction": 0.025, "kwargs": {"center": True}},
    "infonce_floored": {"lr_fraction": 0.19, "kwargs": {"temperature": 0.2, "norm_floor": 3.0}},
}


class ModelSpecError(ValueError):
    """The ``--model`` path, the factory or the module it returns is not usable (raised before any training)."""


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
    """What ``stepwise verify`` trains and checks.

    Attributes:
      model: ``path/to/file.py:make_model`` or ``package.module:make_model``; ``make_model(rngs: nnx.Rngs)`` returns
        an NNX module mapping images (N, H, W, C) to (N, d).
      loss: joint-embedding loss: ``barlow_twins``, ``simclr``, ``vicreg`` as published, or a theory form under its
        own name (``barlow_twins_theory``, ``infonce_floored``; see :data:`LOSS_DEFAULTS`).
      data: the images (:class:`stepwise.data.ImageData`: dataset, data_dir, n_train training images, n_eval held-out
        images whose fixed views are tracked and used for the NTK checks, normalize, crop, patch_size;
        ``cifar10`` / ``stl10`` read from ``data_dir`` or the environment variables).
      steps: SGD steps first trained; while the tracked spectrum still changes at the end (by more than
        :data:`stepwise.compare.diagnose.STILL_LEARNING` of the top eigenvalue over the last tenth), the length
        doubles, up to ``max_steps``.
      max_steps: the step budget of that adaptation (None: 4 x ``steps``; at or below ``steps``: a fixed length of
        ``steps``).
      lr: learning rate (None: ``lr_fraction`` of LOSS_DEFAULTS times the stability limit 1/(4 gamma_1) of the
        model's NTK at initialisation, so that it transfers across architectures).
      init: ``head`` multiplies the output layer's kernel by ``init_scale`` (small initialisation, the theory's
        regime); ``none`` keeps the factory's initialisation (build a small init into make_model yourself).
      init_scale: the factor for ``init="head"``.
      batch_size: SGD batch.
      track_every: tracking interval (steps).
      n_pairs: fixed augmented training pairs over which the NTK (2 n_pairs + n_eval points) is computed.
      ntk_backend: ``jax`` (the default: faster than neural-tangents on these models, bench-ntk),
        ``neural_tangents`` or ``auto`` (:func:`stepwise.ntk.empirical_ntk`).
      aug: the views' augmentations (:class:`stepwise.data.ViewAugmentation`: shift by up to ``shift`` pixels,
        Gaussian pixel noise ``noise_std``; flip, brightness and contrast off unless given).
      min_steps: ``steps_detected`` threshold.
      min_tau: ``step_order_kendall_tau`` threshold.
      seed: seeds the data subset, the factory's ``nnx.Rngs``, the batches, the views and the NTK pairs.
      output: which of the model's outputs is the embedding, when it returns several: an index of a tuple or list
        (``--output 1``) or a key of a dict (``--output latent``); None: the model returns one array.
      features: the backbone, checked next to the embedding (theory note E5; reported, not gated): a dotted
        attribute path from the module to a submodule or method that takes the model's input and returns the
        backbone output (``--features backbone``, ``--features encoder.trunk``); None: no backbone checks. For a
        model with BatchNorm or Dropout the backbone is analysed as the embedding is: its tracked spectrum and
        checks are those of the ``model.eval()`` module with the BatchNorm statistics recomputed for the embedding
        (:data:`STATEFUL_SEMANTICS`, :func:`backbone_semantics`); it must not normalise with a BatchNorm layer the
        forward pass does not use.
    """

    model: str
    loss: Loss = "barlow_twins"
    data: ImageData = ImageData(n_train=1500, n_eval=297)
    steps: int = 3000
    max_steps: int | None = None
    lr: float | None = None
    init: Literal["head", "none"] = "head"
    init_scale: float = 1e-12
    batch_size: int = 256
    track_every: int = 25
    n_pairs: int = 300
    ntk_backend: Literal["jax", "neural_tangents", "auto"] = "jax"
    aug: ViewAugmentation = ViewAugmentation(shift=1, noise_std=0.1)
    min_steps: int = 3
    min_tau: float = 0.5
    seed: int = 0
    output: str | None = None
    features: str | None = None

    def __post_init__(self):
        errors = config_value_errors(self)
        if ":" not in self.model:
            errors.append(
                f"model must be 'path/to/file.py:make_model' or 'package.module:make_model'; got {self.model!r}")
        for name in ("steps", "track_every", "min_steps"):
            if getattr(self, name) < 1:
                errors.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        # Two is the least a batch statistic (covariance, negatives) and a kernel over the pairs are defined on.
        for name in ("batch_size", "n_pairs"):
            if getattr(self, name) < 2:
                errors.append(f"{name} must be >= 2 (got {getattr(self, name)})")
        if self.max_steps is not None and self.max_steps < 1:
            errors.append(f"max_steps must be >= 1 (got {self.max_steps})")
        if self.lr is not None and not self.lr > 0:
            errors.append(f"lr must be positive (got {self.lr})")
        if not self.init_scale > 0:
            errors.append(f"init_scale must be > 0 (got {self.init_scale})")
        if not -1 < self.min_tau <= 1:
            errors.append(f"min_tau must be in (-1, 1], the range of Kendall's tau less the value every order "
                          f"passes (got {self.min_tau})")
        if self.batch_size > self.data.n_train:
            errors.append(f"batch_size {self.batch_size} exceeds n_train {self.data.n_train}")
        if self.n_pairs > self.data.n_train:
            errors.append(f"n_pairs {self.n_pairs} exceeds n_train {self.data.n_train}")
        if self.steps < 2 * self.track_every:
            errors.append(f"steps {self.steps} must cover at least two tracking intervals of {self.track_every}")
        if self.features is not None and not all(part.isidentifier() for part in self.features.split(".")):
            errors.append(f"features must be a dotted attribute path such as 'backbone' or 'encoder.trunk' "
                          f"(got {self.features!r})")
        raise_config_errors(errors, "verify")

    @property
    def step_budget(self) -> int:
        """The most steps training may take: ``max_steps`` (at least ``steps``), or 4 x ``steps`` when it is None."""
        return 4 * self.steps if self.max_steps is None else max(self.max_steps, self.steps)

    @classmethod
    def gpu(cls, model: str, *, dataset: str | None = None, data_dir: str | None = None) -> "VerifyConfig":
        """Accelerator scale (``stepwise verify --scale gpu``): the embedded photographs' 32x32 RGB patches (or the
        local STL-10 / CIFAR-10 found in ``data_dir``; ``make_model`` must take that dataset's images), 10000 training
        images at batch 256, and NTKs over 2 x 500 training views and 500 evaluation views (1500 points)."""
        if dataset is None:
            dataset = "patches" if data_dir is None else detect_local_dataset(data_dir)
        return cls(model=model, data=ImageData(dataset=dataset, data_dir=data_dir, n_train=10000, n_eval=500),
                   n_pairs=500, batch_size=256, track_every=50)

    @classmethod
    def smoke(cls, model: str) -> "VerifyConfig":
        """Seconds-long run for the tests (the checks are computed, not expected to pass)."""
        return cls(model=model, steps=60, max_steps=60, batch_size=64, track_every=10,
                   data=ImageData(n_train=200, n_eval=48), n_pairs=24, min_steps=1)


# ----------------------------------------------------------------------------------------------------------------
# Loading and validating the user's model (everything here runs before any training).


def load_factory(spec: str) -> Callable:
    """Import ``path/to/file.py:name`` or ``package.module:name`` and return the callable ``name``.

    As Python does for ``python file.py``, a model file's own folder is put on ``sys.path`` first, so the file
    can import its sibling modules (``from blocks import ResBlock``). As ``python -m`` does, the current folder is
    put on ``sys.path`` for the ``package.module`` form, so a package in the folder the command runs from is found.

    Raises:
      ModelSpecError: malformed spec, missing file, import failure (with the original error), missing or
        non-callable attribute.
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ModelSpecError(
            f"--model must be 'path/to/file.py:make_model' or 'package.module:make_model'; got {spec!r}")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise ModelSpecError(f"model file {target!r} not found (looked at {path.resolve()})")
        name = f"_stepwise_user_model_{abs(hash(str(path.resolve())))}"
        _put_first_on_path(path.resolve().parent)
        try:
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # dataclasses and pickling look the module up by name
            module_spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - any error in user code is reported the same way
            sys.modules.pop(name, None)
            raise ModelSpecError(f"could not import {path.resolve()}: {type(err).__name__}: {err}") from err
        where = str(path.resolve())
    else:
        _put_first_on_path(Path.cwd())
        try:
            module = importlib.import_module(target)
        except Exception as err:  # noqa: BLE001
            raise ModelSpecError(f"could not import module {target!r} (sys.path[0] = {sys.path[0]!r}): "
                                 f"{type(err).__name__}: {err}") from err
        where = target
    if not hasattr(module, attr):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ModelSpecError(f"{where} has no attribute {attr!r}; its public callables are {found}")
    factory = getattr(module, attr)
    if not callable(factory):
        raise ModelSpecError(f"{where}:{attr} is a {type(factory).__name__}, not a callable make_model(rngs)")
    return factory


def _put_first_on_path(folder: Path) -> None:
    """``folder`` at the front of ``sys.path`` (once), where Python puts a script's folder or ``-m``'s cwd."""
    folder = str(folder)
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)


def _check_signature(factory: Callable, spec: str) -> None:
    from flax import nnx

    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return  # builtins / C callables: let the call decide
    try:
        sig.bind(nnx.Rngs(0))
    except TypeError as err:
        raise ModelSpecError(f"{spec} must take exactly one argument, make_model(rngs: flax.nnx.Rngs); its signature "
                             f"is {_attr_name(factory)}{sig} ({err})") from err


def _attr_name(obj) -> str:
    return getattr(obj, "__qualname__", getattr(obj, "__name__", type(obj).__name__))


def _describe(y) -> str:
    if isinstance(y, dict):
        return "a dict with keys " + ", ".join(f"{k!r}: shape {tuple(getattr(v, 'shape', ()))}" for k, v in y.items())
    return (f"a {type(y).__name__} of {len(y)}: "
            + ", ".join(f"[{i}] shape {tuple(getattr(v, 'shape', ()))}" for i, v in enumerate(y)))


def output_selector(output: str | None, spec: str = "the model") -> Callable:
    """``y -> the embedding``: ``y`` itself (``output`` None), ``y[int(output)]`` of a tuple or list, or
    ``y[output]`` of a dict. Raises ModelSpecError (naming the outputs there are) when it does not apply."""

    def select(y):
        if output is None:
            if isinstance(y, (tuple, list, dict)):
                how = "an index (--output 0)" if not isinstance(y, dict) else f"a key (--output {next(iter(y), 'KEY')})"
                raise ModelSpecError(f"{spec} returns {_describe(y)}; pick the embedding with {how}")
            return y
        if isinstance(y, dict):
            if output not in y:
                raise ModelSpecError(f"--output {output!r} is not a key of what {spec} returns: {_describe(y)}")
            return y[output]
        if isinstance(y, (tuple, list)):
            try:
                return y[int(output)]
            except (ValueError, IndexError):
                raise ModelSpecError(f"--output {output!r} is not an index of what {spec} returns: "
                                     f"{_describe(y)}") from None
        raise ModelSpecError(f"--output {output!r} was given but {spec} returns one array (shape "
                             f"{tuple(getattr(y, 'shape', ()))}); leave --output out")

    return select


def build_model_checked(factory: Callable, spec: str, view_shape: tuple[int, int, int], seed: int,
                        select: Callable = lambda y: y):
    """Call the factory, check the module, and return ``(module, d)``.

    The module must be an ``nnx.Module`` mapping (N, H, W, C) float32 views to a finite (N, d) array with d >= 2
    (after ``select``, :func:`output_selector`, picks it from several outputs), for N = 2 and N = 3 (so a batch size
    baked into the model is caught here).
    """
    from flax import nnx

    _check_signature(factory, spec)
    try:
        module = factory(nnx.Rngs(seed))
    except Exception as err:  # noqa: BLE001
        raise ModelSpecError(f"{spec}(rngs) raised {type(err).__name__}: {err}") from err
    if not isinstance(module, nnx.Module):
        raise ModelSpecError(f"{spec}(rngs) returned a {type(module).__name__}; expected a flax.nnx.Module")
    d = None
    for n in (2, 3):
        x = jnp.zeros((n, *view_shape), jnp.float32) + jnp.linspace(0.0, 1.0, n, dtype=jnp.float32)[:, None, None, None]
        try:
            y = module(x)
        except Exception as err:  # noqa: BLE001
            raise ModelSpecError(f"the module from {spec} failed on a batch of shape {x.shape} (N, H, W, C) of the "
                                 f"dataset's views: {type(err).__name__}: {err}") from err
        y = select(y)
        shape = tuple(getattr(y, "shape", ()))
        if len(shape) != 2 or shape[0] != n:
            raise ModelSpecError(f"the module from {spec} maps images of shape {x.shape} to shape {shape}; expected "
                                 f"(batch, d) = ({n}, d)")
        if shape[1] < 2:
            raise ModelSpecError(f"the module from {spec} outputs d = {shape[1]}; the stepwise checks need d >= 2")
        if not bool(jnp.all(jnp.isfinite(y))):
            raise ModelSpecError(f"the module from {spec} produced non-finite outputs on a batch of shape {x.shape}")
        d = shape[1]
    return module, d


def output_layer(apply: Callable, params, x) -> str:
    """Key path of the output layer's kernel: the parameter with >= 2 dimensions used last in ``apply(params, x)``.

    Found from the forward computation's jaxpr (the equation index at which each parameter is first consumed), so it
    does not depend on attribute names or on the order of the parameter tree.
    """
    flat, tree = jax.tree_util.tree_flatten_with_path(params)
    leaves = [leaf for _, leaf in flat]
    closed = jax.make_jaxpr(lambda *ls: apply(jax.tree.unflatten(tree, ls), x))(*leaves)
    position = {id(v): i for i, v in enumerate(closed.jaxpr.invars)}
    # Only parameters the output depends on: a layer whose result is discarded (a head of an output not selected)
    # is not the output layer. Backward liveness over the equations (a nested call counts as one equation).
    live = {id(v) for v in closed.jaxpr.outvars}
    for eqn in reversed(closed.jaxpr.eqns):
        if any(id(v) in live for v in eqn.outvars):
            live.update(id(v) for v in eqn.invars)
    first_use: dict[int, int] = {}
    for e, eqn in enumerate(closed.jaxpr.eqns):
        for v in eqn.invars:
            i = position.get(id(v))
            if i is not None and i not in first_use:
                first_use[i] = e
    candidates = [i for i, leaf in enumerate(leaves)
                  if jnp.ndim(leaf) >= 2 and i in first_use and id(closed.jaxpr.invars[i]) in live]
    if not candidates:
        raise ModelSpecError("the model has no matrix parameter (ndim >= 2) used in its forward pass; use --init none")
    head = max(candidates, key=lambda i: (first_use[i], i))
    return jax.tree_util.keystr(flat[head][0])


# ----------------------------------------------------------------------------------------------------------------
# Layers with training-time state: nnx.BatchNorm on batch statistics, dropout (RNG streams).

# What a training-mode forward pass may change: BatchNorm's running statistics and the counters of RNG streams.
_CARRIED_KINDS = ("BatchStat", "RngCount")

STATEFUL_SEMANTICS = {
    "training": "the module as make_model built it (Flax's default: training mode): each view's forward pass "
                "normalises with the statistics of its own batch and updates the running averages with the layer's "
                "momentum; dropout is on, its RNG stream counters advance and are carried in the jitted step's "
                "state (and checkpoints), so a step's randomness is a function of the step",
    "analysis": "model.eval(): dropout off, every nnx.BatchNorm a fixed affine map; the statistics of the layers "
                "that use batch statistics in training are recomputed at the current parameters on the fixed "
                "training views of the NTK pairs (one training-mode pass, momentum 0, gradient stopped), so the "
                "function analysed is the population version of the one trained, not the lagging running average. "
                "The tracked spectra, the evaluation loss, both NTKs, the head detection, the learning rate and the "
                "predictions all use it, and with --features the backbone's tracked spectrum and checks too",
}


@dataclasses.dataclass(frozen=True)
class StatefulLayers:
    """A module whose forward pass updates state (nnx.BatchNorm on batch statistics, dropout), as pure functions.

    Attributes:
      params: the ``nnx.Param`` state (differentiated).
      state: the state a training pass updates (BatchStat, RngCount; every non-key variable), carried in training.
      train: ``(params, state, x) -> (y, state')``: the module in the mode ``make_model`` returned it in.
      eval: ``(params, state, x) -> y``: ``model.eval()`` (running statistics, dropout off); per example.
      calibrate: ``(params, state, x) -> state'``: the running statistics of the BatchNorm layers in ``batch_norm``
        set to the statistics of the batch ``x`` (those layers on batch statistics with momentum 0, the rest of the
        network as in ``eval``); the rest of ``state`` unchanged.
      batch_norm: paths of the BatchNorm layers that use batch statistics in training.
      rng_streams: paths of the RNG stream counters a training pass advances (dropout).
      eval_module: ``(params, state) -> nnx.Module``: the ``model.eval()`` module at those values (what ``eval``
        calls), for outputs other than the embedding (the backbone of ``--features``, :func:`features_function`).
    """

    params: object
    state: object
    train: Callable
    eval: Callable
    calibrate: Callable
    batch_norm: tuple[str, ...]
    rng_streams: tuple[str, ...]
    eval_module: Callable | None = None

    def _eval_of(self, features: Callable | None) -> Callable:
        """``(params, state, x) ->`` the embedding (``features`` None) or ``features(module, x)`` in eval mode."""
        if features is None:
            return self.eval
        return lambda p, st, x: features(self.eval_module(p, st), x)

    def analysis(self, state, features: Callable | None = None) -> Callable:
        """The pure ``(params, x) -> y`` evaluation-mode function at the fixed ``state``: the embedding, or with
        ``features`` (:func:`features_function`'s ``(module, x) -> (n, p)``) the backbone output of the same
        eval-mode module. Its floating statistics follow float64 inputs, as :func:`stepwise.ntk.empirical_ntk`
        casts parameters and inputs under x64."""
        fn = self._eval_of(features)

        def apply(p, x):
            if jnp.asarray(x).dtype == jnp.float64:
                wide = lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a  # noqa: E731
                return fn(p, jax.tree.map(wide, state), x)
            return fn(p, state, x)

        return apply

    def tracked(self, calibration: jax.Array, features: Callable | None = None) -> Callable:
        """``(params, state, x) -> y``: what training tracks, the eval-mode function (the embedding, or the backbone
        output with ``features``) with the BatchNorm statistics recomputed at ``params`` on the ``calibration``
        views (``calibrate``), whatever running averages ``state`` carries."""
        fn = self._eval_of(features)
        return lambda p, st, x: fn(p, self.calibrate(p, st, calibration), x)

    def summary(self, n_calibration: int) -> dict:
        return {"batch_norm_batch_statistics": list(self.batch_norm), "rng_streams": list(self.rng_streams),
                "calibration_views": n_calibration, **STATEFUL_SEMANTICS}


def _path(path: tuple) -> str:
    return "/".join(str(p) for p in path) or "(root)"


def _flat(state) -> dict:
    from flax import nnx

    return {tuple(path): v for path, v in nnx.to_flat_state(state)}


def _values(module, *filters) -> dict:
    """A copy of the values of ``module``'s variables (``nnx.state`` holds the live variables, which a forward
    pass outside jit changes in place)."""
    from flax import nnx

    return {p: np.array(v[...]) for p, v in _flat(nnx.state(module, *filters)).items()}


def _probe_batch(n: int, view_shape: tuple[int, ...]) -> jax.Array:
    """A deterministic batch whose examples differ everywhere (nonzero batch variance in every channel)."""
    size = int(np.prod(view_shape))
    grid = np.sin(np.arange(n * size, dtype=np.float64) * 0.7297 + 0.3).reshape(n, *view_shape)
    return jnp.asarray(grid, jnp.float32)


def stateful_layers(module, spec: str, view_shape: tuple[int, int, int], select: Callable = lambda y: y
                    ) -> StatefulLayers | None:
    """The pure functions of ``module`` if a forward pass changes its state, None if it does not (then the module
    is one pure ``(params, x) -> y`` function, split as before).

    Probes, eagerly and before any training: a forward pass in the mode the factory returned the module in, one
    in ``model.eval()`` mode, and the trace of a jitted gradient through the training pass.

    Raises:
      ModelSpecError: the training pass fails; it changes state other than BatchNorm statistics and RNG counters,
        or BatchNorm statistics of a layer that is not an ``nnx.BatchNorm`` on batch statistics; the evaluation
        pass changes state; a typed PRNG key outside an RNG stream; the jitted gradient cannot be traced.
    """
    from flax import nnx

    graphdef, params, keys, state = nnx.split(module, nnx.Param, nnx.RngKey, ...)
    for path, v in _flat(state).items():
        if jnp.issubdtype(jnp.asarray(v[...]).dtype, jax.dtypes.prng_key):
            raise ModelSpecError(f"the module from {spec} holds a PRNG key in {_path(path)} ({type(v).__name__}) "
                                 "outside an nnx.Rngs stream; keep keys in nnx.Rngs / RngStream (e.g. pass "
                                 "rngs=rngs to nnx.Dropout)")

    def merged(gd, p, k, st):
        copy = lambda t: jax.tree.map(lambda a: a, t)  # fresh variables in the current trace: mutable there
        return nnx.merge(gd, copy(p), copy(k), copy(st))

    def train(p, st, x):
        m = merged(graphdef, p, keys, st)
        y = select(m(x))
        return y, nnx.split(m, nnx.Param, nnx.RngKey, ...)[3]

    x = _probe_batch(4, view_shape)
    mode = "in the mode make_model returned it in (Flax's default: training mode, batch statistics, dropout on)"
    try:
        _, after = train(params, state, x)
    except Exception as err:  # noqa: BLE001
        raise ModelSpecError(f"the module from {spec} failed {mode}: {type(err).__name__}: {err}. A Dropout "
                             "(or attention dropout) needs rngs=rngs at construction") from err
    before_flat, after_flat = _flat(state), _flat(after)
    changed = {p: type(v).__name__ for p, v in before_flat.items()
               if not np.array_equal(np.asarray(v[...]), np.asarray(after_flat[p][...]))}
    if not changed:
        return None
    batch_norm = {tuple(p) for p, m in nnx.iter_modules(module)
                  if isinstance(m, nnx.BatchNorm) and not m.use_running_average}
    other = {p: k for p, k in changed.items()
             if k not in _CARRIED_KINDS or (k == "BatchStat" and tuple(p[:-1]) not in batch_norm)}
    if other:
        listed = ", ".join(f"{_path(p)} ({k})" for p, k in sorted(other.items()))
        raise ModelSpecError(
            f"a forward pass of the module from {spec} changes state verify does not support: {listed}. Supported: "
            "nnx.BatchNorm statistics (BatchStat) and the RNG streams of dropout (RngCount). Make other state "
            "constant in the forward pass (or an nnx.Param), or return the module in eval mode (model.eval()) to "
            "train and analyse that fixed function")

    eval_module = nnx.clone(module)
    eval_module.eval()
    graphdef_eval = nnx.split(eval_module, nnx.Param, nnx.RngKey, ...)[0]
    calib_module = nnx.clone(module)
    calib_module.eval()
    calib_module.set_attributes(lambda path, m: tuple(path) in batch_norm, use_running_average=False, momentum=0.0,
                                raise_if_not_found=False)
    graphdef_calib = nnx.split(calib_module, nnx.Param, nnx.RngKey, ...)[0]

    def eval_module(p, st):
        return merged(graphdef_eval, p, keys, st)

    def evaluate(p, st, x):
        return select(eval_module(p, st)(x))

    def calibrate(p, st, x):
        m = merged(graphdef_calib, p, keys, st)
        m(x)
        return jax.lax.stop_gradient(nnx.split(m, nnx.Param, nnx.RngKey, ...)[3])

    try:
        merged_eval = merged(graphdef_eval, params, keys, state)
        merged_eval(x)
        still = _flat(nnx.split(merged_eval, nnx.Param, nnx.RngKey, ...)[3])
    except Exception as err:  # noqa: BLE001
        raise ModelSpecError(f"the module from {spec} failed in eval mode (model.eval()): {type(err).__name__}: "
                             f"{err}") from err
    moved = [_path(p) for p, v in before_flat.items()
             if not np.array_equal(np.asarray(v[...]), np.asarray(still[p][...]))]
    if moved:
        raise ModelSpecError(f"in eval mode (model.eval()) a forward pass of the module from {spec} still changes "
                             f"{', '.join(moved)}; verify analyses the eval-mode function, which must be "
                             "deterministic (set deterministic / use_running_average through model.eval())")
    try:
        jax.eval_shape(jax.grad(lambda p: jnp.sum(train(p, state, x)[0])), params)
        jax.eval_shape(lambda p: calibrate(p, state, x), params)
    except Exception as err:  # noqa: BLE001
        raise ModelSpecError(f"the training pass of the module from {spec} cannot be differentiated under jax.jit: "
                             f"{type(err).__name__}: {err}") from err
    return StatefulLayers(
        params=params, state=state, train=train, eval=evaluate, calibrate=calibrate,
        batch_norm=tuple(sorted(_path(p) for p in batch_norm if any(tuple(c[:-1]) == p for c in changed))),
        rng_streams=tuple(sorted(_path(p) for p, k in changed.items() if k == "RngCount")), eval_module=eval_module)


# ----------------------------------------------------------------------------------------------------------------
# The run.


def _data(cfg: VerifyConfig):
    train, evals, _ = cfg.data.load(cfg.seed)
    return train.astype(np.float32), evals.astype(np.float32)


def _loss(cfg: VerifyConfig):
    """The loss named by ``cfg.loss``: a published one with its published defaults (:data:`stepwise.losses.PUBLISHED`:
    Barlow Twins with per-batch standardisation and lambda 5e-3, SimCLR's NT-Xent on cosine similarity with
    tau 0.5, VICReg 25/25/1), or a theory form under its own name (``barlow_twins_theory``: the centred
    ||C - I||^2 of the linear theory; ``infonce_floored``: InfoNCE on z / max(|z|, 3) at tau 0.2), never one for the
    other."""
    return get_loss(cfg.loss, **LOSS_DEFAULTS[cfg.loss]["kwargs"])


def float32_copy(params):
    """The parameters with every floating leaf narrower than float32 (bfloat16, float16) widened to float32.

    The NTK of a mixed-precision model is taken with these: the forward pass keeps the model's own compute dtype
    (a layer built with ``dtype=jnp.bfloat16`` still casts to it), but the per-example Jacobians and their
    contraction are float32, so the kernel is positive semi-definite to float32 round-off (a Jacobian contracted
    in bfloat16 is not: eigenvalues down to ~eps(bfloat16) lambda_max below zero)."""
    def widen(a):
        a = jnp.asarray(a)
        return a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) and a.dtype.itemsize < 4 else a
    return jax.tree.map(widen, params)


def _contrastive_eigh(kc: np.ndarray, when: str, computed: np.ndarray):
    """The contrastive eigenproblem of the centred NTK block (``computed``: the block before centring, whose
    round-off sets the ridge's floor: :func:`stepwise.compare.ntk_agreement.kernel_ridge`), with an error a
    ``verify`` user can act on."""
    try:
        return theory.contrastive_eigh(kc, ridge=cntk.kernel_ridge(kc, np.float32, computed=computed))
    except ValueError as err:
        raise ValueError(
            f"the empirical NTK {when} is not positive semi-definite to float32 round-off (its centred training "
            "block plus the round-off ridge has no Cholesky factor); the model's "
            "output is probably not a deterministic per-example function of its input (state or randomness left "
            "in the analysed eval-mode pass) or it overflows; check that model.eval() gives the same output twice "
            "and that the embeddings are finite and O(1)") from err


def features_function(module, path: str, spec: str, view_shape: tuple[int, int, int],
                      layers: StatefulLayers | None = None) -> Callable:
    """``(module, x) -> (n, p)``: the backbone output named by ``path`` (a dotted attribute path to a submodule or
    method taking the model's input), flattened per example; probed on a batch of views before any training.

    With ``layers`` (a model whose forward pass changes state, :func:`stateful_layers`) the backbone is analysed as
    the embedding is: called on the ``model.eval()`` module (``StatefulLayers.eval_module``) whose BatchNorm
    statistics are those recomputed for the embedding; the probes run on copies in eval and in training mode, so
    ``module`` and its state are not changed.

    Raises:
      ModelSpecError: the path does not exist, is not callable, fails on the views, or does not return a finite
        (batch, ...) array; with ``layers``: it changes state in eval mode, or normalises with batch statistics of a
        BatchNorm layer the model's forward pass does not use (whose statistics the embedding's recomputation
        does not set).
    """
    from flax import nnx

    obj, walked = module, []
    for part in path.split("."):
        if not hasattr(obj, part):
            base = set(dir(nnx.Module))  # eval, train, sow, ...: not backbones
            names = sorted(n for n in dir(obj) if not n.startswith("_") and n not in base
                           and callable(getattr(obj, n, None)))
            raise ModelSpecError(f"--features {path}: {'.'.join(['model', *walked])} has no attribute {part!r}; its "
                                 f"callable attributes: {', '.join(names) or 'none'}")
        obj, walked = getattr(obj, part), [*walked, part]
    if isinstance(obj, nnx.Variable) or not callable(obj):
        raise ModelSpecError(f"--features {path}: model.{path} is a {type(obj).__name__}, not a submodule or method")

    def features(m, x):
        for part in path.split("."):
            m = getattr(m, part)
        y = m(x)
        return jnp.reshape(y, (y.shape[0], -1))

    x = _probe_batch(4, view_shape)
    probed = module
    if layers is not None:
        probed = nnx.clone(module)  # clone: nnx.split's state shares the module's variables; never move them
        probed.eval()
    try:
        if layers is not None:
            before = _values(probed, nnx.Not(nnx.RngKey))
            y = features(probed, x)
            moved = [_path(p) for p, v in _values(probed, nnx.Not(nnx.RngKey)).items()
                     if not np.array_equal(v, before[p])]
            trained = nnx.clone(module)  # training mode, as make_model built it: which batch statistics it uses
            start = _values(trained, nnx.BatchStat)
            features(trained, x)
            own = {_path(p[:-1]) for p, v in _values(trained, nnx.BatchStat).items()
                   if not np.array_equal(v, start[p])} - set(layers.batch_norm)
        else:
            y = features(module, x)
    except Exception as err:  # noqa: BLE001
        raise ModelSpecError(f"--features {path}: model.{path}(x) failed on a batch of views of shape {tuple(x.shape)} "
                             f"({type(err).__name__}: {err}); name a submodule or method that takes the model's "
                             f"input and returns the backbone output") from err
    if layers is not None and moved:
        raise ModelSpecError(f"--features {path}: in eval mode (model.eval()) model.{path}(x) changes "
                             f"{', '.join(moved)}; the backbone is analysed as the embedding is, in eval mode, which "
                             "must be deterministic (set deterministic / use_running_average through model.eval())")
    if layers is not None and own:
        raise ModelSpecError(f"--features {path}: model.{path}(x) normalises with the batch statistics of "
                             f"{', '.join(sorted(own))}, which the model's forward pass does not use, so verify cannot "
                             "recompute them with the embedding's; name a submodule or method the forward pass calls")
    if y.shape[0] != 4 or not bool(jnp.all(jnp.isfinite(y))):
        raise ModelSpecError(f"--features {path}: model.{path}(x) must return a finite (batch, ...) array; got shape "
                             f"{tuple(y.shape)} for a batch of 4 (finite: {bool(jnp.all(jnp.isfinite(y)))}) "
                             f"from {spec}")
    return features


def backbone_semantics(path: str, layers: StatefulLayers | None = None) -> str:
    """What the backbone checks of ``--features path`` analyse (``summary.backbone.function``, and the checks'
    descriptions): for a model with BatchNorm or Dropout (``layers``), the eval-mode function the embedding is
    analysed as."""
    if layers is None:
        return f"model.{path}(x) of the module as make_model built it (its forward pass changes no state)"
    how = (["dropout off"] if layers.rng_streams else []) + (
        ["each BatchNorm with the statistics recomputed for the embedding at the current parameters on the NTK's "
         "training views (not the running averages trained with)"] if layers.batch_norm else [])
    return f"model.{path}(x) of the analysed eval-mode module (model.eval()), as the embedding: {'; '.join(how)}"


def _kernel_checks(  # noqa: PLR0913
    cfg: VerifyConfig, t, snapshots, onsets, k_init, k_final, two_n: int, z_eval, k: int
):
    """The NTK statistics and checks (order, step times, final embedding); raises ValueError if not computable."""
    checks: list = []
    summary: dict = {}
    dirs = cntk.learned_directions(t, snapshots, onsets)
    order_init = cntk.step_order(dirs, k_init, two_n, onsets)
    order_final = cntk.step_order(dirs, k_final, two_n, onsets)
    agree_final = cntk.kernel_agreement(k_final, two_n, z_eval, k, seed=cfg.seed)
    agree_init = cntk.kernel_agreement(k_init, two_n, z_eval, k, seed=cfg.seed)
    # Gated with the after-training NTK: a finite network's kernel moves (the example's gamma_1 grows 15x), and
    # the theory note's finite-width heuristics (6.11, E6) use the trained network's NTK; the initial NTK's
    # order and its lazy-regime step times are reported next to them.
    checks += cntk.step_order_checks(order_final, kernel="after-training", min_tau=cfg.min_tau)
    checks.append(cntk.final_embedding_check(agree_final, "final_embedding_ntk_similarity", kernel="after-training"))
    summary |= {"order_init_ntk": order_init.summary(), "order_final_ntk": order_final.summary(),
                "agreement_final_ntk": agree_final.summary(), "agreement_init_ntk": agree_init.summary()}
    arrays = {"overlap_init": order_init.overlap, "overlap_final": order_final.overlap,
              "gammas_init": order_init.gammas, "gammas_final": order_final.gammas,
              "assigned_init": order_init.assigned, "assigned_final": order_final.assigned,
              "similarity": np.array([agree_init.similarity, agree_final.similarity]),
              "baseline_kernel": np.stack([agree_init.baseline_kernel, agree_final.baseline_kernel]),
              "baseline_random": np.float64(agree_final.baseline_random)}
    return checks, summary, arrays


def plan(cfg: VerifyConfig, **device):
    """What ``verify`` will compute and its estimated time on the default device (or the one named by
    ``device_kind=...``, ``platform=...``; :func:`stepwise.scale.make_plan`): the training step and tracking FLOPs
    from XLA's cost analysis of the very programs ``train_ssl`` compiles, for the whole step budget (an upper bound
    when training settles before it), and the two NTKs (a lower bound, :func:`stepwise.scale.ntk_flops`). A model
    with BatchNorm or Dropout is costed through its eval-mode function (the same layers without the batch
    statistics' update). Builds the model and reads the data; raises :class:`ModelSpecError` as ``verify`` does."""
    from flax import nnx

    from stepwise import scale

    factory = load_factory(cfg.model)
    train, _ = _data(cfg)
    aug = cfg.aug.augmentation(cfg.data.crop_size)
    view_shape = aug.output_shape(train.shape[1:])
    select = output_selector(cfg.output, cfg.model)
    module, _ = build_model_checked(factory, cfg.model, view_shape, cfg.seed, select)
    stateful = stateful_layers(module, cfg.model, view_shape, select) is not None
    if stateful:
        module.eval()
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def apply(p, x):
        return select(nnx.merge(graphdef, p, rest)(x))

    budget = cfg.step_budget
    tcfg = TrainConfig(steps=budget, batch_size=cfg.batch_size, lr=1e-3, optimizer="sgd",
                       track_every=cfg.track_every, n_snapshot=cfg.data.n_eval, seed=cfg.seed)
    step, track = scale.ssl_costs(apply, None, params, _loss(cfg), aug, tcfg, image_shape=tuple(train.shape[1:]),
                                  n_train=cfg.data.n_train, n_eval=cfg.data.n_eval)
    points = -(-budget // cfg.track_every) + 1
    n = 2 * cfg.n_pairs + cfg.data.n_eval
    work = [scale.Workload("train step", step, budget, "step"), scale.Workload("tracking", track, points, "point"),
            scale.Workload(f"NTK ({n} points)", scale.ntk_flops(apply, params, n, view_shape), 2, "kernel",
                           dtype="float32")]
    title = (f"verify {cfg.model}: {cfg.loss} on {cfg.data.dataset}, batch {cfg.batch_size}, up to {budget} steps "
             f"({cfg.steps} first){', eval-mode costs (BatchNorm/Dropout)' if stateful else ''}")
    return scale.make_plan(title, work, dtype="float32", programs=4, **device)


def verify(cfg: VerifyConfig, out_dir: str | Path, *, progress: bool = False, checkpoints=None) -> dict:
    """Validate, train, compute the NTKs, run the checks and write the run directory. Returns results.json's dict.

    ``checkpoints`` (:class:`stepwise.training.ssl.Checkpointing`): where and how often training checkpoints
    (``checkpoint.msgpack``), and whether it resumes."""
    from flax import nnx

    from stepwise.ntk import empirical_ntk
    from stepwise.plots.report import build_run_report
    from stepwise.plots.verify import plot_verify

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    factory = load_factory(cfg.model)  # every input error below is raised before any training
    train, evals = _data(cfg)
    aug = cfg.aug.augmentation(cfg.data.crop_size)
    view_shape = aug.output_shape(train.shape[1:])
    select = output_selector(cfg.output, cfg.model)
    module, d = build_model_checked(factory, cfg.model, view_shape, cfg.seed, select)
    if d > cfg.data.n_eval:
        raise ModelSpecError(f"the embedding has d = {d} > n_eval = {cfg.data.n_eval} outputs; raise n_eval")
    layers = stateful_layers(module, cfg.model, view_shape, select)  # refuses unsupported state before training
    feature_of = None
    if cfg.features is not None:  # a stateful model's backbone: its eval-mode module, as the embedding
        feature_of = features_function(module, cfg.features, cfg.model, view_shape, layers)
    # The NTK's points: fixed augmented training pairs and the evaluation views train_ssl tracks. The pairs' views
    # also calibrate the BatchNorm statistics of the analysed (eval-mode) function of a stateful model.
    x1, x2 = make_pairs(aug, jax.random.fold_in(jax.random.key(cfg.seed), 2**31 - 2), jnp.asarray(train[: cfg.n_pairs]))
    e1, _ = make_pairs(aug, eval_key(cfg.seed), jnp.asarray(evals))  # the views train_ssl tracks
    xs = jnp.concatenate([x1, x2, e1])
    two_n = 2 * cfg.n_pairs
    if layers is None:
        graphdef, params, rest = nnx.split(module, nnx.Param, ...)

        def apply(p, x):
            return select(nnx.merge(graphdef, p, rest)(x))

        def features(p, x):
            return feature_of(nnx.merge(graphdef, p, rest), x)
    else:
        calibrate = jax.jit(layers.calibrate)
        params, model_state = layers.params, calibrate(layers.params, layers.state, xs[:two_n])
        apply = layers.analysis(model_state)

    probe = jnp.zeros((2, *view_shape), jnp.float32)
    head = None
    if cfg.init == "head":
        head = output_layer(apply, params, probe)
        before = float(jnp.sqrt(jnp.mean(apply(params, jnp.asarray(train[:64])) ** 2)))
        params = scale_leaf(params, head, cfg.init_scale)
        if layers is not None:  # the statistics at the parameters trained from (changed only if BN follows the head)
            model_state = calibrate(params, model_state, xs[:two_n])
            apply = layers.analysis(model_state)
        after = float(jnp.sqrt(jnp.mean(apply(params, jnp.asarray(train[:64])) ** 2)))
        if not after <= max(1e3 * cfg.init_scale, 1e-3) * max(before, 1e-30):
            raise ModelSpecError(
                f"scaling the output layer {head} by init_scale = {cfg.init_scale:g} left the output rms at "
                f"{after:.3g} "
                f"(was {before:.3g}): the model's output is not linear in that parameter (a bias or normalisation "
                "after it?). End the model with a linear layer, or pass --init none and build a small init into "
                "make_model"
            )

    # The NTK at initialisation comes first: it sets the learning rate and predicts the step times.
    t_ntk = time.perf_counter()
    k_init = np.asarray(empirical_ntk(apply, float32_copy(params), xs, backend=cfg.ntk_backend), np.float64)
    ntk_time = time.perf_counter() - t_ntk
    k_raw = 0.5 * (k_init[:two_n, :two_n] + k_init[:two_n, :two_n].T)
    kc, _ = theory.center_kernel(k_raw)
    eig = _contrastive_eigh(kc, "at initialisation", k_raw)
    limit = linear.stability_limit(eig[0][0])
    lr = float(LOSS_DEFAULTS[cfg.loss]["lr_fraction"] * limit if cfg.lr is None else cfg.lr)  # weakly typed
    f0 = np.asarray(apply(params, xs[:two_n]), np.float64)
    try:  # the kernel theory's step times with the initial NTK held fixed (lazy regime); reported, not gated
        predicted = theory.predict(kc, f0 - f0.mean(axis=0), lr,
                                   ridge=cntk.kernel_ridge(kc, np.float32, computed=k_raw), eig=eig)
        predicted_steps = predicted.mode_steps
    except ValueError:  # fewer positive modes than d, or lr beyond the limit: nothing to predict
        predicted_steps = np.full(d, np.nan)

    # Training length adapts: train cfg.steps, and while the tracked spectrum still moves at the end
    # (compare.diagnose.STILL_LEARNING over the last tenth) double the length up to the budget, resuming from the
    # checkpoint at the end of the previous length (a resumed run equals an uninterrupted one of the new length).
    budget = cfg.step_budget
    own_checkpoint = checkpoints is None and budget > cfg.steps
    if own_checkpoint:
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoints = Checkpointing(out_dir, every=cfg.steps)
    calib = xs[:two_n]

    def train_for(total: int, ckpt):
        tcfg = TrainConfig(steps=total, batch_size=cfg.batch_size, lr=lr, optimizer="sgd",
                           track_every=cfg.track_every, n_snapshot=cfg.data.n_eval, seed=cfg.seed)
        if layers is None:
            return train_ssl(apply, None if feature_of is None else features, params, _loss(cfg), train, aug, tcfg,
                             eval_images=evals, progress=progress, **checkpoint_kwargs(ckpt)), None
        # tracked: the eval-mode embedding (and backbone) with statistics recomputed at the current parameters
        return train_ssl_stateful(layers.train, layers.tracked(calib), params, model_state, _loss(cfg), train, aug,
                                  tcfg, eval_images=evals, progress=progress,
                                  features=None if feature_of is None else layers.tracked(calib, feature_of),
                                  **checkpoint_kwargs(ckpt))

    total, lengths = cfg.steps, []
    length_file = None if checkpoints is None else Path(checkpoints.folder) / "verify-length.json"
    if length_file is not None and checkpoints.resume and length_file.is_file():  # resuming an extended run
        total = int(json.loads(length_file.read_text())["steps"])
    if length_file is not None:
        io.write_json_atomic(length_file, {"steps": total})
    res, running = train_for(total, checkpoints)
    while True:
        change = diagnose.spectrum_change_at_end(res.step.astype(np.float64), res.cov_out)
        lengths.append({"steps": total, "spectrum_change_at_end": change})
        if not change > diagnose.STILL_LEARNING or total >= budget:
            break
        total = min(2 * total, budget)
        io.write_json_atomic(length_file, {"steps": total})
        res, running = train_for(total, dataclasses.replace(checkpoints, resume=True))
    if own_checkpoint:
        (out_dir / "checkpoint.msgpack").unlink(missing_ok=True)
    if length_file is not None:
        length_file.unlink(missing_ok=True)
    stateful_summary = None
    if layers is None:
        apply_final = apply
        features_final = None if feature_of is None else features
    else:
        final_state = calibrate(res.params, running, calib)
        apply_final = layers.analysis(final_state)
        features_final = None if feature_of is None else layers.analysis(final_state, feature_of)
        z_cal = np.asarray(apply_final(res.params, e1), np.float64)
        z_run = np.asarray(layers.eval(res.params, running, e1), np.float64)
        stateful_summary = layers.summary(two_n) | {
            # how far Flax's running averages (what model.eval() would use) lag the recomputed statistics
            "running_vs_recomputed_rel_diff": float(np.linalg.norm(z_run - z_cal) / max(np.linalg.norm(z_cal), 1e-30)),
        }

    t_ntk = time.perf_counter()
    k_final = np.asarray(empirical_ntk(apply_final, float32_copy(res.params), xs, backend=cfg.ntk_backend),
                         np.float64)
    ntk_time += time.perf_counter() - t_ntk
    z_eval = np.asarray(res.snapshots[-1], np.float64)

    t = res.step.astype(np.float64)
    det = compare.detect_steps(t, res.cov_out, res.eval_loss)
    onsets = np.sort(det.onsets[np.isfinite(det.onsets)])
    k = int(onsets.size)
    checks = compare.stepwise_checks(det, cfg.min_steps)
    summary: dict = {"d": d, "k_learned": k, "n_steps": det.n_steps, "onsets": det.onsets, "widths": det.widths,
                     "separations": det.separations, "output_layer": head, "two_n": two_n,
                     "train_time_s": res.train_time_s, "ntk_time_s": ntk_time, "lr": lr,
                     "lr_stability_limit": limit, "gammas_init_ntk": eig[0][: d + 2],
                     "predicted_half_steps_lazy": np.sort(predicted_steps), "measured_half_steps": det.half_times,
                     "stateful_layers": stateful_summary, "steps_trained": int(total), "step_budget": budget,
                     "training_lengths": lengths}
    arrays: dict = {}
    kernel_error = None
    if k >= 2:
        try:
            checks_k, summary_k, arrays = _kernel_checks(cfg, t, res.snapshots, onsets, k_init, k_final, two_n,
                                                         z_eval, k)
            checks += checks_k
            summary |= summary_k
        except ValueError as err:  # e.g. fewer positive contrastive eigenvalues than learned modes
            kernel_error = str(err)
    if kernel_error is not None:
        checks.append(compare.check(
            "kernel_checks_computable", 0, 1, op=">=", kind="consistency",
            reason=f"the NTK checks could not be computed: {kernel_error}",
            description="1 if the kernel statistics (order, final embedding) could be computed",
        ))
    if k < 2:
        checks.append(compare.check(
            "learned_modes", k, 2, op=">=", kind="theory",
            reason="the theory predicts that the top modes are learned one after another; the order and kernel "
                   "checks need at least two learned modes (train longer or raise lr)",
            description="modes whose eigenvalue reached 10% of the top one",
        ))
    if feature_of is not None:  # the backbone next to the embedding (theory note E5), reported
        det_feat = compare.detect_steps(t, res.cov_feat)
        f_eval = np.asarray(features_final(res.params, e1), np.float64)
        k_sim = max(1, min(k, f_eval.shape[1], d))
        similarity = hidden.backbone_embedding_similarity(f_eval, z_eval, k_sim)
        function = backbone_semantics(cfg.features, layers)
        checks += hidden.hidden_checks(det_feat, res.cov_feat, similarity=similarity, k=k_sim, function=function)
        summary["backbone"] = {"path": cfg.features, "width": int(f_eval.shape[1]), "n_steps": det_feat.n_steps,
                               "onsets": det_feat.onsets, "k_similarity": k_sim, "function": function}
        arrays["backbone_eigenvalues"] = res.cov_feat
    # Why a failing check failed: still learning at the end, a kernel that moved, or a real disagreement.
    diag = diagnose.diagnose(t, res.cov_out, k_init[:two_n, :two_n], k_final[:two_n, :two_n])
    checks += diagnose.diagnosis_checks(diag)
    summary |= {"diagnosis": diag.summary(), "failure_causes": diagnose.failure_causes(checks, diag)}
    out_dir.mkdir(parents=True, exist_ok=True)
    io.save_npz_atomic(out_dir / DATA, step=res.step, eigenvalues=res.cov_out, eval_loss=res.eval_loss,
                       onsets=onsets, well_separated=det.well_separated, lr=np.float64(lr),
                       predicted_half_steps=np.sort(predicted_steps), half_times=det.half_times, **arrays)
    # results.json first: the run's verdicts must survive a figure that cannot be drawn (then rewritten with the
    # figure's name, or with the plotting error, which the report and the command line show).
    def write(figures: list[str], figure_error: str | None = None) -> dict:
        extra = {"summary": summary, "figures": figures, "data": [DATA], "report": "report.html"}
        if figure_error is not None:
            extra["figure_error"] = figure_error
        return io.write_results(
            out_dir, experiment=f"verify/{Path(cfg.model.rpartition(':')[0]).stem}:{cfg.model.rpartition(':')[2]}",
            config=dataclasses.asdict(cfg) | {"learning_rate": lr},
            checks=checks, wall_time_s=time.perf_counter() - t0, extra=extra,
        )

    results = write([])
    try:
        figure = plot_verify(out_dir, title=f"{cfg.model} - {cfg.loss} on {cfg.data.dataset}")
    except Exception as err:  # noqa: BLE001 - a figure never loses the run; say what failed
        problem = f"the figure could not be drawn from {DATA}: {type(err).__name__}: {err}"
        warnings.warn(problem, stacklevel=2)
        results = write([], problem)
    else:
        results = write([figure.name])
    build_run_report(out_dir, out_dir / "report.html")
    return results

