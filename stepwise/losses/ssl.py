"""Self-supervised losses on the embeddings of two views: Barlow Twins, SimCLR, VICReg as published, and theory forms.

Every loss is a pure JAX function ``loss(z1, z2, *, hparams) -> scalar`` of two (n, d) arrays whose row i is a
positive pair (two views of the same input). They are differentiable, work under ``jax.jit`` and ``jax.vmap``,
and keep the input dtype (float32 in, float32 out, also with x64 enabled).

Names. ``barlow_twins``, ``simclr`` and ``vicreg`` are the losses as published, with the published defaults
(:data:`PUBLISHED`); the forms the theory solves have their own names, ``barlow_twins_theory`` (centred or not,
lambda = 1, no standardisation) and ``infonce_floored`` (NT-Xent with a norm floor of order 1), listed in
:data:`THEORY_FORMS`, and never stand in for a published loss. The exact normalisations:

``barlow_twins_theory`` -- the loss the linear theory solves (Simon et al. 2023; theory note section 1):

    C = (z1^T z2 + z2^T z1) / (2n)          (d x d; symmetrised, no centring, no standardisation)
    L = ||C - I_d||_F^2                      (lambda = 1)

  For linear embeddings z = x W^T this is exactly ``stepwise.theory.linear.loss(W, Gamma)`` with
  Gamma = ``stepwise.theory.linear.cross_correlation(x1, x2)``, so C = W Gamma W^T and dL/dW = 4 (C - I) W Gamma.

``barlow_twins`` -- standard Barlow Twins (Zbontar et al. 2021, Eqs. 1-2):

    zn = (z - mean_b z) / sqrt(var_b z + eps)     per feature, over the batch; var_b is the biased (1/n) variance
    C = zn1^T zn2 / n
    L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2

  This is what the reference code computes (``BatchNorm1d(affine=False)`` in training mode, which normalises with
  the biased variance and eps = 1e-5, then ``bn(z1).T @ bn(z2) / batch_size``). With eps = 0 it equals the paper's
  Eq. 2 exactly (the cosine between the centred feature columns), a constant feature (0 / 0 there) taken as 0,
  its value for every eps > 0. The paper gives lambda = 5e-3; the reference code's default is 0.0051.

``simclr`` -- NT-Xent (Chen et al. 2020, Eq. 1 and Algorithm 1) over the 2n embeddings u = [z1; z2]:

    s_ab = u_a . u_b / (max(||u_a||, 1e-12) max(||u_b||, 1e-12))           (cosine similarity)
    l_a = -s_{a,p(a)} / tau + log sum_{b != a} exp(s_ab / tau)             (p(a) = the partner of a)
    L = (1 / 2n) sum_a l_a

  Each anchor has its partner as positive and the other 2n - 2 embeddings as negatives; the self-similarity is
  excluded. The norm is clipped at 1e-12 (as ``torch.nn.functional.normalize``) only for numerical safety: exact
  zeros give finite values and gradients. tau = 0.5 by default, SimCLR's setting for CIFAR-10 (Chen et al. 2020,
  Appendix B.9); the paper's other published values are 0.1 and 0.2 (ImageNet).

``infonce_floored`` -- a theory form of the contrastive loss, not SimCLR: the same NT-Xent with the norm divided by
  max(||u_a||, norm_floor), norm_floor of order 1. Embeddings much shorter than the floor are compared by their
  scaled dot product (the small-logit expansion is the spectral contrastive loss, the regime of the linear theory,
  in which small initialisation means something); longer ones by their cosine.

``vicreg`` -- VICReg (Bardes, Ponce and LeCun 2022, Section 3.2, Eqs. 1-6), with per view

    v(Z) = (1/d) sum_k relu(gamma - sqrt(Var(z^k) + eps))      (Eqs. 1-2; Var with 1/(n - 1), as torch.var)
    c(Z) = (1/d) sum_{k != l} Cov(Z)_kl^2                        (Eqs. 3-4; Cov centred, with 1/(n - 1))

  and a choice of ``convention`` (see :func:`vicreg`) for how the terms are combined:

    "reference" (default; facebookresearch/vicreg main_vicreg.py):
        L = sim_weight * mean_{i,k} (z1_ik - z2_ik)^2 + var_weight * (v(Z1) + v(Z2)) / 2
            + cov_weight * (c(Z1) + c(Z2))
    "paper" (Eqs. 5-6):
        L = sim_weight * (1/n) sum_i ||z1_i - z2_i||^2 + var_weight * (v(Z1) + v(Z2))
            + cov_weight * (c(Z1) + c(Z2))

References:
    J. Simon, M. Knutins, L. Ziyin, D. Geisz, A. Fetterman, J. Albrecht. On the Stepwise Nature of
    Self-Supervised Learning. ICML 2023 (arXiv 2303.15438); the loss of the linear model.
    J. Zbontar, L. Jing, I. Misra, Y. LeCun, S. Deny. Barlow Twins: Self-Supervised Learning via Redundancy
    Reduction. ICML 2021 (arXiv 2103.03230), Eqs. 1-2; code github.com/facebookresearch/barlowtwins.
    T. Chen, S. Kornblith, M. Norouzi, G. Hinton. A Simple Framework for Contrastive Learning of Visual
    Representations. ICML 2020 (arXiv 2002.05709), Eq. 1 and Algorithm 1.
    A. Bardes, J. Ponce, Y. LeCun. VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
    Learning. ICLR 2022 (arXiv 2105.04906), Section 3.2, Eqs. 1-6; code github.com/facebookresearch/vicreg.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["LOSSES", "PUBLISHED", "THEORY_FORMS", "barlow_twins", "barlow_twins_theory", "get_loss",
           "infonce_floored", "simclr", "vicreg"]

VICRegConvention = Literal["paper", "reference"]
_VICREG_CONVENTIONS = ("paper", "reference")

# Smallest norm a SimCLR embedding is divided by (torch.nn.functional.normalize's default): keeps the cosine
# similarity and its gradient finite for zero or tiny (small-initialisation) embeddings.
_NORM_EPS = 1e-12


# ----------------------------------------------------------------------------------------------------------------
# Validation (runs at trace time: shapes and Python hyper-parameters are static).


def _validate_views(z1, z2) -> tuple[jax.Array, jax.Array]:
    z1 = jnp.asarray(z1)
    z2 = jnp.asarray(z2)
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be 2-D (n, d) arrays of the same shape (row i of each is a positive pair); "
            f"got shapes {z1.shape} and {z2.shape}"
        )
    if z1.shape[0] < 2:
        raise ValueError(f"need at least n = 2 pairs (batch statistics and negatives); got shape {z1.shape}")
    if not (jnp.issubdtype(z1.dtype, jnp.floating) and z1.dtype == z2.dtype):
        raise TypeError(f"z1 and z2 must be floating arrays of the same dtype; got {z1.dtype} and {z2.dtype}")
    return z1, z2


def _is_number(x) -> bool:
    """True for a concrete real number; traced or array hyper-parameters are not checked."""
    return isinstance(x, numbers.Real)


def _require(name: str, value, ok: Callable[[float], bool], what: str) -> None:
    if _is_number(value) and not ok(float(value)):
        raise ValueError(f"{name} must be {what}; got {value!r}")


def _check_barlow_twins_theory(center=False) -> None:
    if not isinstance(center, (bool, np.bool_)):
        raise ValueError(f"barlow_twins_theory: center must be True or False; got {center!r}")


def _check_barlow_twins(lambda_offdiag, eps) -> None:
    _require("lambda_offdiag", lambda_offdiag, lambda v: v >= 0.0, "a finite number >= 0")
    _require("eps", eps, lambda v: v >= 0.0, "a finite number >= 0")


def _check_simclr(temperature) -> None:
    _require("temperature", temperature, lambda v: 0.0 < v < float("inf"), "a finite number > 0")


def _check_infonce_floored(temperature, norm_floor) -> None:
    _check_simclr(temperature)
    _require("norm_floor", norm_floor, lambda v: 0.0 < v < float("inf"), "a finite number > 0")


def _check_vicreg(sim_weight, var_weight, cov_weight, eps, gamma, convention) -> None:
    for name, value in (("sim_weight", sim_weight), ("var_weight", var_weight), ("cov_weight", cov_weight)):
        _require(name, value, lambda v: 0.0 <= v < float("inf"), "a finite number >= 0")
    _require("eps", eps, lambda v: 0.0 <= v < float("inf"), "a finite number >= 0")
    _require("gamma", gamma, lambda v: abs(v) < float("inf"), "finite")
    if convention not in _VICREG_CONVENTIONS:
        raise ValueError(f"convention must be one of {_VICREG_CONVENTIONS}; got {convention!r}")


def _offdiag_sum_sq(c: jax.Array) -> jax.Array:
    """sum_{i != j} c_ij^2 of a square matrix, by masking (no cancellation against the diagonal)."""
    off = jnp.where(jnp.eye(c.shape[0], dtype=bool), jnp.zeros((), c.dtype), c)
    return jnp.sum(off * off)


# ----------------------------------------------------------------------------------------------------------------
# The losses.


def barlow_twins_theory(z1: jax.Array, z2: jax.Array, *, center: bool = False) -> jax.Array:
    """Barlow Twins loss of the linear theory: ||C - I||_F^2 with the symmetrised, unnormalised C.

    C = (z1^T z2 + z2^T z1) / (2n), L = ||C - I_d||_F^2 (lambda = 1, no centring, no standardisation). For
    z = x W^T this is ``stepwise.theory.linear.loss(W, cross_correlation(x1, x2))``; zero embeddings give L = d
    (the first plateau of the stepwise dynamics). With ``center=True`` each view is centred over the batch first,
    so C is the symmetrised cross-covariance: a network's mean output (which a ReLU network's kernel favours
    strongly) is then not a mode to learn.

    Args:
      z1: (n, d) embeddings of the first views, n >= 2.
      z2: (n, d) embeddings of the second views; row i is the partner of ``z1[i]``.
      center: subtract each view's batch mean first.

    Returns:
      () scalar loss, dtype of the inputs.

    Raises:
      ValueError: the views are not both 2-D of the same shape, or n < 2.
      TypeError: the views are not floating or differ in dtype.

    References:
      Simon et al. 2023, On the Stepwise Nature of Self-Supervised Learning (arXiv 2303.15438), the linear model.

    Example:
      >>> float(barlow_twins_theory(jnp.zeros((4, 3)), jnp.zeros((4, 3))))
      3.0
    """
    _check_barlow_twins_theory(center)
    z1, z2 = _validate_views(z1, z2)
    n, d = z1.shape
    if center:
        z1 = z1 - jnp.mean(z1, axis=0, keepdims=True)
        z2 = z2 - jnp.mean(z2, axis=0, keepdims=True)
    g = z1.T @ z2
    c = (g + g.T) * (0.5 / n)
    r = c - jnp.eye(d, dtype=c.dtype)
    return jnp.sum(r * r)


def barlow_twins(z1: jax.Array, z2: jax.Array, *, lambda_offdiag: float = 5e-3, eps: float = 1e-5) -> jax.Array:
    """Standard Barlow Twins loss on batch-standardised embeddings.

    Each feature k of each view is standardised over the batch, zn = (z - mean) / sqrt(var + eps), with the
    biased variance var = (1/n) sum_b (z_bk - mean_k)^2 (as ``BatchNorm1d`` in training mode). Then
    C = zn1^T zn2 / n and L = sum_i (1 - C_ii)^2 + lambda_offdiag * sum_{i != j} C_ij^2. A constant feature
    standardises to 0 (finite thanks to eps) and contributes 1 to the on-diagonal term.

    Args:
      z1: (n, d) embeddings of the first views, n >= 2.
      z2: (n, d) embeddings of the second views; row i is the partner of ``z1[i]``.
      lambda_offdiag: weight lambda of the redundancy-reduction (off-diagonal) term, >= 0.
      eps: added to the variance before the square root, >= 0 (1e-5 is BatchNorm's default; 0 gives the paper's
        Eq. 2 exactly; a constant feature then standardises to 0, its value for every eps > 0, with gradient 0).

    Returns:
      () scalar loss, dtype of the inputs.

    Raises:
      ValueError: bad shapes (see :func:`barlow_twins_theory`) or a negative ``lambda_offdiag`` / ``eps``.
      TypeError: the views are not floating or differ in dtype.

    References:
      Zbontar et al. 2021, Barlow Twins (arXiv 2103.03230), Eq. 1 (loss) and Eq. 2 (C).
    """
    _check_barlow_twins(lambda_offdiag, eps)
    z1, z2 = _validate_views(z1, z2)
    n = z1.shape[0]

    def standardise(z):
        zc = z - jnp.mean(z, axis=0, keepdims=True)
        v = jnp.mean(zc * zc, axis=0, keepdims=True) + eps
        # v = 0 only for a constant feature with eps = 0, where zc = 0 too: its column standardises to 0, the value
        # it has for every eps > 0 (so the eps -> 0 limit), with gradient 0. The inner where keeps 0 / sqrt(0)
        # out of the graph: jnp.where alone would pass its NaN gradient through ("double where").
        pos = v > 0
        return jnp.where(pos, zc / jnp.sqrt(jnp.where(pos, v, jnp.ones((), v.dtype))), jnp.zeros((), v.dtype))

    c = standardise(z1).T @ standardise(z2) * (1.0 / n)
    on = 1.0 - jnp.diagonal(c)
    return jnp.sum(on * on) + lambda_offdiag * _offdiag_sum_sq(c)


def _nt_xent(z1: jax.Array, z2: jax.Array, temperature, norm_floor: float) -> jax.Array:
    """NT-Xent over u = [z1; z2] normalised as u_a / max(|u_a|, norm_floor) (the shared body of both losses)."""
    z1, z2 = _validate_views(z1, z2)
    n = z1.shape[0]
    u = jnp.concatenate([z1, z2], axis=0)
    # sqrt(max(|u|^2, eps^2)) rather than max(|u|, eps): the gradient of |u| is 0/0 at u = 0.
    sq = jnp.sum(u * u, axis=1, keepdims=True)
    u = u / jnp.sqrt(jnp.maximum(sq, norm_floor * norm_floor))
    logits = (u @ u.T) * (1.0 / temperature)
    logits = jnp.where(jnp.eye(2 * n, dtype=bool), jnp.full((), -jnp.inf, logits.dtype), logits)
    positive = jnp.sum(u[:n] * u[n:], axis=1) * (1.0 / temperature)  # s_{a,p(a)}, the same for a and p(a)
    lse = jax.nn.logsumexp(logits, axis=1)
    return jnp.mean(lse) - jnp.mean(positive)


def simclr(z1: jax.Array, z2: jax.Array, *, temperature: float = 0.5) -> jax.Array:
    """SimCLR's NT-Xent loss on the cosine similarities of the 2n embeddings of a batch.

    With u = [z1; z2] (2n, d) normalised to unit length, s_ab = u_a . u_b and p(a) the partner of a (a +- n),
    L = (1/2n) sum_a [ -s_{a,p(a)}/tau + log sum_{b != a} exp(s_ab/tau) ]: each anchor has its partner as positive
    and the other 2n - 2 embeddings as negatives. Evaluated with a log-sum-exp. The norm is clipped at 1e-12 (as
    ``torch.nn.functional.normalize``) for numerical safety only, so zero embeddings give finite values and
    gradients. The loss is invariant to the scale of each embedding, hence to the scale of the output layer.

    Args:
      z1: (n, d) embeddings of the first views, n >= 2.
      z2: (n, d) embeddings of the second views; row i is the partner of ``z1[i]``.
      temperature: tau > 0; 0.5 by default, SimCLR's CIFAR-10 setting (Chen et al. 2020, Appendix B.9).

    Returns:
      () scalar loss, dtype of the inputs; log(2n - 1) when all embeddings are equal (or all zero).

    Raises:
      ValueError: bad shapes (see :func:`barlow_twins_theory`) or ``temperature <= 0``.
      TypeError: the views are not floating or differ in dtype.

    References:
      Chen et al. 2020, SimCLR (arXiv 2002.05709), Eq. 1, Algorithm 1 and Appendix B.9.

    Example:
      >>> z = jnp.ones((2, 3))  # all embeddings equal: every anchor sees 2n - 1 = 3 equal logits
      >>> round(float(simclr(z, z)), 6) == round(float(jnp.log(3.0)), 6)
      True
    """
    _check_simclr(temperature)
    return _nt_xent(z1, z2, temperature, _NORM_EPS)


def infonce_floored(z1: jax.Array, z2: jax.Array, *, temperature: float = 0.2, norm_floor: float = 1.0) -> jax.Array:
    """A theory form of the contrastive loss (not SimCLR): NT-Xent with the norm floored at ``norm_floor``.

    As :func:`simclr`, but each embedding is divided by max(|u_a|, norm_floor) instead of |u_a|. This projects
    embeddings onto the ball of radius ``norm_floor`` instead of onto the sphere: embeddings much shorter than the
    floor are compared by their scaled dot product (the loss is then a smooth function of z / norm_floor whose
    small-z expansion is the spectral contrastive loss, the regime of the linear theory), and embeddings longer
    than it by their cosine, as in SimCLR. Cosine normalisation alone makes SimCLR invariant to the scale of the
    output layer, so "small initialisation" has no effect on it; the floor restores a small-norm regime in which
    it does. Use it as the contrastive counterpart of :func:`barlow_twins_theory`, never in place of SimCLR.

    Args:
      z1: (n, d) embeddings of the first views, n >= 2.
      z2: (n, d) embeddings of the second views; row i is the partner of ``z1[i]``.
      temperature: tau > 0.
      norm_floor: the smallest norm divided by in the normalisation, > 0.

    Returns:
      () scalar loss, dtype of the inputs; log(2n - 1) when all embeddings are equal (or all zero).

    Raises:
      ValueError: bad shapes (see :func:`barlow_twins_theory`), ``temperature <= 0`` or ``norm_floor <= 0``.
      TypeError: the views are not floating or differ in dtype.

    References:
      Chen et al. 2020, SimCLR (arXiv 2002.05709), Eq. 1; HaoChen et al. 2021 (spectral contrastive loss,
      arXiv 2106.04156) for the small-logit expansion.

    Example:
      >>> z = jnp.full((2, 3), 1e-3)  # far below the floor: all logits ~0, the loss ~log(2n - 1)
      >>> round(float(infonce_floored(z, z)), 4) == round(float(jnp.log(3.0)), 4)
      True
    """
    _check_infonce_floored(temperature, norm_floor)
    return _nt_xent(z1, z2, temperature, norm_floor)


def vicreg(
    z1: jax.Array,
    z2: jax.Array,
    *,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    eps: float = 1e-4,
    gamma: float = 1.0,
    convention: VICRegConvention = "reference",
) -> jax.Array:
    """VICReg loss: invariance + variance hinge + covariance decorrelation.

    Per view Z (n, d), with the unbiased (1/(n-1)) variance and the centred unbiased covariance Cov(Z):

        v(Z) = (1/d) sum_k relu(gamma - sqrt(Var(z^k) + eps))      (paper Eqs. 1-2)
        c(Z) = (1/d) sum_{k != l} Cov(Z)_kl^2                        (paper Eqs. 3-4)

    Paper vs reference code. The two differ in how the invariance and variance terms are averaged:

    * invariance: the paper's Eq. 5 is s = (1/n) sum_i ||z1_i - z2_i||^2 (summed over the d features, "without
      any normalization"); the reference code uses ``F.mse_loss(x, y)`` = mean_{i,k} (z1 - z2)^2, i.e. s / d.
    * variance: the paper's Eq. 6 adds v(Z1) + v(Z2); the reference code has
      ``std_loss = mean(relu(1 - std_x)) / 2 + mean(relu(1 - std_y)) / 2`` = (v(Z1) + v(Z2)) / 2.
    * covariance: both add c(Z1) + c(Z2) (``off_diag(cov_x).pow(2).sum() / d + off_diag(cov_y).pow(2).sum() / d``),
      so the switch leaves it unchanged.

    ``convention="reference"`` (the default) reproduces the reference code, whose normalisation the published
    weights 25 / 25 / 1 were tuned with: L = sim_weight * mean_{i,k}(z1 - z2)^2 + var_weight * (v(Z1) + v(Z2)) / 2
    + cov_weight * (c(Z1) + c(Z2)). ``convention="paper"`` is Eq. 6 read literally:
    L = sim_weight * (1/n) sum_i ||z1_i - z2_i||^2 + var_weight * (v(Z1) + v(Z2)) + cov_weight * (c(Z1) + c(Z2)).
    With the same weights the paper's form weights invariance d times and variance 2 times more.

    Args:
      z1: (n, d) embeddings of the first views, n >= 2.
      z2: (n, d) embeddings of the second views; row i is the partner of ``z1[i]``.
      sim_weight: lambda, the weight of the invariance term, >= 0.
      var_weight: mu, the weight of the variance term, >= 0.
      cov_weight: nu, the weight of the covariance term, >= 0.
      eps: added to the variance inside the square root, >= 0 (keeps the gradient bounded near a constant feature;
        with eps = 0 a constant feature has std 0 and gradient 0 there, finite as well).
      gamma: target standard deviation of the hinge.
      convention: ``"reference"`` or ``"paper"``, as above.

    Returns:
      () scalar loss, dtype of the inputs.

    Raises:
      ValueError: bad shapes (see :func:`barlow_twins_theory`), negative weights or eps, or an unknown
        ``convention``.
      TypeError: the views are not floating or differ in dtype.

    References:
      Bardes, Ponce, LeCun 2022, VICReg (arXiv 2105.04906), Section 3.2, Eqs. 1-6;
      github.com/facebookresearch/vicreg, ``main_vicreg.py`` (``VICReg.forward``).

    Example:
      >>> z = jnp.zeros((4, 3))  # collapsed: each feature's hinge is 1 - sqrt(1e-4) = 0.99
      >>> round(float(vicreg(z, z)), 6), round(float(vicreg(z, z, convention="paper")), 6)
      (24.75, 49.5)
    """
    _check_vicreg(sim_weight, var_weight, cov_weight, eps, gamma, convention)
    z1, z2 = _validate_views(z1, z2)
    n, d = z1.shape

    def variance_and_covariance(z):
        zc = z - jnp.mean(z, axis=0, keepdims=True)
        cov = (zc.T @ zc) * (1.0 / (n - 1))
        v = jnp.diagonal(cov) + eps
        # sqrt has an infinite derivative at 0, which the chain rule multiplies by d Var / dz = 0 for a constant
        # feature: NaN when eps = 0. There std = 0 (its value) with gradient 0 (the even function sqrt(Var) of a
        # constant column's perturbation has central derivative 0); the inner where keeps sqrt off 0.
        pos = v > 0
        std = jnp.where(pos, jnp.sqrt(jnp.where(pos, v, jnp.ones((), v.dtype))), jnp.zeros((), v.dtype))
        return jnp.mean(jax.nn.relu(gamma - std)), _offdiag_sum_sq(cov) * (1.0 / d)

    v1, c1 = variance_and_covariance(z1)
    v2, c2 = variance_and_covariance(z2)
    diff = z1 - z2
    mse = jnp.mean(diff * diff)
    if convention == "reference":
        invariance, variance = mse, (v1 + v2) * 0.5
    else:
        invariance, variance = mse * float(d), v1 + v2
    return sim_weight * invariance + var_weight * variance + cov_weight * (c1 + c2)


# ----------------------------------------------------------------------------------------------------------------
# Registry.

LOSSES: dict[str, Callable[..., jax.Array]] = {
    "barlow_twins_theory": barlow_twins_theory,
    "barlow_twins": barlow_twins,
    "simclr": simclr,
    "infonce_floored": infonce_floored,
    "vicreg": vicreg,
}
#: The losses as published (the names users know), and the theory forms, which never stand in for them.
PUBLISHED: tuple[str, ...] = ("barlow_twins", "simclr", "vicreg")
THEORY_FORMS: tuple[str, ...] = ("barlow_twins_theory", "infonce_floored")

_CHECKS: dict[str, Callable[..., None]] = {
    "barlow_twins_theory": _check_barlow_twins_theory,
    "barlow_twins": _check_barlow_twins,
    "simclr": _check_simclr,
    "infonce_floored": _check_infonce_floored,
    "vicreg": _check_vicreg,
}


def _hparam_defaults(fn: Callable[..., jax.Array]) -> dict[str, object]:
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def get_loss(name: str, **hparams) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The loss ``name`` with its hyper-parameters fixed, as a function ``(z1, z2) -> scalar``.

    Names and values are checked here, before anything is computed.

    Args:
      name: a key of :data:`LOSSES`.
      **hparams: keyword-only hyper-parameters of that loss (e.g. ``temperature`` for ``"simclr"``).

    Returns:
      ``functools.partial(LOSSES[name], **hparams)``.

    Raises:
      ValueError: unknown loss name, unknown hyper-parameter name, or an invalid hyper-parameter value.

    Example:
      >>> loss_fn = get_loss("simclr", temperature=0.1)
      >>> loss_fn.keywords
      {'temperature': 0.1}
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names are {sorted(LOSSES)}")
    fn = LOSSES[name]
    defaults = _hparam_defaults(fn)
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown hyper-parameter(s) {unknown} for loss {name!r}; valid ones are {sorted(defaults) or 'none'}"
        )
    _CHECKS[name](**{**defaults, **hparams})
    return functools.partial(fn, **hparams)
