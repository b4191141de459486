"""Non-contrastive SSL in the training engine: BYOL, SimSiam and DirectPred (Tian, Chen & Ganguli 2021).

One jitted, state-donating step, like :func:`stepwise.training.train_ssl`; the batch and view sampling, placement,
host loop, tracking spectra, divergence check and checkpoints are the training engine's
(:mod:`stepwise.training.engine`):

1. draw the batch and two views from ``fold_in(run_key, step)``;
2. online network ``apply(params["net"], v)`` -> projector outputs f1, f2 (the predictor's input);
   predictor ``p = predict(params["pred"], f)``; target outputs a1, a2 from the EMA target network (BYOL) or from the
   online network itself (SimSiam), both under ``stop_gradient``;
3. loss (symmetrised over the two directions, see :class:`NoncontrastiveConfig`), its gradient, one optax update
   (online network and predictor with their own learning rate and weight decay);
4. F_hat <- rho F_hat + (1 - rho) E_B[f f^T] from the step's f1, f2 (before the update; initialised to the first
   batch's value, no bias correction, uncentred: the reference code's statistics);
5. predictor regulation after the update: DirectPred / DirectCopy overwrite W_p from F_hat every ``freq`` steps
   (the W_p set at step t is used at step t + 1), or ``symmetrize`` sets W_p <- (W_p + W_p^T) / 2;
6. target (BYOL): W_a <- W_a + lr beta (W - W_a) with the *updated* online parameters (BYOL's order).

Conventions that fix the link to the linear theory (:mod:`stepwise.theory.noncontrastive`, time t = lr x step):

- ``beta`` is the theory's EMA rate (Eqn 4): the per-step target momentum is gamma_a = 1 - lr beta (the paper's
  alpha = 0.01, beta = 0.4 is gamma_a = 0.996).
- Weight decay is coupled (L2 added to the gradient before the optimizer, PyTorch SGD's ``weight_decay``):
  ``TrainConfig.weight_decay`` is the theory's eta. The predictor's optimizer has learning rate ``alpha_p * lr`` and
  its own coupled weight decay ``eta_p``, so the theory's predictor decay is ``alpha_p * eta_p``
  (:meth:`NoncontrastiveConfig.theory_hyper`).
- With ``loss="l2"``, a linear bias-free network, a linear predictor and plain SGD, one step of the online network
  and the predictor is exactly one Euler step (size lr) of Lemma 1 with X + X' and X replaced by the batch's
  symmetrised second moments (E[v1 v1^T] + E[v2 v2^T]) / 2 and (E[v1 v2^T] + E[v2 v1^T]) / 2 (tested).

DirectPred (Section 6, Eqns 18-19; theory note tian2021 section 3 and pitfall 7.1). With F_hat = U diag(s) U^T
(``eigh``; negative s clamped to 0) the predictor is W_p = U diag(p) U^T with

- ``formula="code"`` (default; the reference code's ``balance_type=boost_scale``, which presumably produced the
  paper's STL-10 / CIFAR-10 numbers): p_j = max(sqrt(s_j / s_max) + eps, 1e-4);
- ``formula="paper"`` (Eqn 19 as printed): p_j = sqrt(s_j) + eps * s_max.

The two differ by the overall scale 1 / sqrt(s_max) (which a cosine loss ignores) and by where eps enters:
relative to sqrt(s_max) in the code, to s_max in the paper. DirectCopy (Wang, Chen, Du & Tian 2021; the reference
code's ``balance_type=direct``, ``dyn_convert=1``): p_j = max(s_j / s_max + eps, 1e-4) (``code``) or
p_j = s_j + eps, i.e. W_p = F_hat + eps I (``paper``).

The least-squares ("optimal") predictor of the paper's Table 1 (``direct="lstsq"``; the reference code's
``predictor_reg=solve``): with the running cross-correlation C_hat = E[a f^T] of each prediction's target a and its
input f (the same momentum rho and first-batch initialisation as F_hat), W_p solves W_p (F_hat + lambda I) =
(C_hat + C_hat^T) / 2 (the paper's symmetrised right-hand side), lambda = eps * s_max a ridge relative to F_hat's
largest eigenvalue (the paper says only "with regularisation").

What differs from the paper's networks, by the project's design: no BatchNorm anywhere (the models are per-example
pure functions), so the two-layer predictor is Linear -> ReLU -> Linear; the target starts as a copy of the online
network (standard BYOL; the reference code leaves its own random initialisation, note pitfall 7.8).

References:
    Y. Tian, X. Chen, S. Ganguli. Understanding Self-Supervised Learning Dynamics without Contrastive Pairs.
    ICML 2021 (arXiv 2102.06810), Lemma 1, Eqns 1-4 and 18-19; code github.com/facebookresearch/luckmatters
    (ssl/real-dataset, byol_trainer.py).
    J.-B. Grill et al. Bootstrap Your Own Latent. NeurIPS 2020 (arXiv 2006.07733), Eq. 2 (normalised L2 loss).
    X. Chen, K. He. Exploring Simple Siamese Representation Learning. CVPR 2021 (arXiv 2011.10566).
    X. Wang, X. Chen, S. S. Du, Y. Tian. Towards Demystifying Representation Learning with Non-contrastive
    Self-supervision (DirectCopy). arXiv 2110.04947.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal, Unpack

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stepwise._typing import ApplyFn
from stepwise._validate import raise_config_errors
from stepwise.data.augment import Augmentation, make_pairs
from stepwise.training.compilation import jit_step
from stepwise.training.engine import (
    LoopOptions,
    TrainConfig,
    make_optimizer,
    run_arrays,
    sample_views,
    spectra_matrices,
    train_on_views,
)

__all__ = [
    "NoncontrastiveConfig",
    "NoncontrastiveRun",
    "NoncontrastiveState",
    "compiled_programs",
    "direct_predictor",
    "init_predictor",
    "lstsq_predictor",
    "make_optimizer_pair",
    "predict",
    "program_config",
    "symmetric_loss",
    "train_noncontrastive",
]

Method = Literal["byol", "simsiam"]
Predictor = Literal["linear", "mlp"]
Direct = Literal["none", "directpred", "directcopy", "lstsq"]
Formula = Literal["code", "paper"]

_P_FLOOR = 1e-4  # the reference code's floor on the predictor's eigenvalues (clamp(min=1e-4))
_NORM_EPS = 1e-12  # smallest norm a vector is divided by in the cosine loss (torch.nn.functional.normalize's)


@dataclasses.dataclass(frozen=True)
class NoncontrastiveConfig:
    """What makes a run BYOL, SimSiam or DirectPred (the optimisation itself is a :class:`TrainConfig`).

    Attributes:
      method: ``byol`` (EMA target network) or ``simsiam`` (the target is the online network, stop-gradient).
      beta: the theory's EMA rate, in (0, 1]; per-step target momentum gamma_a = 1 - lr beta (``byol`` only).
      loss: ``cosine``: BYOL's normalised loss 2 - 2 cos(p, a) per sample and direction, summed over the two
        directions (BYOL Eq. 2, the reference code up to a constant); ``l2``: the theory's 1/2 ||p - a||^2,
        averaged over the two directions (so that a step is an Euler step of Lemma 1). Both are batch means.
      predictor: ``linear`` (W_p, d x d, no bias: the paper's default) or ``mlp`` (Linear(d, pred_hidden, bias) ->
        ReLU -> Linear(pred_hidden, d, bias)).
      pred_hidden: hidden width of the ``mlp`` predictor.
      pred_init_scale: predictor weights start ~ N(0, pred_init_scale^2 / fan_in); biases at 0.
      alpha_p: predictor learning rate / online learning rate (> 0).
      eta_p: the predictor's coupled weight decay; None means ``TrainConfig.weight_decay`` (the paper's default).
      direct: ``none`` (W_p trained by its optimizer), ``directpred`` or ``directcopy`` (W_p set from F_hat), or
        ``lstsq`` (W_p the ridge least-squares predictor from F_hat and the running cross-correlation, Table 1);
        linear predictor only.
      rho: F_hat's momentum, in [0, 1) (the code's ``dyn_lambda``; the paper's best is 0.3).
      eps: the eigenvalue regulariser (>= 0; the paper's best is 0.1, the code's README example 0.01); for
        ``lstsq`` the relative ridge lambda / s_max.
      freq: set W_p every ``freq`` steps (at steps with step % freq == 0); in between it takes optimizer steps.
      formula: ``code`` (default) or ``paper`` (see the module docstring).
      symmetrize: after every update set W_p <- (W_p + W_p^T) / 2 (the reference code's
        ``predictor_reg=symmetric``; linear predictor, ``direct="none"`` only).
      c: DirectPred's Table 7 constant c_j, in units of s_max, in (-1, 1) (:func:`direct_predictor`); 0, the
        default, is DirectPred itself.

    Raises:
      ValueError: any value out of range, with what was expected.
    """

    method: Method = "byol"
    beta: float = 0.5
    loss: Literal["cosine", "l2"] = "cosine"
    predictor: Predictor = "linear"
    pred_hidden: int = 64
    pred_init_scale: float = 1.0
    alpha_p: float = 1.0
    eta_p: float | None = None
    direct: Direct = "none"
    rho: float = 0.3
    eps: float = 0.1
    freq: int = 1
    formula: Formula = "code"
    symmetrize: bool = False
    c: float = 0.0

    def __post_init__(self):
        errors = []
        if self.method not in ("byol", "simsiam"):
            errors.append(f"method must be 'byol' or 'simsiam' (got {self.method!r})")
        if not (_finite(self.beta) and 0 < self.beta <= 1):
            errors.append(f"beta (EMA rate) must be in (0, 1] (got {self.beta})")
        if self.loss not in ("cosine", "l2"):
            errors.append(f"loss must be 'cosine' or 'l2' (got {self.loss!r})")
        if self.predictor not in ("linear", "mlp"):
            errors.append(f"predictor must be 'linear' or 'mlp' (got {self.predictor!r})")
        if self.pred_hidden < 1:
            errors.append(f"pred_hidden must be >= 1 (got {self.pred_hidden})")
        if not (_finite(self.pred_init_scale) and self.pred_init_scale > 0):
            errors.append(f"pred_init_scale must be > 0 (got {self.pred_init_scale})")
        if not (_finite(self.alpha_p) and self.alpha_p > 0):
            errors.append(f"alpha_p (predictor learning-rate ratio) must be > 0 (got {self.alpha_p})")
        if self.eta_p is not None and not (_finite(self.eta_p) and self.eta_p >= 0):
            errors.append(f"eta_p (predictor weight decay) must be None or >= 0 (got {self.eta_p})")
        if self.direct not in ("none", "directpred", "directcopy", "lstsq"):
            errors.append(f"direct must be 'none', 'directpred', 'directcopy' or 'lstsq' (got {self.direct!r})")
        elif self.direct != "none" and self.predictor != "linear":
            errors.append(f"direct={self.direct!r} sets a linear W_p; it needs predictor='linear'")
        if not (_finite(self.rho) and 0 <= self.rho < 1):
            errors.append(f"rho (F_hat momentum) must be in [0, 1) (got {self.rho})")
        if not (_finite(self.eps) and self.eps >= 0):
            errors.append(f"eps must be >= 0 (got {self.eps})")
        if self.freq < 1:
            errors.append(f"freq must be >= 1 (got {self.freq})")
        if self.formula not in ("code", "paper"):
            errors.append(f"formula must be 'code' or 'paper' (got {self.formula!r})")
        if not (_finite(self.c) and -1 < self.c < 1):
            errors.append(f"c (DirectPred's Table 7 constant, in units of s_max) must be in (-1, 1) (got {self.c})")
        elif self.c != 0 and self.direct != "directpred":
            errors.append(f"c (Table 7's constant) applies to direct='directpred' only (got {self.direct!r})")
        if self.symmetrize and (self.predictor != "linear" or self.direct != "none"):
            errors.append("symmetrize needs a trained linear predictor (predictor='linear', direct='none')")
        raise_config_errors(errors, "non-contrastive")

    def predictor_decay(self, cfg: TrainConfig) -> float:
        """The predictor's coupled weight decay (``eta_p``, or the online network's when None)."""
        return float(cfg.weight_decay if self.eta_p is None else self.eta_p)

    def theory_hyper(self, cfg: TrainConfig, sigma2: float = 0.0):
        """The linear theory's :class:`stepwise.theory.noncontrastive.Hyper` of this run (time t = lr x step)."""
        from stepwise.theory.noncontrastive import Hyper

        return Hyper(self.method, alpha_p=self.alpha_p, beta=self.beta, eta=cfg.weight_decay,
                     eta_p=self.alpha_p * self.predictor_decay(cfg), sigma2=sigma2,
                     symmetric_predictor=self.symmetrize)


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------------------------------------------
# Predictor head and DirectPred.


def init_predictor(kind: Predictor, d: int, *, key: jax.Array, hidden: int = 64, scale: float = 1.0,
                   dtype=jnp.float32) -> dict[str, jax.Array]:
    """Predictor parameters: ``{"w": (d, d)}`` (linear) or ``{"w1": (h, d), "b1", "w2": (d, h), "b2"}`` (mlp).

    Weights are stored in the theory's orientation (p = W f for a column vector f) and drawn ~ N(0, scale^2 / fan_in).
    """
    if kind == "linear":
        return {"w": scale * jax.random.normal(key, (d, d), dtype) / math.sqrt(d)}
    if kind != "mlp":
        raise ValueError(f"predictor must be 'linear' or 'mlp' (got {kind!r})")
    k1, k2 = jax.random.split(key)
    return {"w1": scale * jax.random.normal(k1, (hidden, d), dtype) / math.sqrt(d), "b1": jnp.zeros(hidden, dtype),
            "w2": scale * jax.random.normal(k2, (d, hidden), dtype) / math.sqrt(hidden), "b2": jnp.zeros(d, dtype)}


def predict(kind: Predictor, pred: dict[str, jax.Array], f: jax.Array) -> jax.Array:
    """The predictor of ``kind`` applied to a batch of projector outputs f: (n, d) -> (n, d) (rows are samples)."""
    if kind == "linear":
        return f @ pred["w"].T
    return jax.nn.relu(f @ pred["w1"].T + pred["b1"][None, :]) @ pred["w2"].T + pred["b2"][None, :]


def direct_predictor(corr: jax.Array, *, eps: float, formula: Formula = "code",
                     kind: Literal["directpred", "directcopy"] = "directpred", c: float = 0.0) -> jax.Array:
    """DirectPred's (or DirectCopy's) W_p = U diag(p) U^T from the correlation F_hat = U diag(s) U^T.

    Args:
      corr: (d, d) symmetric positive semi-definite F_hat (uncentred correlation of the projector outputs).
      eps: the regulariser (>= 0).
      formula: ``code``: p_j = max(sqrt(s_j / s_max) + eps, 1e-4) (DirectCopy: max(s_j / s_max + eps, 1e-4));
        ``paper``: p_j = sqrt(s_j) + eps s_max (DirectCopy: s_j + eps).
      kind: ``directpred`` or ``directcopy``.
      c: the constant c_j of the paper's Table 7 (DirectPred only), in units of s_max, in (-1, 1); 0 (default)
        is DirectPred itself, computed exactly as above. The Table 7 variant is p_j = sqrt(max(s_j - c_j, 0)):
        the per-mode integral of Eqn 14, s_j = p_j^2 / alpha_p + c_j (the appendix's sign, c_j = s_j(0) -
        p_j(0)^2 / alpha_p; the main text prints the opposite sign), solved for p_j at alpha_p = 1, with one c for
        every mode. Positive c sets p_j to (about) 0 on the modes with s_j < c s_max; negative c boosts the small
        eigenvalues, as eps does. ``code`` follows the reference code's ``dyn_eps_inside`` path with
        ``dyn_eps = -c`` (s_j / s_max shifted inside the root, floored at 1e-4 before it): p_j =
        sqrt(max(s_j / s_max - c, 1e-4)) + eps; ``paper``: p_j = sqrt(max(s_j - c s_max, 0)) + eps s_max. Table 7
        runs eps = 0 (the reference code has no eps outside the root on that path; ours adds it unchanged).

    Returns:
      (d, d) symmetric W_p in corr's dtype. Negative eigenvalues (round-off) are clamped to 0, and s_max is
      floored at the dtype's smallest normal number, so a collapsed F_hat = 0 gives W_p = max(eps, 1e-4) I (code)
      or eps I (DirectCopy, paper) or 0 (DirectPred, paper) instead of NaN.

    Raises:
      ValueError: c outside (-1, 1) (c >= 1 zeroes every p_j), c != 0 with DirectCopy, or an unknown formula.

    References:
      Tian, Chen & Ganguli 2021, Eqns 14 and 18-19, Table 7; reference code ``regulate_predictor``
      (``balance_type=boost_scale`` / ``direct``; ``dyn_eps_inside`` for Table 7); theory note tian2021 section 3,
      B7 and pitfall 7.1.
    """
    if not (_finite(c) and -1 < c < 1):
        raise ValueError(f"c (Table 7's constant, in units of s_max) must be in (-1, 1) (got {c})")
    if c != 0 and kind != "directpred":
        raise ValueError(f"c (Table 7's constant) applies to DirectPred only (got kind={kind!r})")
    s, u = jnp.linalg.eigh(corr)
    s = jnp.maximum(s, 0)
    s_max = jnp.maximum(jnp.max(s), jnp.finfo(corr.dtype).tiny)
    root = kind == "directpred"
    if c != 0:
        if formula == "code":
            p = jnp.sqrt(jnp.maximum(s / s_max - c, _P_FLOOR)) + eps
        elif formula == "paper":
            p = jnp.sqrt(jnp.maximum(s - c * jnp.max(s), 0)) + eps * jnp.max(s)
        else:
            raise ValueError(f"formula must be 'code' or 'paper' (got {formula!r})")
        return (u * p[None, :]) @ u.T
    if formula == "code":
        p = jnp.maximum((jnp.sqrt(s / s_max) if root else s / s_max) + eps, _P_FLOOR)
    elif formula == "paper":
        p = jnp.sqrt(s) + eps * jnp.max(s) if root else s + eps
    else:
        raise ValueError(f"formula must be 'code' or 'paper' (got {formula!r})")
    return (u * p[None, :]) @ u.T


def lstsq_predictor(corr: jax.Array, cross: jax.Array, *, reg: float) -> jax.Array:
    """The ridge least-squares W_p of Table 1: W_p (F_hat + reg s_max I) = (C_hat + C_hat^T) / 2.

    Args:
      corr: (d, d) symmetric positive semi-definite F_hat = E[f f^T] of the predictor's inputs.
      cross: (d, d) C_hat = E[a f^T] of each prediction's target a and its input f (W_p f ~ a).
      reg: the ridge relative to F_hat's largest eigenvalue (> 0 keeps the solve defined when F_hat is singular).

    Returns:
      (d, d) W_p in corr's dtype. Negative eigenvalues of F_hat (round-off) are clamped to 0 and the ridge
      reg s_max is floored at the dtype's smallest normal number, so a collapsed F_hat = 0 gives a finite W_p.

    References:
      Tian, Chen & Ganguli 2021, Table 1 (theory note tian2021 section 4, B8); reference code ``regulate_predictor``
      (``predictor_reg=solve``, which solves with C_hat itself and an absolute ridge ``dyn_reg``).
    """
    s, u = jnp.linalg.eigh(corr)
    s = jnp.maximum(s, 0)
    tiny = jnp.finfo(corr.dtype).tiny
    ridge = jnp.maximum(reg * jnp.maximum(jnp.max(s), tiny), tiny)  # a normal number: 1 / ridge stays finite
    inv = (u / (s + ridge)[None, :]) @ u.T
    return 0.5 * (cross + cross.T) @ inv


# ----------------------------------------------------------------------------------------------------------------
# Loss, state, step.


def _normalize(z: jax.Array) -> jax.Array:
    # z / max(|z|, eps) as torch.nn.functional.normalize (eps = _NORM_EPS = 1e-12, BYOL's and SimSiam's code),
    # written as z / sqrt(max(|z|^2, eps^2)): the same value (sqrt is monotone; eps^2 = 1e-24 is a normal float32),
    # but a finite gradient at z = 0. The gradient of |z| = sqrt(sum z^2) there is z / |z| = 0 / 0, and the chain
    # rule multiplies that NaN by the 0 which max passes back; max on the square passes its 0 to 2 z = 0 instead.
    # Below the floor the map is z / eps, with gradient I / eps.
    sq = jnp.sum(z * z, axis=-1, keepdims=True)
    return z / jnp.sqrt(jnp.maximum(sq, _NORM_EPS * _NORM_EPS))


def _pair_loss(kind: str, p: jax.Array, a: jax.Array) -> jax.Array:
    """One direction's batch-mean loss between predictions p and (stop-gradient) targets a, both (n, d)."""
    if kind == "cosine":
        return jnp.mean(2.0 - 2.0 * jnp.sum(_normalize(p) * _normalize(a), axis=-1))
    return jnp.mean(0.5 * jnp.sum((p - a) ** 2, axis=-1))


def symmetric_loss(kind: str, p1: jax.Array, p2: jax.Array, a1: jax.Array, a2: jax.Array) -> jax.Array:
    """Predictions of each view against the other view's target: summed (cosine) or averaged (l2)."""
    total = _pair_loss(kind, p1, a2) + _pair_loss(kind, p2, a1)
    return total if kind == "cosine" else 0.5 * total


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NoncontrastiveState:
    """Everything a step changes.

    Attributes:
      params: ``{"net": online network, "pred": predictor}``.
      target: the EMA target network's parameters (None for SimSiam).
      opt_state: optimizer state of ``params``.
      corr: (d, d) running F_hat (uncentred, momentum rho), updated every step whatever the predictor.
      eps: DirectPred's regulariser, held as data rather than compiled in, so that an eps sweep reuses one
        compiled step.
      step: step counter. key: the run's base key.
      cross: (d, d) running C_hat = E[a f^T] (target, predictor input; momentum rho) for ``direct="lstsq"``, else
        None (no leaves: the other methods' states and checkpoints are unchanged).
    """

    params: Any
    target: Any
    opt_state: Any
    corr: jax.Array
    eps: jax.Array
    step: jax.Array
    key: jax.Array
    cross: Any = None


def _regulate(pred: dict, corr: jax.Array, step: jax.Array, nc: NoncontrastiveConfig, eps: jax.Array,
              cross: jax.Array | None = None) -> dict:
    """The predictor after the optimizer update: DirectPred/DirectCopy/least squares every ``freq`` steps, or
    symmetrised."""
    if nc.symmetrize:
        return {"w": 0.5 * (pred["w"] + pred["w"].T)}
    if nc.direct == "none":
        return pred

    def direct(w):
        if nc.direct == "lstsq":
            return lstsq_predictor(corr, cross, reg=eps).astype(w.dtype)
        return direct_predictor(corr, eps=eps, formula=nc.formula, kind=nc.direct, c=nc.c).astype(w.dtype)

    if nc.freq == 1:
        return {"w": direct(pred["w"])}
    return {"w": jax.lax.cond(step % nc.freq == 0, direct, lambda w: w, pred["w"])}


def make_optimizer_pair(cfg: TrainConfig, nc: NoncontrastiveConfig) -> optax.GradientTransformation:
    """optax for ``{"net", "pred"}``: the online network as ``cfg``; the predictor at lr alpha_p * lr with eta_p."""
    pred_cfg = dataclasses.replace(cfg, lr=nc.alpha_p * cfg.lr, weight_decay=nc.predictor_decay(cfg))
    return optax.multi_transform({"net": make_optimizer(cfg), "pred": make_optimizer(pred_cfg)},
                                 {"net": "net", "pred": "pred"})


def _make_step(apply: ApplyFn, nc: NoncontrastiveConfig, tx, lr: float, aug: Augmentation, batch_size: int,
               batch_sharding):
    ema = lr * nc.beta

    def step(state: NoncontrastiveState, data: jax.Array):
        v1, v2 = sample_views(state, data, aug, batch_size, batch_sharding)
        targets = None if nc.method == "simsiam" else (apply(state.target, v1), apply(state.target, v2))

        def loss_of(params):
            f1, f2 = apply(params["net"], v1), apply(params["net"], v2)
            a1, a2 = jax.lax.stop_gradient((f1, f2) if targets is None else targets)
            p1, p2 = predict(nc.predictor, params["pred"], f1), predict(nc.predictor, params["pred"], f2)
            aux = (f1, f2, a1, a2) if nc.direct == "lstsq" else (f1, f2)
            return symmetric_loss(nc.loss, p1, p2, a1, a2), aux

        (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        f1, f2 = aux[0], aux[1]
        batch_corr = (f1.T @ f1 + f2.T @ f2) / (2 * f1.shape[0])
        corr = jnp.where(state.step == 0, batch_corr, nc.rho * state.corr + (1 - nc.rho) * batch_corr)
        cross = state.cross
        if nc.direct == "lstsq":  # C_hat = E[a f^T]: p1 = W_p f1 predicts a2, p2 predicts a1
            a1, a2 = aux[2], aux[3]
            batch_cross = (a2.T @ f1 + a1.T @ f2) / (2 * f1.shape[0])
            cross = jnp.where(state.step == 0, batch_cross, nc.rho * state.cross + (1 - nc.rho) * batch_cross)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        params = {"net": params["net"], "pred": _regulate(params["pred"], corr, state.step, nc, state.eps, cross)}
        target = None if state.target is None else jax.tree.map(
            lambda t, w: t + ema * (w - t), state.target, params["net"])
        new = dataclasses.replace(state, params=params, target=target, opt_state=opt_state, corr=corr,
                                  step=state.step + 1, cross=cross)
        return new, loss

    return jit_step(step, donate_argnums=0)


# ----------------------------------------------------------------------------------------------------------------
# Tracking and the driver.


@dataclasses.dataclass(frozen=True)
class NoncontrastiveRun:
    """A finished (or resumed and finished) non-contrastive run; arrays over the T tracking points.

    Attributes:
      step: (T,) steps of the tracking points.
      corr: (T, d, d) F = E[f f^T] of the online projector outputs over both fixed evaluation views (uncentred;
        the estimator of the alignment check B1).
      corr_running: (T, d, d) the running F_hat of the training batches (what DirectPred uses).
      wp: (T, d, d) the linear predictor's W_p, or None for the mlp predictor.
      cov_out, bt_out, cov_feat, bt_feat: (T, d) eigenvalues as in :class:`stepwise.training.SSLRun` (online net).
      eval_loss: (T,) the loss on the evaluation pairs.
      target_cos: (T,) <target, online> / (|target| |online|) over all network parameters (1 for SimSiam).
      snapshots: (T, n_snapshot, d_feat) backbone features of the clean (un-augmented) evaluation images.
      train_loss: (steps,) loss of every training step (before its update).
      params, target: final ``{"net", "pred"}`` and target parameters.
      train_time_s, tracking_time_s: wall time of the training loop (tracking included) and of the tracking.
    """

    step: np.ndarray
    corr: np.ndarray
    corr_running: np.ndarray
    wp: np.ndarray | None
    cov_out: np.ndarray
    bt_out: np.ndarray
    cov_feat: np.ndarray
    bt_feat: np.ndarray
    eval_loss: np.ndarray
    target_cos: np.ndarray
    snapshots: np.ndarray
    train_loss: np.ndarray
    params: Any
    target: Any
    train_time_s: float
    tracking_time_s: float


def _tree_cos(a, b) -> jax.Array:
    dot = sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    na = jnp.sqrt(sum(jnp.vdot(x, x) for x in jax.tree.leaves(a)))
    nb = jnp.sqrt(sum(jnp.vdot(y, y) for y in jax.tree.leaves(b)))
    return dot / (na * nb)


def _tracker(apply: ApplyFn, features: ApplyFn, nc: NoncontrastiveConfig, n_snapshot: int):
    @jax.jit
    def track(state: NoncontrastiveState, x0, x1, x2):
        net = state.params["net"]
        z1, z2 = apply(net, x1), apply(net, x2)
        h1, h2 = features(net, x1), features(net, x2)
        target = net if state.target is None else state.target
        a1, a2 = apply(target, x1), apply(target, x2)
        p1, p2 = predict(nc.predictor, state.params["pred"], z1), predict(nc.predictor, state.params["pred"], z2)
        out = spectra_matrices(z1, z2, h1, h2) | {
            "corr": (z1.T @ z1 + z2.T @ z2) / (2 * z1.shape[0]),
            "corr_running": state.corr,
            "eval_loss": symmetric_loss(nc.loss, p1, p2, a1, a2),
            "target_cos": _tree_cos(target, net),
            "snapshots": features(net, x0[:n_snapshot]),
        }
        if nc.predictor == "linear":
            out["wp"] = state.params["pred"]["w"]
        return out

    return track


def program_config(cfg: TrainConfig, nc: NoncontrastiveConfig) -> tuple[TrainConfig, NoncontrastiveConfig]:
    """``cfg`` and ``nc`` with the fields that do not enter the compiled programs set to fixed values."""
    return (dataclasses.replace(cfg, steps=1, track_every=1, checkpoint_every=0, seed=0),
            dataclasses.replace(nc, eps=0.0))


def _make_init(nc: NoncontrastiveConfig, tx, d: int, dtype):
    """Jitted: the initial state from the online network's parameters and the run's base key (one program instead
    of one eager dispatch per leaf)."""

    @jax.jit
    def init(params, key: jax.Array, eps: jax.Array) -> NoncontrastiveState:
        net = jax.tree.map(jnp.copy, params)  # the step donates its state; never delete the caller's arrays
        pred = init_predictor(nc.predictor, d, key=jax.random.fold_in(key, 2**31 - 2), hidden=nc.pred_hidden,
                              scale=nc.pred_init_scale, dtype=dtype)
        online = {"net": net, "pred": pred}
        return NoncontrastiveState(
            params=online, target=None if nc.method == "simsiam" else jax.tree.map(jnp.copy, params),
            opt_state=tx.init(online), corr=jnp.zeros((d, d), dtype), eps=jnp.asarray(eps, dtype),
            step=jnp.zeros((), jnp.int32), key=key,
            cross=jnp.zeros((d, d), dtype) if nc.direct == "lstsq" else None,
        )

    return init


@functools.lru_cache(maxsize=16)
def compiled_programs(apply: ApplyFn, features: ApplyFn, nc: NoncontrastiveConfig, cfg: TrainConfig,
                      aug: Augmentation, batch_sharding, d: int, dtype):
    """The jitted initialisation, step and tracker of a configuration, built once per process: runs that differ only
    in seed, length, initial parameters (same ``apply`` function) or eps reuse the compiled programs."""
    tx = make_optimizer_pair(cfg, nc)
    return (_make_init(nc, tx, d, dtype), _make_step(apply, nc, tx, cfg.lr, aug, cfg.batch_size, batch_sharding),
            _tracker(apply, features, nc, cfg.n_snapshot))


_pairs = jax.jit(make_pairs, static_argnums=0)  # the evaluation views in one program (eagerly: ~40 small ones)


def _center_crop(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The central (h, w) window of (N, H, W, C) images: clean images the size of the views."""
    (h, w, _), (big_h, big_w) = shape, images.shape[1:3]
    top, left = (big_h - h) // 2, (big_w - w) // 2
    return images[:, top : top + h, left : left + w]


def train_noncontrastive(
    apply: ApplyFn,
    features: ApplyFn | None,
    params: Any,
    images: np.ndarray,
    aug: Augmentation,
    cfg: TrainConfig,
    nc: NoncontrastiveConfig,
    *,
    eval_images: np.ndarray,
    **loop: Unpack[LoopOptions],
) -> NoncontrastiveRun:
    """Train an online network with a predictor (BYOL / SimSiam / DirectPred) and track F, W_p and the spectra.

    Args:
      apply: (params, x) -> (n, d) projector outputs (the predictor's input; also the target's output).
      features: (params, x) -> (n, d_feat) backbone output (probed), or None when it is ``apply`` itself.
      params: initial online-network parameters (copied; the target starts as a copy of them).
      images: (N, H, W, C) training images. aug: the augmentation producing each view.
      cfg: optimisation and tracking (lr, optimizer, weight_decay = eta, steps, batch size, seed).
      nc: the method (:class:`NoncontrastiveConfig`).
      eval_images: (n_eval, H, W, C) fixed evaluation images: one fixed pair of views of them is tracked, and the
        backbone features of the first ``cfg.n_snapshot`` clean images (centre-cropped to the views' size when the
        augmentation crops) are kept for linear probes.
      **loop: checkpoints, resume, progress bar and devices (:class:`stepwise.training.engine.LoopOptions`), as
        in :func:`stepwise.training.train_ssl`.

    Raises:
      ValueError: bad shapes or sizes, or lr x beta > 1 (a target momentum below 0), before any compute.
      DivergenceError: a training loss became NaN/inf.
    """
    def build(images, eval_images, replicated, batch_sharding):
        if nc.method == "byol" and cfg.lr * nc.beta > 1:
            raise ValueError(f"lr x beta = {cfg.lr * nc.beta:g} > 1 gives a negative target momentum 1 - lr beta; "
                             f"lower beta to <= {1 / cfg.lr:g} (or use method='simsiam' for no EMA)")
        view_shape = aug.output_shape(images.shape[1:])
        out = jax.eval_shape(apply, params, jax.ShapeDtypeStruct((1, *view_shape), images.dtype))
        program_cfg, program_nc = program_config(cfg, nc)
        init, step_fn, track = compiled_programs(apply, apply if features is None else features, program_nc,
                                                 program_cfg, aug, batch_sharding, out.shape[-1], out.dtype)
        state = init(params, jax.random.key(cfg.seed), nc.eps)
        e0 = jax.device_put(jnp.asarray(_center_crop(eval_images, view_shape)), replicated)
        return step_fn, state, lambda s, e1, e2: track(s, e0, e1, e2)

    fit = train_on_views(build, images, aug, cfg, eval_images=eval_images, pairs=_pairs,
                         desc=f"{nc.method} ({nc.direct if nc.direct != 'none' else nc.predictor} predictor)", **loop)
    h = fit.history
    return NoncontrastiveRun(
        **run_arrays(fit, ("corr", "corr_running", "snapshots")),
        wp=np.stack(h["wp"]) if "wp" in h else None,
        target_cos=np.asarray(h["target_cos"]),
        params=jax.device_get(fit.state.params),
        target=jax.device_get(fit.state.target),
    )
