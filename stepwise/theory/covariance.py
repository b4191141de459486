"""The covariance operator of contrastive learning in bias-free ReLU networks (Tian et al. 2020, theory note tian2020).

Network, data and losses (the normalisation every constant below depends on):

    f_0 = x,  g_l = W_l f_{l-1},  f_l = relu(g_l)  (l < L),  f_L = W_L f_{L-1} (``linear_top``) or relu(g_L)
    r(x, x') = 1/2 ||f_L(x) - f_L(x')||^2          (note 1.1: the factor 1/2; no output normalisation)
    population: Z instances z with probabilities p_z, each with A equally likely augmented views x_{z,a}

Connection (note 1.3): f_L(x) = J_l(x) W_l f_{l-1}(x) with J_l = df_L/dg_l, so f_L(x) = K_l(x)^T vec(W_l) with

    K_l(x) = J_l(x)^T (x) f_{l-1}(x)    in R^{(n_l n_{l-1}) x n_L}    (row-major vec(W_l), i.e. ``W.reshape(-1)``;
                                                                      the paper's f (x) J^T is the column-major form)

Covariance operator (note 2.1; the paper's Theorem 1, statement [M], algebra [D]):

    Kbar_l(z) = E_aug[K_l(x) | z],   OP_l = V_z[Kbar_l] = sum_z p_z (Kbar_l(z) - Kbar_l)(Kbar_l(z) - Kbar_l)^T

and for L_simp = r+ - r- with x, x+ iid views of z and x- a view of an independent z' (draws with replacement):

    E[-grad_{vec W_l} L_simp] = 2 OP_l vec(W_l)          [D]: exact a.e. for bias-free ReLU nets.

The factor 2 comes from r = 1/2 ||.||^2 with both branches differentiated; the paper (as remembered, [M]) writes
vec(Delta W_l) = OP_l vec(W_l) and absorbs the constant into the learning rate.

Weighted version (note 2.2, the paper's Theorem 2 [M]; the exact form is [D]): for a per-triple weight beta on
(r+ - r-) that is detached, symmetric and a function alpha(z, z') of the instances only,

    E[-grad sum beta (r+ - r-)] = 2 OP^alpha vec(W_l),   OP^alpha = 1/2 sum_{z,z'} p_z p_z' alpha(z,z') dK dK^T,
    dK = Kbar(z) - Kbar(z').

With alpha = 1 this is OP. When beta depends on the augmented views (soft-triplet and InfoNCE weights, see
:func:`contrastive_weights`) the within-instance augmentation variances no longer cancel and a residue remains.
:func:`exact_cov_loss` is the loss whose weights depend only on the un-augmented ("clean") views, the exact case
(note 2.3, [V-code] ``ssl/real-dataset/loss/nt_xent.py`` with ``exact_cov_unaug_sim``).

Everything is a JAX function (dtype follows the input); pass float64 inputs for the identities, which hold to
round-off: called eagerly, every public function computes float64 inputs in float64 even when the process has not
enabled x64 (:mod:`stepwise._precision`).

The reference code ([V-code] ``ssl/hltm``) logs a related diagnostic, ``conn_<node>``: the Frobenius norm of
sum_c p_c (Kbar_c - Kbar)(Kbar_c - Kbar)^T over the root label c, but with its connection contracted over the node's
units and reshaped to (in x hid_root, hid_node), and with biases and l2-normalised outputs, for which the identity is
only approximate (note 2.1 and 5.2). Here OP_l is the paper's (n_l n_{l-1})-square operator of a bias-free network.

References:
    Y. Tian, L. Yu, X. Chen, S. Ganguli. Understanding Self-supervised Learning with Dual Deep Networks.
    arXiv 2010.00578 (2020), Theorems 1-2 and the exact-covariance objective (numbering depends on the version).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from stepwise._precision import float64

__all__ = [
    "augmentation_variance",
    "between_pair_weights",
    "connection",
    "contrastive_weights",
    "covariance_operator",
    "exact_cov_loss",
    "expected_loss",
    "infonce_loss",
    "mean_connection",
    "mean_triplet_weight",
    "pair_distance",
    "population_gradient",
    "predicted_update",
    "rank_bound",
    "relu_net",
    "simple_loss",
    "soft_triplet_loss",
    "total_variance",
    "view_connections",
    "weighted_covariance_operator",
]

WeightLoss = Literal["simple", "soft_triplet", "infonce"]


# ----------------------------------------------------------------------------------------------------------------
# Validation (shapes are static, so these also run under jit; value checks only on concrete arrays).


def _concrete(a) -> np.ndarray | None:
    try:
        return np.asarray(a)
    except jax.errors.TracerArrayConversionError:
        return None


def _check_weights(weights: Sequence[jax.Array]) -> tuple[int, ...]:
    """Returns the widths (n_0, ..., n_L) or raises ValueError."""
    if len(weights) < 1:
        raise ValueError("weights must be a non-empty sequence of (n_l, n_{l-1}) matrices W_1..W_L")
    widths = []
    for i, w in enumerate(weights, start=1):
        if jnp.ndim(w) != 2:
            raise ValueError(f"W_{i} must be a 2-D (n_{i}, n_{i - 1}) matrix; got shape {jnp.shape(w)}")
        n_out, n_in = jnp.shape(w)
        if widths and n_in != widths[-1]:
            raise ValueError(f"W_{i} has {n_in} input columns but layer {i - 1} has {widths[-1]} units "
                             f"(shapes {[tuple(jnp.shape(v)) for v in weights]})")
        if not widths:
            widths.append(n_in)
        widths.append(n_out)
    return tuple(widths)


def _check_layer(layer: int, n_layers: int) -> int:
    if not isinstance(layer, (int, np.integer)) or not 1 <= layer <= n_layers:
        raise ValueError(f"layer must be an integer in 1..L = 1..{n_layers}; got {layer!r}")
    return int(layer)


def _check_views(views: jax.Array, n0: int) -> tuple[int, int]:
    if jnp.ndim(views) != 3 or jnp.shape(views)[2] != n0:
        raise ValueError(f"views must have shape (Z instances, A augmentations, n_0 = {n0}); got {jnp.shape(views)}")
    z, a, _ = jnp.shape(views)
    if z < 1 or a < 1:
        raise ValueError(f"views needs at least one instance and one augmentation; got shape {jnp.shape(views)}")
    return z, a


def _probs(probs: jax.Array | None, z: int, dtype) -> jax.Array:
    if probs is None:
        return jnp.full((z,), 1.0 / z, dtype=dtype)
    if jnp.shape(probs) != (z,):
        raise ValueError(f"probs must have shape (Z,) = ({z},), one probability per instance; got {jnp.shape(probs)}")
    p = _concrete(probs)
    if p is not None and (np.any(p < 0) or abs(float(p.sum()) - 1.0) > 1e-9):
        raise ValueError(f"probs must be non-negative and sum to 1; got min {p.min():.3g}, sum {p.sum():.12g}")
    return jnp.asarray(probs, dtype=dtype)


def _check_alpha(alpha: jax.Array, z: int) -> jax.Array:
    if jnp.shape(alpha) != (z, z):
        raise ValueError(f"alpha must be a (Z, Z) = ({z}, {z}) matrix of instance-pair weights; got {jnp.shape(alpha)}")
    a = _concrete(alpha)
    if a is not None:
        scale = max(float(np.max(np.abs(a))), np.finfo(np.float64).tiny)
        asym = float(np.max(np.abs(a - a.T)))
        if asym > 1e-12 * scale:
            raise ValueError(f"alpha(z, z') must be symmetric (the exact weighted identity needs it); "
                             f"max |alpha - alpha^T| = {asym:.3e}")
    return alpha


# ----------------------------------------------------------------------------------------------------------------
# Network and connection.


@float64
def relu_net(weights: Sequence[jax.Array], x: jax.Array, *, linear_top: bool = True) -> jax.Array:
    """Bias-free ReLU network f_L(x).

    Args:
      weights: W_1..W_L, W_l of shape (n_l, n_{l-1}).
      x: (N, n_0) inputs.
      linear_top: no ReLU after the last layer (the note's "the top layer may be linear").

    Returns:
      (N, n_L) outputs.
    """
    widths = _check_weights(weights)
    if jnp.ndim(x) != 2 or jnp.shape(x)[1] != widths[0]:
        raise ValueError(f"x must have shape (N, n_0 = {widths[0]}); got {jnp.shape(x)}")
    f = x
    for i, w in enumerate(weights, start=1):
        g = f @ w.T
        f = g if (i == len(weights) and linear_top) else jax.nn.relu(g)
    return f


@float64
def connection(weights: Sequence[jax.Array], x: jax.Array, layer: int, *, linear_top: bool = True) -> jax.Array:
    """The connection K_l(x) = J_l(x)^T (x) f_{l-1}(x) for each input, with f_L(x) = K_l(x)^T vec(W_l).

    J_l = df_L/dg_l = W_L D_{L-1} W_{L-1} ... W_{l+1} D_l (D_k = diag(g_k > 0); D_L = I for a linear top), built
    from the forward pass. The gates are those of ``jax.nn.relu``'s derivative (0 at g = 0), so ``K_l^T`` equals
    ``jax.jacrev`` of f_L with respect to W_l wherever that exists (a.e.).

    Args:
      weights: W_1..W_L.
      x: (N, n_0) inputs.
      layer: l in 1..L.
      linear_top: as in :func:`relu_net`.

    Returns:
      (N, n_l n_{l-1}, n_L); row (i, j) -> i n_{l-1} + j matches the row-major ``W_l.reshape(-1)``.

    Example:
      >>> ws = [jnp.array([[1.0, 0.0], [0.0, -1.0]]), jnp.array([[2.0, 3.0]])]
      >>> connection(ws, jnp.array([[1.0, 2.0]]), 1)[0, :, 0].tolist()  # unit 2 is gated off (g = -2)
      [2.0, 4.0, 0.0, 0.0]
    """
    widths = _check_weights(weights)
    layer = _check_layer(layer, len(weights))
    if jnp.ndim(x) != 2 or jnp.shape(x)[1] != widths[0]:
        raise ValueError(f"x must have shape (N, n_0 = {widths[0]}); got {jnp.shape(x)}")
    n_layers = len(weights)
    f, fs, gates = x, [x], []
    for i, w in enumerate(weights, start=1):
        g = f @ w.T
        top_linear = i == n_layers and linear_top
        gate = jnp.ones_like(g) if top_linear else (g > 0).astype(g.dtype)
        f = g * gate
        fs.append(f)
        gates.append(gate)
    # J_L = D_L; J_k = J_{k+1} W_{k+1} D_k, batched: (N, n_L, n_k).
    n = jnp.shape(x)[0]
    jac = jnp.broadcast_to(jnp.eye(widths[-1], dtype=f.dtype), (n, widths[-1], widths[-1])) * gates[-1][:, None, :]
    for k in range(n_layers - 1, layer - 1, -1):  # k = L-1 .. l (1-based layer index of the gate)
        jac = jnp.einsum("nom,mk->nok", jac, weights[k]) * gates[k - 1][:, None, :]
    f_prev = fs[layer - 1]
    # K[n, (i, j), o] = J[n, o, i] f_prev[n, j]
    k_l = jnp.einsum("noi,nj->nijo", jac, f_prev)
    return k_l.reshape(n, widths[layer] * widths[layer - 1], widths[-1])


@float64
def view_connections(weights: Sequence[jax.Array], views: jax.Array, layer: int, *,
                     linear_top: bool = True) -> jax.Array:
    """K_l at every view of a finite population: (Z, A, n_0) -> (Z, A, n_l n_{l-1}, n_L)."""
    widths = _check_weights(weights)
    z, a = _check_views(views, widths[0])
    k = connection(weights, views.reshape(z * a, widths[0]), layer, linear_top=linear_top)
    return k.reshape(z, a, *k.shape[1:])


@float64
def mean_connection(weights: Sequence[jax.Array], views: jax.Array, layer: int, *,
                    linear_top: bool = True) -> jax.Array:
    """Kbar_l(z) = E_aug[K_l(x) | z] over the A equally likely views of each instance: (Z, n_l n_{l-1}, n_L)."""
    return jnp.mean(view_connections(weights, views, layer, linear_top=linear_top), axis=1)


# ----------------------------------------------------------------------------------------------------------------
# Operators.


def _outer_sum(d: jax.Array, w: jax.Array) -> jax.Array:
    """sum_i w_i d_i d_i^T for d: (M, P, n_L), w: (M,) -> (P, P)."""
    return jnp.einsum("m,mpo,mqo->pq", w, d, d)


@float64
def covariance_operator(kbar: jax.Array, probs: jax.Array | None = None) -> jax.Array:
    """OP = V_z[Kbar] = sum_z p_z (Kbar(z) - Kbar)(Kbar(z) - Kbar)^T (note 2.1; the paper's Theorem 1 [M]).

    Args:
      kbar: (Z, P, n_L) mean connections of the instances (:func:`mean_connection`).
      probs: (Z,) instance probabilities; None = uniform.

    Returns:
      (P, P) positive semi-definite, of rank <= (Z - 1) n_L (:func:`rank_bound`). For a binary instance (Z = 2)
      it equals p_0 p_1 dK dK^T with dK = Kbar(1) - Kbar(0) (note 2.5 [D]).
    """
    if jnp.ndim(kbar) != 3:
        raise ValueError(f"kbar must have shape (Z, P, n_L); got {jnp.shape(kbar)}")
    p = _probs(probs, jnp.shape(kbar)[0], kbar.dtype)
    centred = kbar - jnp.einsum("z,zpo->po", p, kbar)[None]
    return _outer_sum(centred, p)


@float64
def weighted_covariance_operator(kbar: jax.Array, alpha: jax.Array, probs: jax.Array | None = None) -> jax.Array:
    """OP^alpha = 1/2 sum_{z,z'} p_z p_z' alpha(z,z') (Kbar(z) - Kbar(z'))(Kbar(z) - Kbar(z'))^T (note 2.2).

    The 1/2 makes OP^1 = OP, so the expected update is 2 OP^alpha vec(W) in both cases. The weighted form is the
    paper's Theorem 2 as remembered ([M]); the exactness for detached symmetric alpha is derived ([D]).

    Args:
      kbar: (Z, P, n_L) mean connections.
      alpha: (Z, Z) symmetric instance-pair weights (checked when concrete).
      probs: (Z,) instance probabilities; None = uniform.

    Returns:
      (P, P) positive semi-definite when alpha >= 0.
    """
    if jnp.ndim(kbar) != 3:
        raise ValueError(f"kbar must have shape (Z, P, n_L); got {jnp.shape(kbar)}")
    z = jnp.shape(kbar)[0]
    alpha = _check_alpha(alpha, z)
    p = _probs(probs, z, kbar.dtype)
    diff = (kbar[:, None] - kbar[None, :]).reshape(z * z, *jnp.shape(kbar)[1:])
    w = 0.5 * (p[:, None] * p[None, :] * alpha).reshape(z * z)
    return _outer_sum(diff, w)


def _view_weights(k: jax.Array, probs: jax.Array | None) -> jax.Array:
    """(Z A,) the weight p_z / A of each view (z, a) of k: (Z, A, P, n_L), in the order of ``k.reshape(Z A, ...)``."""
    if jnp.ndim(k) != 4:
        raise ValueError(f"k must have shape (Z, A, P, n_L); got {jnp.shape(k)}")
    z, a = jnp.shape(k)[:2]
    return jnp.repeat(_probs(probs, z, k.dtype) / a, a)


@float64
def total_variance(k: jax.Array, probs: jax.Array | None = None) -> jax.Array:
    """V[K] over all views, sum_{z,a} (p_z / A) (K - E K)(K - E K)^T, for k: (Z, A, P, n_L)."""
    w = _view_weights(k, probs)
    flat = k.reshape(w.shape[0], *jnp.shape(k)[2:])
    return _outer_sum(flat - jnp.einsum("m,mpo->po", w, flat)[None], w)


@float64
def augmentation_variance(k: jax.Array, probs: jax.Array | None = None) -> jax.Array:
    """E_z V_aug[K | z] = sum_z p_z (1/A) sum_a (K_za - Kbar(z))(K_za - Kbar(z))^T, for k: (Z, A, P, n_L)."""
    w = _view_weights(k, probs)
    centred = (k - jnp.mean(k, axis=1, keepdims=True)).reshape(w.shape[0], *jnp.shape(k)[2:])
    return _outer_sum(centred, w)


@float64
def predicted_update(op: jax.Array, w: jax.Array) -> jax.Array:
    """The expected update E[-grad_{W_l} L] = 2 OP vec(W_l), returned with the shape of ``w`` (row-major vec).

    The paper ([M]) writes OP vec(W) with the 2 absorbed into the learning rate; the 2 here is exact [D] for
    r = 1/2 ||.||^2 with both branches differentiated.
    """
    p = jnp.size(w)
    if jnp.shape(op) != (p, p):
        raise ValueError(f"op must be ({p}, {p}) to act on vec(W) of W with shape {jnp.shape(w)}; got {jnp.shape(op)}")
    return (2.0 * op @ w.reshape(-1)).reshape(jnp.shape(w))


@float64
def rank_bound(n_instances: int, n_out: int, n_params: int) -> int:
    """rank(OP) <= min(P, (Z - 1) n_L): Z centred mean connections of n_L columns each sum to zero (note 2.5 [D])."""
    return int(min(n_params, (n_instances - 1) * n_out))


# ----------------------------------------------------------------------------------------------------------------
# Losses on distances and their weights (note 1.2).


@float64
def pair_distance(f1: jax.Array, f2: jax.Array) -> jax.Array:
    """r = 1/2 ||f1 - f2||^2 over the last axis (note 1.1; = 1 - cos for unit-norm outputs)."""
    return 0.5 * jnp.sum(jnp.square(f1 - f2), axis=-1)


@float64
def simple_loss(r_pos: jax.Array, r_neg: jax.Array) -> jax.Array:
    """L_simp = r+ - r- (H = 1), elementwise for r_pos: (...,) and r_neg: (..., 1) or (...,)."""
    r_neg = r_neg[..., 0] if jnp.ndim(r_neg) == jnp.ndim(r_pos) + 1 else r_neg
    return r_pos - r_neg


@float64
def soft_triplet_loss(r_pos: jax.Array, r_neg: jax.Array, *, tau: float, margin: float = 0.0) -> jax.Array:
    """L_tri = tau log(1 + exp((r+ - r- + r_0) / tau)) for r_pos: (...,), r_neg: (...,) (H = 1)."""
    if not tau > 0 or margin < 0:
        raise ValueError(f"soft triplet needs tau > 0 and margin r_0 >= 0; got tau={tau}, margin={margin}")
    return tau * jax.nn.softplus((r_pos - r_neg + margin) / tau)


@float64
def infonce_loss(r_pos: jax.Array, r_neg: jax.Array, *, tau: float) -> jax.Array:
    """L_nce = -tau log[e^{-r+/tau} / (e^{-r+/tau} + sum_k e^{-r-_k/tau})] for r_pos: (...,), r_neg: (..., H).

    This is the InfoNCE loss scaled by tau (note 1.2); the standard NT-Xent loss is L_nce / tau.
    """
    if not tau > 0:
        raise ValueError(f"InfoNCE needs tau > 0; got {tau}")
    if jnp.ndim(r_neg) != jnp.ndim(r_pos) + 1:
        raise ValueError(f"r_neg must have one more axis (H negatives) than r_pos; got {jnp.shape(r_neg)} vs "
                         f"{jnp.shape(r_pos)}")
    logits = jnp.concatenate([-r_pos[..., None], -r_neg], axis=-1) / tau
    return tau * (jax.scipy.special.logsumexp(logits, axis=-1) + r_pos / tau)


@float64
def contrastive_weights(loss: WeightLoss, r_pos: jax.Array, r_neg: jax.Array, *, tau: float = 1.0,
                        margin: float = 0.0) -> jax.Array:
    """The weights beta_k >= 0 of the common gradient form dL = sum_k beta_k d(r+ - r-_k) (note 1.2 [D]).

    simple: beta = 1; soft_triplet: beta = sigmoid((r+ - r- + r_0) / tau); infonce:
    beta_k = e^{-r-_k/tau} / (e^{-r+/tau} + sum_j e^{-r-_j/tau}). They depend on the augmented views through r+ and
    r-, which is why the weighted identity has a residue for these losses (note 2.2).

    Args:
      loss: which loss.
      r_pos: (...,) positive distances.
      r_neg: (..., H) negative distances (H = 1 for simple and soft_triplet).
      tau, margin: the loss's temperature and margin.

    Returns:
      (..., H) weights.
    """
    if jnp.ndim(r_neg) != jnp.ndim(r_pos) + 1:
        raise ValueError(f"r_neg must have shape (..., H); got {jnp.shape(r_neg)} for r_pos {jnp.shape(r_pos)}")
    if loss == "simple":
        return jnp.ones_like(r_neg)
    if loss == "soft_triplet":
        return jax.nn.sigmoid((r_pos[..., None] - r_neg + margin) / tau)
    if loss == "infonce":
        logits = jnp.concatenate([-r_pos[..., None], -r_neg], axis=-1) / tau
        return jax.nn.softmax(logits, axis=-1)[..., 1:]
    raise ValueError(f"unknown loss {loss!r}; expected 'simple', 'soft_triplet' or 'infonce'")


@float64
def exact_cov_loss(r_pos: jax.Array, r_neg: jax.Array, r_neg_clean: jax.Array, *, tau: float) -> jax.Array:
    """Exact-covariance loss: sum_k sg[w_k] (r+ - r-_k) with w_k = sigmoid(-r-_clean,k / tau) (note 2.3 [V-code]).

    The weight is the H = 1 InfoNCE weight with r+ = 0, computed from the un-augmented ("clean") views and
    detached, so it is a symmetric function alpha(z, z') of the instances and the weighted identity is exact.
    The reference code further divides by tau (2B - 2) (a constant) and uses r = 1 - cos on unit-norm outputs.

    Args:
      r_pos: (...,) positive distances of the augmented views.
      r_neg: (..., H) negative distances of the augmented views.
      r_neg_clean: (..., H) the same pairs' distances between un-augmented views.
      tau: temperature.

    Returns:
      (...,) per-anchor loss.
    """
    if not tau > 0:
        raise ValueError(f"exact_cov_loss needs tau > 0; got {tau}")
    if jnp.shape(r_neg) != jnp.shape(r_neg_clean) or jnp.ndim(r_neg) != jnp.ndim(r_pos) + 1:
        raise ValueError(f"r_neg and r_neg_clean must both have shape (*r_pos.shape, H); got {jnp.shape(r_neg)}, "
                         f"{jnp.shape(r_neg_clean)} for r_pos {jnp.shape(r_pos)}")
    w = jax.lax.stop_gradient(jax.nn.sigmoid(-r_neg_clean / tau))
    return jnp.sum(w * (r_pos[..., None] - r_neg), axis=-1)


@float64
def between_pair_weights(weights: Sequence[jax.Array], clean: jax.Array, *, tau: float,
                         linear_top: bool = True) -> jax.Array:
    """alpha(z, z') = sigmoid(-r(clean_z, clean_z') / tau): the exact-cov weights of :func:`exact_cov_loss`, (Z, Z)."""
    f = relu_net(weights, clean, linear_top=linear_top)
    return jax.nn.sigmoid(-pair_distance(f[:, None], f[None, :]) / tau)


# ----------------------------------------------------------------------------------------------------------------
# The obviously-correct reference: the exact population expectation of a triplet loss, differentiated by autodiff.

TripletWeight = Callable[[jax.Array, jax.Array], jax.Array]


def _triplet_distances(weights, views, linear_top: bool) -> tuple[jax.Array, jax.Array]:
    """r+ and r- of every triple (z, a, a', z', a'') of the population, both broadcast to (Z, A, A, Z, A)."""
    widths = _check_weights(weights)
    z, a = _check_views(views, widths[0])
    f = relu_net(weights, views.reshape(z * a, widths[0]), linear_top=linear_top).reshape(z, a, widths[-1])
    shape = (z, a, a, z, a)
    r_pos = pair_distance(f[:, :, None], f[:, None, :])  # (z, a, a')
    r_neg = pair_distance(f[:, :, None, None], f[None, None])  # (z, a, z', a'')
    return jnp.broadcast_to(r_pos[:, :, :, None, None], shape), jnp.broadcast_to(r_neg[:, :, None, :, :], shape)


@float64
def expected_loss(weights: Sequence[jax.Array], views: jax.Array, *, probs: jax.Array | None = None,
                  alpha: jax.Array | None = None, weight_fn: TripletWeight | None = None,
                  loss_fn: TripletWeight | None = None, linear_top: bool = True) -> jax.Array:
    """E[beta (r+ - r-)] (or E[loss_fn(r+, r-)]) over every triple of a finite population, enumerated (no sampling).

    z ~ p, x and x+ iid uniform over the A views of z (x+ = x included), z' ~ p independently (z' = z included),
    x- uniform over the views of z'. That is the iid-with-replacement population the identity needs (note 4.2).
    beta is 1 (L_simp), ``alpha[z, z']`` (detached instance-pair weights), or ``stop_gradient(weight_fn(r+, r-))``
    (a weight that depends on the augmented views, e.g. the InfoNCE weight). With ``loss_fn`` the per-triple loss
    is ``loss_fn(r+, r-)`` itself, differentiated through (e.g. L_nce with H = 1). Memory: Z^2 A^3 triples.

    Args:
      weights: W_1..W_L.
      views: (Z, A, n_0) population.
      probs: (Z,) instance probabilities; None = uniform.
      alpha: optional (Z, Z) symmetric weights.
      weight_fn: optional map (r_pos, r_neg) -> beta, both (Z, A, A, Z, A).
      loss_fn: optional map (r_pos, r_neg) -> per-triple loss, both (Z, A, A, Z, A).
      linear_top: as in :func:`relu_net`.

    Returns:
      The scalar expectation.
    """
    if sum(opt is not None for opt in (alpha, weight_fn, loss_fn)) > 1:
        raise ValueError("give at most one of alpha (instance-pair weights), weight_fn (augmentation-dependent "
                         "weights) and loss_fn (a per-triple loss)")
    r_pos5, r_neg5 = _triplet_distances(weights, views, linear_top)
    z, a = r_pos5.shape[:2]
    p = _probs(probs, z, r_pos5.dtype)
    prob = (p[:, None] * p[None, :])[:, None, None, :, None] / a**3
    if loss_fn is not None:
        return jnp.sum(prob * loss_fn(r_pos5, r_neg5))
    if alpha is not None:
        beta = jax.lax.stop_gradient(_check_alpha(alpha, z))[:, None, None, :, None]
    elif weight_fn is not None:
        beta = jax.lax.stop_gradient(weight_fn(r_pos5, r_neg5))
    else:
        beta = jnp.ones((), r_pos5.dtype)
    return jnp.sum(prob * beta * (r_pos5 - r_neg5))


@float64
def mean_triplet_weight(weights: Sequence[jax.Array], views: jax.Array, weight_fn: TripletWeight, *,
                        linear_top: bool = True) -> jax.Array:
    """alpha_bar(z, z') = E[beta | z, z'], symmetrised: the instance-pair weight an augmentation-dependent beta
    averages to, against which its residue is measured (note 2.2: Theorem 2's OP^alpha + residue, [M]). (Z, Z)."""
    r_pos5, r_neg5 = _triplet_distances(weights, views, linear_top)
    mean = jnp.mean(weight_fn(r_pos5, r_neg5), axis=(1, 2, 4))
    return 0.5 * (mean + mean.T)


@float64
def population_gradient(weights: Sequence[jax.Array], views: jax.Array, **kwargs) -> list[jax.Array]:
    """jax.grad of :func:`expected_loss` with respect to every W_l (same keyword arguments)."""
    return list(jax.grad(lambda ws: expected_loss(ws, views, **kwargs))(list(weights)))
