"""Checks for Tian et al. 2020 (theory note tian2020): the covariance operator, the SB-HLTM sampler, HLTM learning.

Each function returns :class:`~stepwise.compare.checks.Check` objects (and the numbers behind them); the experiment
writes them to results.json and the tests assert them, so both use the same code. Every reason says where its
statement comes from, with the note's labels: [M] the paper as remembered (wording and constants unchecked),
[D] derived in the note and true whatever the paper says, [V-code]/[V-abs] checked in the official code / abstract,
[R] our own re-run of the official HLTM procedure (not numbers from the paper).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from stepwise._precision import float64
from stepwise.compare.checks import Check, check
from stepwise.theory import covariance as cov

__all__ = ["REFERENCE_DIFFERENCES", "REFERENCE_R", "best_unit_correlation", "covariance_checks", "hltm_learning_checks",
           "hltm_sampler_checks", "level_correlations", "linear_alignment_checks", "reference_r"]

# Relative round-off of the float64 identities is ~1e-15 (sums of O(P) products); 1e-6 is the bound.
IDENTITY_TOL = 1e-6
# An eigenvalue of OP counts towards its rank above this fraction of the largest one (float64 round-off ~1e-16).
RANK_RTOL = 1e-10
# "Visibly fails": the augmentation-dependent residue must exceed the exact identity's tolerance 10^4-fold.
RESIDUE_MIN = 1e-2


def _rel(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(b), jnp.finfo(b.dtype).tiny)


@functools.partial(jax.jit, static_argnames=("tau", "linear_top"))
def _covariance_quantities(weights, views, clean, probs, *, tau: float, linear_top: bool) -> dict[str, list]:
    """Everything behind :func:`covariance_checks` in one XLA program (eager dispatch would compile op by op)."""
    kw = dict(probs=probs, linear_top=linear_top)
    alpha = cov.between_pair_weights(weights, clean, tau=tau, linear_top=linear_top)

    def nce_weight(r_pos, r_neg):
        return cov.contrastive_weights("infonce", r_pos, r_neg[..., None], tau=tau)[..., 0]

    def triplet_weight(r_pos, r_neg):
        return cov.contrastive_weights("soft_triplet", r_pos, r_neg[..., None], tau=tau, margin=0.1)[..., 0]

    alpha_nce = cov.mean_triplet_weight(weights, views, nce_weight, linear_top=linear_top)
    grads = {
        "simple": cov.population_gradient(weights, views, **kw),
        "exact_cov": cov.population_gradient(weights, views, alpha=alpha, **kw),
        "nce_weighted": cov.population_gradient(weights, views, weight_fn=nce_weight, **kw),
        "nce": cov.population_gradient(
            weights, views, loss_fn=lambda rp, rn: cov.infonce_loss(rp, rn[..., None], tau=tau), **kw),
        "triplet_weighted": cov.population_gradient(weights, views, weight_fn=triplet_weight, **kw),
        "triplet": cov.population_gradient(
            weights, views, loss_fn=lambda rp, rn: cov.soft_triplet_loss(rp, rn, tau=tau, margin=0.1), **kw),
    }
    out: dict[str, list] = {k: [] for k in ("identity", "weighted", "residue", "op", "variance_decomposition",
                                            "binary_outer_product", "weight_formula")}
    for layer in range(1, len(weights) + 1):
        i, w = layer - 1, weights[layer - 1]
        k = cov.view_connections(weights, views, layer, linear_top=linear_top)
        kbar = jnp.mean(k, axis=1)
        op = cov.covariance_operator(kbar, probs)
        out["op"].append(op)
        out["identity"].append(_rel(-grads["simple"][i], cov.predicted_update(op, w)))
        op_alpha = cov.weighted_covariance_operator(kbar, alpha, probs)
        out["weighted"].append(_rel(-grads["exact_cov"][i], cov.predicted_update(op_alpha, w)))
        op_nce = cov.weighted_covariance_operator(kbar, alpha_nce, probs)
        out["residue"].append(_rel(-grads["nce_weighted"][i], cov.predicted_update(op_nce, w)))
        decomposition = cov.total_variance(k, probs) - cov.augmentation_variance(k, probs)
        out["variance_decomposition"].append(_rel(decomposition, op))
        if kbar.shape[0] == 2:
            dk = kbar[1] - kbar[0]
            out["binary_outer_product"].append(_rel(probs[0] * probs[1] * dk @ dk.T, op))
        out["weight_formula"].append(jnp.maximum(_rel(grads["nce_weighted"][i], grads["nce"][i]),
                                                 _rel(grads["triplet_weighted"][i], grads["triplet"][i])))
    out["alpha"], out["alpha_nce"] = [alpha], [alpha_nce]
    return out


@float64
def covariance_checks(
    weights: Sequence[jax.Array],
    views: jax.Array,
    *,
    clean: jax.Array,
    probs: jax.Array | None = None,
    tau: float = 1.0,
    linear_top: bool = True,
) -> tuple[list[Check], dict[str, Any]]:
    """The covariance-operator identities of a bias-free ReLU net on an exact finite population, every layer.

    Pass float64 arrays (computed in float64 whatever the x64 flag): the identities hold to round-off. The reference
    for every expected update is ``jax.grad`` of the enumerated population loss
    (:func:`stepwise.theory.covariance.expected_loss`).

    Args:
      weights: W_1..W_L of the network (:func:`stepwise.theory.covariance.relu_net`).
      views: (Z, A, n_0) population: A equally likely augmented views of each of Z instances.
      clean: (Z, n_0) one un-augmented view per instance; the exact-cov weights alpha(z, z') come from it.
      probs: (Z,) instance probabilities (None = uniform).
      tau: temperature of the exact-cov, soft-triplet (margin 0.1) and InfoNCE weights.
      linear_top: as in :func:`~stepwise.theory.covariance.relu_net`.

    Returns:
      ``(checks, summary)``; ``summary`` holds the per-layer values behind every check.
    """
    weights = list(weights)
    z = views.shape[0]
    probs = jnp.full((z,), 1.0 / z, views.dtype) if probs is None else jnp.asarray(probs, views.dtype)
    p = np.asarray(probs)
    if p.shape != (z,) or np.any(p < 0) or abs(float(p.sum()) - 1.0) > 1e-9:
        raise ValueError(f"probs must be {z} non-negative instance probabilities summing to 1; got {p.tolist()}")
    q = jax.device_get(_covariance_quantities(weights, views, clean, probs, tau=float(tau), linear_top=linear_top))
    per_layer: dict[str, list] = {k: [float(v) for v in q[k]] for k in (
        "identity", "weighted", "residue", "variance_decomposition", "binary_outer_product", "weight_formula")}
    per_layer["min_eig_rel"], per_layer["rank"], per_layer["rank_bound"] = [], [], []
    n_out = weights[-1].shape[0]
    for op in q["op"]:
        eig = np.linalg.eigvalsh(np.asarray(op, dtype=np.float64))
        top = max(float(eig[-1]), np.finfo(np.float64).tiny)
        per_layer["min_eig_rel"].append(float(eig[0]) / top)
        per_layer["rank"].append(int(np.sum(eig > RANK_RTOL * top)))
        per_layer["rank_bound"].append(cov.rank_bound(z, n_out, op.shape[0]))

    rank_excess = max(r - b for r, b in zip(per_layer["rank"], per_layer["rank_bound"]))
    checks = [
        check(
            "op_identity_rel_error", max(per_layer["identity"]), IDENTITY_TOL, kind="theory",
            reason="[D] E[-grad L_simp] = 2 OP vec(W) exactly (a.e.) for a bias-free ReLU net without output "
            "normalisation on an iid-with-replacement population: the augmentation variances cancel. The paper "
            "([M], Theorem 1) states vec(dW) = OP vec(W), the factor 2 (from r = 1/2||.||^2, both branches "
            "differentiated) absorbed into the learning rate. 1e-6 = issue bound; float64 round-off is ~1e-15",
            description="max over layers of ||-grad E[L_simp] - 2 OP_l vec(W_l)|| / ||2 OP_l vec(W_l)||, gradient "
            "by jax.grad of the enumerated population loss",
            measured=per_layer["identity"],
        ),
        check(
            "weighted_identity_rel_error", max(per_layer["weighted"]), IDENTITY_TOL, kind="theory",
            reason="[D] with detached symmetric weights alpha(z,z') (exact-cov loss, [V-code] nt_xent.py with "
            "exact_cov_unaug_sim: sigmoid(-r/tau) of the un-augmented views) the weighted identity "
            "E[-grad] = 2 OP^alpha vec(W) has no residue; the weighted form itself is the paper's Theorem 2 [M]",
            description="max over layers of the relative error of 2 OP^alpha vec(W_l) against -grad of the "
            "population exact-cov loss",
            measured=per_layer["weighted"],
        ),
        check(
            "aug_weight_residue", min(per_layer["residue"]), RESIDUE_MIN, op=">=", kind="theory",
            reason="[D] when beta depends on the augmented views (here the H = 1 InfoNCE weight "
            "sigmoid((r+ - r-)/tau)) the augmentation variances no longer cancel: Theorem 2's residue [M]. It must "
            "be visibly non-zero (>= 1e4 x the exact tolerance) against OP^alpha_bar, alpha_bar = E[beta | z, z']",
            description="min over layers of ||-grad - 2 OP^alpha_bar vec(W)|| / ||2 OP^alpha_bar vec(W)|| for "
            "detached InfoNCE weights",
            measured=per_layer["residue"],
        ),
        check(
            "op_min_eigenvalue_rel", min(per_layer["min_eig_rel"]), -RANK_RTOL, op=">=", kind="consistency",
            reason="[D] by construction: OP = V_z[Kbar] is computed as a covariance (a p-weighted sum of outer "
            "products), hence PSD (the paper states it [M]); tests the code. float64 round-off gives eigenvalues "
            "~ -1e-16 x the largest",
            description="min over layers of lambda_min(OP_l) / lambda_max(OP_l)",
            measured=per_layer["min_eig_rel"],
        ),
        check(
            "op_rank_excess", rank_excess, 0, kind="consistency",
            reason="[D] by construction: Z centred mean connections with n_L columns each span <= (Z - 1) n_L "
            "directions; for a binary root (Z = 2, SB-HLTM) rank(OP) <= n_L (note 2.5 / checklist 4); tests the code",
            description=f"max over layers of numerical rank(OP_l) (eigenvalues > {RANK_RTOL:g} x max) minus "
            "min(P, (Z - 1) n_L)",
            predicted=per_layer["rank_bound"], measured=per_layer["rank"],
        ),
        check(
            "variance_decomposition_rel_error", max(per_layer["variance_decomposition"]), 1e-8,
            kind="consistency",
            reason="[D] by construction (law of total variance, exact on a finite population): V[K] - E_z "
            "V_aug[K|z] = OP, three implementations of one identity; OP keeps the between-instance part only. "
            "Relative to ||OP|| (smaller than ||V[K]||), hence 1e-8 rather than round-off",
            description="max over layers of ||V[K] - E_z V_aug[K|z] - OP|| / ||OP||",
            measured=per_layer["variance_decomposition"],
        ),
        check(
            "loss_weight_formula_rel_error", max(per_layer["weight_formula"]), 1e-10, kind="theory",
            reason="[D] note 1.2: grad L = sum_k beta_k grad(r+ - r-_k) with beta = sigmoid((r+ - r- + r0)/tau) "
            "(soft triplet) and the softmax weight (InfoNCE); both sides by autodiff, equal to round-off",
            description="max over layers and over {soft triplet (r0 = 0.1), InfoNCE (H = 1)} of the relative "
            "difference between the population gradient of the loss and of sg(beta) (r+ - r-)",
            measured=per_layer["weight_formula"],
        ),
    ]
    if z == 2:
        checks.append(check(
            "binary_root_outer_product_rel_error", max(per_layer["binary_outer_product"]), 1e-10,
            kind="consistency",
            reason="[D] by construction (algebra of a two-point covariance, note 2.5): for a binary instance OP = "
            "p0 p1 dK dK^T with dK = Kbar(1) - Kbar(0); tests the code; float64 round-off",
            description="max over layers of ||OP - p0 p1 dK dK^T|| / ||OP||",
            measured=per_layer["binary_outer_product"],
        ))
    summary = {"tau": tau, "n_instances": z, "n_views": int(views.shape[1]), "per_layer": per_layer,
               "alpha_exact_cov": np.asarray(q["alpha"][0]), "alpha_bar_nce": np.asarray(q["alpha_nce"][0])}
    return checks, summary


# ----------------------------------------------------------------------------------------------------------------
# SB-HLTM sampler.


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise Pearson correlation of (N, k) arrays (0 where a column is constant)."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    den = np.sqrt((a * a).mean(axis=0) * (b * b).mean(axis=0))
    return np.divide((a * b).mean(axis=0), den, out=np.zeros(a.shape[1]), where=den > 0)


@float64
def hltm_sampler_checks(
    edge_polarities: Sequence[np.ndarray],
    path_polarities: Sequence[np.ndarray],
    children: int,
    views: Any,
) -> tuple[list[Check], dict[str, Any]]:
    """Statistics of SB-HLTM samples against the exact model (note 2.5 and checklist 6, all [D]).

    Args:
      edge_polarities: per level t = 1..depth, (children**t,) polarity of each node's edge to its parent.
      path_polarities: per level t = 0..depth, (children**t,) products rho_0mu (the prediction of corr(z_mu, z0)).
      children: children per node.
      views: an :class:`~stepwise.data.hltm.HLTMViews` (anything with ``latents``, ``latents_pos``,
        ``latents_neg``: per level (N, children**t) integer arrays).

    Returns:
      ``(checks, summary)``. corr(z_mu, z0) must be within 3/sqrt(N) of rho_0mu at every node, as the issue
      prescribes; the other statistics use worst-case standard errors (1/sqrt(N) for a correlation, 1/(2 sqrt(N))
      for a frequency) times a family-wise 3-sigma factor over the nodes.
    """
    lat = [np.asarray(z, dtype=np.float64) for z in views.latents]
    lat_pos = [np.asarray(z, dtype=np.float64) for z in views.latents_pos]
    root_neg = np.asarray(views.latents_neg[0], dtype=np.float64)[:, 0]
    n = lat[0].shape[0]
    root = lat[0][:, 0]
    corr_root = [_pearson(z, np.repeat(root[:, None], z.shape[1], axis=1)) for z in lat[1:]]
    err_corr = np.concatenate([np.abs(c - np.asarray(p)) for c, p in zip(corr_root, path_polarities[1:])])
    agree = [np.mean(lat[t + 1] == np.repeat(lat[t], children, axis=1), axis=0) for t in range(len(lat) - 1)]
    err_agree = np.concatenate([np.abs(a - (1.0 + np.asarray(r)) / 2.0) for a, r in zip(agree, edge_polarities)])
    corr_pos = [_pearson(z, zp) for z, zp in zip(lat[1:], lat_pos[1:])]
    err_pos = np.concatenate([np.abs(c - np.asarray(p) ** 2) for c, p in zip(corr_pos, path_polarities[1:])])
    sqrt_n = np.sqrt(n)
    # Family-wise 3 sigma over the m nodes (Bonferroni: each gets 0.27% / m) for the checks the issue leaves open.
    z_m = float(scipy.stats.norm.isf(0.0027 / (2 * err_agree.size)))
    checks = [
        check(
            "hltm_corr_root_max_error", float(err_corr.max()), 3.0 / sqrt_n, kind="consistency",
            reason="[D] tests our sampler against the exact model: polarities multiply along a path, corr(z_mu, z0) "
            "= prod of rho on the path root -> mu; the sample correlation's standard error is <= 1/sqrt(N), the "
            "issue's bound is 3/sqrt(N)",
            description=f"max over all {err_corr.size} nodes below the root of |corr(z_mu, z0) - rho_0mu| "
            f"(N = {n})",
        ),
        check(
            "hltm_edge_agreement_max_error", float(err_agree.max()), 0.5 * z_m / sqrt_n, kind="consistency",
            reason="[D] tests our sampler against the definition of the SB-HLTM (note 2.5 [M + V-code]): "
            "P(z_nu = z_mu) = (1 + rho)/2 on every "
            f"edge; a frequency's standard error is <= 1/(2 sqrt(N)); bound z = {z_m:.2f} of them (family-wise "
            f"3 sigma over the {err_agree.size} edges)",
            description=f"max over all {err_agree.size} edges of |P(z_child = z_parent) - (1 + rho)/2|",
        ),
        check(
            "hltm_positive_corr_max_error", float(err_pos.max()), z_m / sqrt_n, kind="consistency",
            reason="[D] tests our sampler: the augmentation resamples every latent below the root: two samples of "
            "z_mu given the "
            "same root are conditionally independent, so corr(z_mu, z_mu+) = rho_0mu^2; standard error <= "
            f"1/sqrt(N), bound z = {z_m:.2f} of them (family-wise 3 sigma over the nodes)",
            description="max over nodes below the root of |corr(z_mu, z_mu of the positive) - rho_0mu^2|",
        ),
        check(
            "hltm_root_balance_error", abs(float(root.mean()) - 0.5), 1.5 / sqrt_n, kind="consistency",
            reason="[V-code] tests our sampler: the root is uniform on {0, 1}; 3 standard errors of a frequency",
            description="|mean(z0) - 1/2|",
        ),
        check(
            "hltm_negative_root_agreement_error", abs(float(np.mean(root_neg == root)) - 0.5), 1.5 / sqrt_n,
            kind="consistency",
            reason="[V-code] tests our sampler: negatives have an independent root, so half of them share the "
            "anchor's root; 3 standard errors of a frequency",
            description="|P(root of the negative = root of the anchor) - 1/2|",
        ),
    ]
    summary = {"n": n, "corr_root": corr_root, "path_polarities": [np.asarray(p) for p in path_polarities],
               "edge_agreement": agree}
    return checks, summary


# ----------------------------------------------------------------------------------------------------------------
# HLTM learning: the measured quantity.


@float64
def best_unit_correlation(pre: jax.Array, z: jax.Array) -> jax.Array:
    """max over a node's units of |Pearson corr(unit, z_mu)|, for every node of a level (note 5.2 [V-code]).

    As the reference code's StatsCorr: centred cross-moment over the product of population standard deviations,
    0/0 (a dead unit or a constant latent) set to 0, clipped to [-1, 1], absolute value, max over the units.

    Args:
      pre: (N, n_nodes, hid) unit pre-activations over N samples.
      z: (N, n_nodes) the nodes' latent values.

    Returns:
      (n_nodes,) best absolute correlations.
    """
    zf = z.astype(pre.dtype)
    pc = pre - jnp.mean(pre, axis=0, keepdims=True)
    zc = zf - jnp.mean(zf, axis=0, keepdims=True)
    cross = jnp.mean(pc * zc[:, :, None], axis=0)
    den = jnp.sqrt(jnp.mean(pc * pc, axis=0) * jnp.mean(zc * zc, axis=0)[:, None])
    corr = jnp.where(den > 0, cross / jnp.where(den > 0, den, 1.0), 0.0)
    return jnp.max(jnp.abs(jnp.clip(corr, -1.0, 1.0)), axis=-1)


@float64
def level_correlations(pre: Sequence[jax.Array], latents: Sequence[jax.Array]) -> jax.Array:
    """Best absolute correlation averaged over the nodes of each level t = 0 (root) .. depth-1: (depth,).

    ``pre[t]``: (N, n_t, hid) pre-activations of level t; ``latents[t]``: (N, n_t) its latents (the entries of
    :class:`~stepwise.data.hltm.HLTMViews` ``latents`` for t < depth). The note's tables list the same numbers as
    [d=depth (root), ..., d=1].
    """
    return jnp.stack([jnp.mean(best_unit_correlation(p, z)) for p, z in zip(pre, latents)])


# [R] (note 5.3): our own JAX re-run of the official HLTM procedure (depth 5, binary tree, NCE, 20 epochs, seeds
# 1-3), mean best |corr| per level [root, d4, d3, d2, d1] at initialisation and at the end. Not numbers from the paper.
REFERENCE_R: dict[tuple[float, int], tuple[tuple[float, ...], tuple[float, ...]]] = {
    (0.7, 2): ((.46, .47, .55, .73, .84), (.36, .43, .52, .73, .84)),
    (0.7, 10): ((.55, .58, .73, .84, .92), (.80, .82, .85, .88, .92)),
    (0.8, 2): ((.60, .61, .65, .81, .88), (.66, .67, .67, .81, .89)),
    (0.8, 10): ((.70, .70, .82, .90, .95), (.88, .89, .91, .92, .95)),
    (0.9, 2): ((.78, .78, .77, .90, .93), (.57, .83, .78, .90, .94)),
    (0.9, 10): ((.86, .84, .91, .95, .98), (.95, .95, .95, .96, .98)),
}


@float64
def reference_r(depth: int, children: int, low: float, hid: int):
    """The :data:`REFERENCE_R` entry of a setting (polarity range [low, 1], hid), or None where it has none (only the
    depth-5 binary tree was re-run)."""
    return REFERENCE_R.get((low, hid)) if (depth, children) == (5, 2) else None

# Where the HLTM experiment's procedure departs from the reference code (note 5), recorded in its results.json.
REFERENCE_DIFFERENCES = [
    "loss: the note's L_nce (tau-scaled log-softmax, per anchor) with in-batch negatives (H = batch size) and "
    "L_simp = mean(r+ - r-); the code uses minus the softmax probability (not its log) of batch-averaged distances "
    "with one negative per anchor, and pos - neg of batch-averaged distances",
    "distance: r = 1/2 ||f - f'||^2 per pair; the code's nn.MSELoss averages over the batch and the hid units, i.e. "
    "(2/hid) mean r, so its lr 0.1 is 0.2/hid on our scale for the simple loss; we use lr 0.1 on ours",
    "schedule: we evaluate at step 0 and every eval_every steps including after the last one; the code evaluates "
    "before each epoch's training, so its last log is after num_epoch - 1 epochs",
    "evaluation: a fixed set of n_eval fresh samples per run; the code draws 64000 fresh samples per epoch",
    "trees: polarities from JAX keys, not Python's random: same distribution, different trees per seed",
    "length: steps x batch here (plateau reached) instead of 20 epochs x 64000 samples",
]


def _trend(values: np.ndarray) -> tuple[float, float]:
    """(smallest adjacent increase, smallest first-to-last increase) along the last axis, over the other axes."""
    return float(np.min(np.diff(values, axis=-1))), float(np.min(values[..., -1] - values[..., 0]))


def _lower_bound(diff: np.ndarray, confidence: float) -> np.ndarray:
    """One-sided lower confidence bound of the seed mean of paired differences ``diff`` (..., S), Student t.

    nan with fewer than 2 seeds (no spread to estimate)."""
    n = diff.shape[-1]
    if n < 2:
        return np.full(diff.shape[:-1], np.nan)
    se = np.std(diff, axis=-1, ddof=1) / np.sqrt(n)
    return np.mean(diff, axis=-1) - float(scipy.stats.t.ppf(confidence, n - 1)) * se


def _training_gain_check(name: str, paired: np.ndarray, per: str, confidence: float, *, reason: str,
                         description: str) -> Check:
    """Gate on what training adds: the lower confidence bound (:func:`_lower_bound`) of the seed mean of the paired
    differences ``paired`` (n_per, S) must be > 0 for every one of the n_per settings (``per``: their axis's name)."""
    lower = _lower_bound(paired, confidence)
    return check(name, float(np.min(lower)), 0.0, op=">", kind="theory", reason=reason, description=description,
                 measured={f"paired_difference_per_{per}_seed": paired, f"lower_bound_per_{per}": lower,
                           f"seed_mean_per_{per}": paired.mean(axis=-1)})


_RAW_TREND = ("not gated: the raw trend of the final correlation is already present at initialisation (random "
              "features of nearly deterministic latents are correlated with them), so it cannot fail because of "
              "learning; the training_gain_* checks gate what training adds. Reference: the former gate")


def _raw_trend_checks(axis: str, final: tuple[float, float], initial: tuple[float, float], trend_tol: float,
                      trend_min: float, *, over: str, adjacent: str, along: str, measured: Any = None) -> list[Check]:
    """The reported raw trends of the final best |corr| along one sweep axis (corr_vs_{axis}_min_step and
    _total_gain): ``final`` and ``initial`` are :func:`_trend`'s (smallest adjacent step, smallest total gain) at the
    end and at initialisation; ``over`` names the other axis, ``adjacent`` this one's adjacent pairs, ``along`` one
    of its settings."""
    return [
        check(
            f"corr_vs_{axis}_min_step", final[0], -trend_tol, op=">=", kind="reported",
            reason=f"{_RAW_TREND} (adjacent steps may fall by at most trend_tol)",
            description=f"min over {over} and {adjacent} of the change in final best |corr| (mean over levels and "
            f"seeds); at initialisation: {initial[0]:.3g}",
            measured=measured,
        ),
        check(
            f"corr_vs_{axis}_total_gain", final[1], trend_min, op=">=", kind="reported",
            reason=f"{_RAW_TREND} (the whole sweep gains at least trend_min)",
            description=f"min over {over} of final best |corr| (mean over levels and seeds) at the largest minus at "
            f"the smallest {along}; at initialisation: {initial[1]:.3g}",
        ),
    ]


@float64
def hltm_learning_checks(
    main: Mapping[str, np.ndarray],
    sweep: np.ndarray,
    polarity_lows: Sequence[float],
    hids: Sequence[int],
    *,
    rise_min: float,
    trend_tol: float = 0.02,
    trend_min: float = 0.02,
    hardest_tol: float = 0.0,
    reference: tuple[Sequence[float], Sequence[float]] | None = None,
    confidence: float = 0.95,
) -> tuple[list[Check], dict[str, Any]]:
    """Checks of the HLTM learning claims (note checklist 7) on recorded per-level correlations.

    A trend claimed for training is gated on what training adds (final minus initial correlation of the same run):
    at initialisation the final-correlation trends with polarity and hid are already present (random features of
    nearly deterministic latents are correlated with them), so the raw trends are ``reported`` only.

    Args:
      main: per loss name, (E, S, depth) best |corr| per level (root first) over E evaluations of S seeds at the
        main setting (evaluation 0 = initialisation).
      sweep: (n_hid, n_low, E, S, depth) the same for the sweep loss over ``hids`` x ``polarity_lows``; the seeds
        are paired across the sweep (a seed's tree is shared by every polarity range and hid).
      polarity_lows, hids: the sweep values (increasing).
      rise_min: the root's rise above initialisation every seed must exceed (evaluation noise; see
        :class:`experiments.hltm.HLTMConfig`).
      trend_tol, trend_min: reference values shown with the reported raw trends (not gates).
      hardest_tol: allowance of the "root is hardest after training" check; 0 (the default) is the paper's
        criterion.
      reference: optional [R] (init, final) per-level means at the main setting for the sweep loss (reported).
      confidence: one-sided confidence of the seed-statistic trend checks (lower bound of the paired seed mean).

    Returns:
      ``(checks, summary)``.
    """
    rise = {loss: c[-1, :, 0] - c[0, :, 0] for loss, c in main.items()}
    n_seeds = sweep.shape[3]
    final_mean = sweep[:, :, -1].mean(axis=2)  # (n_hid, n_low, depth), seed mean
    overall = final_mean.mean(axis=-1)  # mean over levels: (n_hid, n_low)
    overall_init = sweep[:, :, 0].mean(axis=(2, 3))
    pol_step, pol_gain = _trend(overall)  # along the polarity axis, for every hid
    hid_step, hid_gain = _trend(overall.T)  # along the hid axis, for every polarity
    init_pol_step, init_pol_gain = _trend(overall_init)
    init_hid_step, init_hid_gain = _trend(overall_init.T)
    # What training adds, per run, mean over levels: (n_hid, n_low, S); paired differences across the sweep.
    gain = (sweep[:, :, -1] - sweep[:, :, 0]).mean(axis=-1)
    gain_pol = gain[:, -1] - gain[:, 0]  # (n_hid, S): largest minus smallest polarity range, per hid and seed
    gain_hid = gain[-1] - gain[0]  # (n_low, S): largest minus smallest hid, per polarity range and seed
    t_q = float(scipy.stats.t.ppf(confidence, n_seeds - 1)) if n_seeds > 1 else math.nan
    init = {loss: c[0].mean(axis=0) for loss, c in main.items()}
    final = {loss: c[-1].mean(axis=0) for loss, c in main.items()}
    root_gap = lambda v: float(v[0] - np.min(v[1:])) if v.size > 1 else np.nan
    losses = ", ".join(main)
    lows_s, hids_s = [float(v) for v in polarity_lows], [int(v) for v in hids]
    stat = (f"one-sided {confidence:.0%} lower confidence bound of the seed mean of the paired difference "
            f"(Student t, {n_seeds - 1} dof, t = {t_q:.3g}; needs >= 2 seeds)")
    checks = [
        check(
            "root_rise_min_over_seeds", min(float(np.min(r)) for r in rise.values()), rise_min, op=">=",
            kind="theory",
            reason="[V-abs] contrastive learning 'amplifies initial random selectivities' and [M] the hidden units "
            "learn the latents: the root's best |corr| must rise above its initialisation in every seed (note "
            "checklist 7 and 5.3). rise_min is evaluation noise: a sample correlation near the [R] root levels "
            "0.7-0.85 has standard error (1 - r^2)/sqrt(n_eval), 0.004-0.008 at n_eval = 4096, so the difference "
            "of the initial and final estimates must exceed ~3 standard errors",
            description=f"min over seeds and losses ({losses}) of final - initial best |corr| of the root at the "
            "main setting",
            measured={k: v for k, v in rise.items()},
        ),
        _training_gain_check(
            "training_gain_vs_polarity", gain_pol, "hid", confidence,
            reason="[M] the correlation is higher for larger polarity; as a claim about learning ([D] the "
            "covariance operator's signal dK scales with the products of polarities, so larger polarity should "
            "be learned more) training must add more at the largest polarity range than at the smallest: gated "
            f"on final minus initial of the same run, {stat}, > 0 for every hid. Correlations are capped at 1: a "
            "run that starts near the cap has less room to gain, so this can fail from the ceiling",
            description=f"min over hid {hids_s} of the lower bound of mean_seeds[(final - initial)(lo = "
            f"{lows_s[-1]:g}) - (final - initial)(lo = {lows_s[0]:g})], correlations averaged over levels",
        ),
        _training_gain_check(
            "training_gain_vs_hid", gain_hid, "low", confidence,
            reason="[M] over-parameterisation helps: more units per node, more chance of a lucky unit with good "
            "initial selectivity for training to amplify; gated on what training adds (final minus initial of "
            f"the same seed and tree): {stat}, > 0 for every polarity range. More units also raise the initial "
            "best |corr| (a max over more units), which is why the raw trend is not gated",
            description=f"min over polarity ranges {lows_s} of the lower bound of mean_seeds[(final - initial)"
            f"(hid = {hids_s[-1]}) - (final - initial)(hid = {hids_s[0]})], correlations averaged over levels",
        ),
        *_raw_trend_checks("polarity", (pol_step, pol_gain), (init_pol_step, init_pol_gain), trend_tol, trend_min,
                           over="hid", adjacent="adjacent polarity ranges", along="polarity range",
                           measured={"final": overall, "initial": overall_init}),
        *_raw_trend_checks("hid", (hid_step, hid_gain), (init_hid_step, init_hid_gain), trend_tol, trend_min,
                           over="polarity ranges", adjacent="adjacent hid values", along="hid"),
        check(
            "root_lowest_initial", max(root_gap(v) for v in init.values()), 0.0, kind="theory",
            reason="[M] latents near the root are harder: their signal is attenuated by products of polarities "
            "([D]: corr(z_mu, z0) = rho_0mu), and lower levels start high already at initialisation (note "
            "checklist 7); no allowance",
            description="seed-mean initial best |corr| of the root minus the lowest other level (main setting)",
            measured=init,
        ),
        check(
            "root_final_gap_to_hardest", max(root_gap(v) for v in final.values()), hardest_tol, kind="theory",
            reason="[M] 'the top-most latent is the hardest' (note checklist 7: the root level has the lowest "
            "correlation among levels), the paper's criterion "
            + ("without allowance: the root must not end above the lowest other level. After training the root "
               "and the levels just below it end close together ([R] root lower by ~0.01), so this seed mean can "
               "fail when the order of a near-tie flips" if hardest_tol == 0 else
               f"with an allowance of {hardest_tol:g} set in the config (not from the theory)"),
            description=f"max over losses ({losses}) of seed-mean final best |corr| of the root minus the lowest "
            "other level (main setting; <= 0: the root is the lowest)",
            measured=final,
        ),
    ]
    if reference is not None:
        ref_init, ref_final = (np.asarray(v) for v in reference)
        sweep_loss = next(iter(main))
        diff = max(float(np.max(np.abs(init[sweep_loss] - ref_init))),
                   float(np.max(np.abs(final[sweep_loss] - ref_final))))
        checks.append(check(
            "reference_R_max_abs_diff", diff, 0.1, kind="reported",
            reason="not gated: [R] is our own re-run of the official code, not the paper (whose numbers could not "
            "be retrieved), and our procedure departs from it on purpose (loss, evaluation; see "
            "reference_differences) with other trees per seed, so agreement is context, not a test of the "
            "theory; reference: the note's 'within about 0.1' (checklist 7, single-seed spread up to 0.2)",
            description=f"max over levels of |ours - [R]| for the {sweep_loss} seed-mean initial and final best "
            "|corr| at the main setting",
            predicted={"init": ref_init, "final": ref_final},
            measured={"init": init[sweep_loss], "final": final[sweep_loss]},
        ))
    summary = {
        "root_rise_per_seed": rise,
        "main_initial_per_level": init,
        "main_final_per_level": final,
        "sweep_final_per_level": {f"lo={lo},hid={h}": final_mean[i, j] for i, h in enumerate(hids)
                                  for j, lo in enumerate(polarity_lows)},
        "sweep_initial_per_level": {f"lo={lo},hid={h}": sweep[i, j, 0].mean(axis=0) for i, h in enumerate(hids)
                                    for j, lo in enumerate(polarity_lows)},
        "sweep_final_root_per_seed": {f"lo={lo},hid={h}": sweep[i, j, -1, :, 0] for i, h in enumerate(hids)
                                      for j, lo in enumerate(polarity_lows)},
        "sweep_overall_final": overall,
        "sweep_overall_initial": overall_init,
        "sweep_overall_gain": gain.mean(axis=-1),
        "sweep_gain_per_seed": {f"lo={lo},hid={h}": gain[i, j] for i, h in enumerate(hids)
                                for j, lo in enumerate(polarity_lows)},
        "raw_trends": {"final": {"polarity_total": pol_gain, "polarity_min_step": pol_step, "hid_total": hid_gain,
                                 "hid_min_step": hid_step},
                       "initial": {"polarity_total": init_pol_gain, "polarity_min_step": init_pol_step,
                                   "hid_total": init_hid_gain, "hid_min_step": init_hid_step}},
    }
    return checks, summary


# ----------------------------------------------------------------------------------------------------------------
# One-layer linear alignment (note checklist 8).


@float64
def linear_alignment_checks(
    trajectory: np.ndarray,
    rho: np.ndarray,
    d_pos: np.ndarray,
    d_neg: np.ndarray,
    *,
    lr: float,
    batch_size: int,
    confidence: float = 0.9973,
) -> tuple[list[Check], dict[str, Any]]:
    """A linear f = Wx trained by SGD on L_simp over SB-HLTM leaves (rows renormalised) against the [D] prediction.

    Theory (note 2.5, [D]): E[-grad L_simp] = 2 W Cov(E[x|z0]) = 1/2 W rho rho^T with rho = (rho_0alpha) over the
    leaves, so per step the component of each row along rho_hat grows by 1 + lr s (s = ||rho||^2 / 2) and the
    orthogonal part is unchanged: tan(theta_t) = tan(theta_0) (1 + lr s)^-t, rows -> +-rho_hat (checklist 8).
    Minibatch noise G = E[G] + N leaves a stationary misalignment (linearised Oja recursion:
    u' = (u + lr P_perp N rho_hat) / (1 + lr s)): E[sin^2 theta] = lr q / (B (2 s + lr s^2)), with
    q = E||P_perp G_i rho_hat||^2 the per-triple noise (G_i = d- d-^T - d+ d+^T), estimated from fresh samples.

    Args:
      trajectory: (T + 1, k, n) the rows after each step (row 0: initialisation), unit norm.
      rho: (n,) leaf path polarities rho_0alpha.
      d_pos, d_neg: (N, n) x - x+ and x - x- of fresh triples (not the training ones), for q.
      lr, batch_size: the SGD step and triples per step.
      confidence: family-wise confidence over the k rows of the final-alignment bound.

    Returns:
      ``(checks, summary)``.
    """
    traj = np.asarray(trajectory, np.float64)
    rho = np.asarray(rho, np.float64)
    rho_hat = rho / np.linalg.norm(rho)
    s = 0.5 * float(rho @ rho)
    steps, k = traj.shape[0] - 1, traj.shape[1]
    cos = np.abs(traj @ rho_hat)
    sin2 = np.clip(1.0 - cos**2, 0.0, 1.0)
    tan2 = sin2 / np.maximum(cos**2, np.finfo(np.float64).tiny)
    d_pos, d_neg = np.asarray(d_pos, np.float64), np.asarray(d_neg, np.float64)
    g_rho = d_neg * (d_neg @ rho_hat)[:, None] - d_pos * (d_pos @ rho_hat)[:, None]  # G_i rho_hat
    g_perp = g_rho - (g_rho @ rho_hat)[:, None] * rho_hat
    q = float(np.mean(np.sum((g_perp - g_perp.mean(axis=0)) ** 2, axis=1)))
    floor = lr * q / (batch_size * (2.0 * s + lr * s * s))
    factor = (1.0 + lr * s) ** -2  # per-step factor of tan^2 without noise
    tan2_pred = tan2[0][None, :] * factor ** np.arange(steps + 1)[:, None]
    transient = float(np.max(tan2_pred[-1] / (1.0 + tan2_pred[-1])))  # sin^2 of the noise-free end
    # sin^2 near alignment is a quadratic form of a Gaussian perpendicular part: at worst (all noise along one
    # direction) floor x chi^2_1; union bound over the k rows.
    c = float(scipy.stats.chi2.isf((1.0 - confidence) / k, 1))
    # Rate of alignment, fitted where the noise-free prediction is in the small-angle regime and above the floor.
    t = np.arange(steps + 1)
    window = (tan2_pred <= 1.0) & (tan2_pred >= 100.0 * floor)  # (T + 1, k): each row's own window
    rate_pred = -math.log(factor)
    rates = [-float(np.polyfit(t[w], np.log(tan2[w, j]), 1)[0]) for j, w in enumerate(window.T) if w.sum() >= 3]
    rate = float(np.mean(rates)) if rates else math.nan
    checks = [
        check(
            "linear_alignment_final_sin2_max", float(np.max(sin2[-1])), transient + c * floor, kind="theory",
            reason="[D] note 2.5 / checklist 8: SGD on L_simp with renormalised rows aligns every row of a linear "
            "f = Wx with rho = (rho_0alpha) (Cov(E[x|z0]) = rho rho^T / 4). Bound from the theory's error terms: "
            "the noise-free sin^2 left at the end plus the SGD noise floor lr q / (B (2s + lr s^2)) of the "
            f"linearised Oja recursion times chi^2_1's {confidence:.2%} quantile split over the {k} rows "
            f"({c:.3g}; worst case: all noise along one direction)",
            description=f"max over {k} rows of sin^2(row, rho) after {steps} SGD steps (lr s = {lr * s:.3g}, "
            f"batch {batch_size}); predicted noise floor E[sin^2] = {floor:.3g}, noise-free end {transient:.2g}",
            predicted={"floor": floor, "transient": transient}, measured=sin2[-1],
        ),
        check(
            "linear_alignment_rate_rel_error", abs(rate / rate_pred - 1.0), 0.05, kind="reported",
            reason="not gated: the rate 2 log(1 + lr s) per step of tan^2 is exact only without minibatch noise; the "
            "noise perturbs the fitted slope by an amount with no closed-form error bar here (a random walk in "
            "log tan^2, largest where the floor is high: trees with small s), so it is shown against the "
            "project's 5% rate bound for reference",
            description="|mean over rows of the fitted decay rate of log tan^2(row, rho) / 2 log(1 + lr s) - 1|, "
            f"each fitted over its steps where the noise-free tan^2 is in [100 x floor, 1] ({len(rates)} rows with "
            ">= 3 such steps)",
            predicted=rate_pred, measured=rate,
        ),
        check(
            "linear_alignment_min_cos", float(np.min(cos[-1])), 1.0, op=">=", kind="reported",
            reason="not gated: the note's statement cos(rows of W, rho) -> 1 in readable form; the gate is "
            "linear_alignment_final_sin2_max (the limit with SGD noise is the floor, not 1)",
            description=f"min over rows of |cos(row, rho)| at the end; at initialisation {float(np.min(cos[0])):.3g}",
        ),
    ]
    half = steps // 2
    summary = {"s": s, "lr": lr, "steps": steps, "noise_q": q, "floor_sin2": floor, "chi2_factor": c,
               "transient_sin2": transient, "rate_predicted": rate_pred, "rate_measured": rate,
               "rate_per_row": rates,
               "time_avg_sin2_over_floor": float(np.mean(sin2[half:]) / floor) if steps > 1 else math.nan,
               "initial_cos": cos[0], "final_cos": cos[-1]}
    return checks, summary
