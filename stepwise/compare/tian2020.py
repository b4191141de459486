"""Checks for Tian et al. 2020 (theory note tian2020): the covariance operator, the SB-HLTM sampler, HLTM learning.

Each function returns :class:`~stepwise.compare.checks.Check` objects (and the numbers behind them); the experiment
writes them to results.json and the tests assert them, so both use the same code. Every reason says where its
statement comes from, with the note's labels: [M] the paper as remembered (wording and constants unchecked),
[D] derived in the note and true whatever the paper says, [V-code]/[V-abs] checked in the official code / abstract,
[R] our own re-run of the official HLTM procedure (not numbers from the paper).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stepwise.compare.checks import Check, check
from stepwise.theory import covariance as cov

__all__ = ["covariance_checks", "hltm_sampler_checks"]

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

    Use float64 (``jax.enable_x64``): the identities hold to round-off. The reference for every expected update
    is ``jax.grad`` of the enumerated population loss (:func:`stepwise.theory.covariance.expected_loss`).

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
            "op_identity_rel_error", max(per_layer["identity"]), IDENTITY_TOL,
            reason="[D] E[-grad L_simp] = 2 OP vec(W) exactly (a.e.) for a bias-free ReLU net without output "
            "normalisation on an iid-with-replacement population: the augmentation variances cancel. The paper "
            "([M], Theorem 1) states vec(dW) = OP vec(W), the factor 2 (from r = 1/2||.||^2, both branches "
            "differentiated) absorbed into the learning rate. 1e-6 = issue bound; float64 round-off is ~1e-15",
            description="max over layers of ||-grad E[L_simp] - 2 OP_l vec(W_l)|| / ||2 OP_l vec(W_l)||, gradient "
            "by jax.grad of the enumerated population loss",
            measured=per_layer["identity"],
        ),
        check(
            "weighted_identity_rel_error", max(per_layer["weighted"]), IDENTITY_TOL,
            reason="[D] with detached symmetric weights alpha(z,z') (exact-cov loss, [V-code] nt_xent.py with "
            "exact_cov_unaug_sim: sigmoid(-r/tau) of the un-augmented views) the weighted identity "
            "E[-grad] = 2 OP^alpha vec(W) has no residue; the weighted form itself is the paper's Theorem 2 [M]",
            description="max over layers of the relative error of 2 OP^alpha vec(W_l) against -grad of the "
            "population exact-cov loss",
            measured=per_layer["weighted"],
        ),
        check(
            "aug_weight_residue", min(per_layer["residue"]), RESIDUE_MIN, op=">=",
            reason="[D] when beta depends on the augmented views (here the H = 1 InfoNCE weight "
            "sigmoid((r+ - r-)/tau)) the augmentation variances no longer cancel: Theorem 2's residue [M]. It must "
            "be visibly non-zero (>= 1e4 x the exact tolerance) against OP^alpha_bar, alpha_bar = E[beta | z, z']",
            description="min over layers of ||-grad - 2 OP^alpha_bar vec(W)|| / ||2 OP^alpha_bar vec(W)|| for "
            "detached InfoNCE weights",
            measured=per_layer["residue"],
        ),
        check(
            "op_min_eigenvalue_rel", min(per_layer["min_eig_rel"]), -RANK_RTOL, op=">=",
            reason="[D] OP = V_z[Kbar] is a covariance, hence PSD (stated in the paper [M]); float64 round-off "
            "gives eigenvalues ~ -1e-16 x the largest",
            description="min over layers of lambda_min(OP_l) / lambda_max(OP_l)",
            measured=per_layer["min_eig_rel"],
        ),
        check(
            "op_rank_excess", rank_excess, 0,
            reason="[D] Z centred mean connections with n_L columns each span <= (Z - 1) n_L directions; for a "
            "binary root (Z = 2, SB-HLTM) rank(OP) <= n_L (note 2.5 / checklist 4)",
            description=f"max over layers of numerical rank(OP_l) (eigenvalues > {RANK_RTOL:g} x max) minus "
            "min(P, (Z - 1) n_L)",
            predicted=per_layer["rank_bound"], measured=per_layer["rank"],
        ),
        check(
            "variance_decomposition_rel_error", max(per_layer["variance_decomposition"]), 1e-8,
            reason="[D] law of total variance, exact on a finite population: V[K] - E_z V_aug[K|z] = OP; OP keeps "
            "the between-instance part only. Relative to ||OP|| (smaller than ||V[K]||), hence 1e-8",
            description="max over layers of ||V[K] - E_z V_aug[K|z] - OP|| / ||OP||",
            measured=per_layer["variance_decomposition"],
        ),
        check(
            "loss_weight_formula_rel_error", max(per_layer["weight_formula"]), 1e-10,
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
            reason="[D] note 2.5: for a binary instance OP = p0 p1 dK dK^T with dK = Kbar(1) - Kbar(0)",
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
      ``(checks, summary)``. Tolerances are 3 standard errors at the worst case (3/sqrt(N) for a correlation,
      3 x 1/2 / sqrt(N) for a probability), as the issue prescribes.
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
    checks = [
        check(
            "hltm_corr_root_max_error", float(err_corr.max()), 3.0 / sqrt_n,
            reason="[D] polarities multiply along a path: corr(z_mu, z0) = prod of rho on the path root -> mu; "
            "the sample correlation's standard error is <= 1/sqrt(N), the issue's bound is 3/sqrt(N)",
            description=f"max over all {err_corr.size} nodes below the root of |corr(z_mu, z0) - rho_0mu| "
            f"(N = {n})",
        ),
        check(
            "hltm_edge_agreement_max_error", float(err_agree.max()), 1.5 / sqrt_n,
            reason="[D] definition of the SB-HLTM (note 2.5 [M + V-code]): P(z_nu = z_mu) = (1 + rho)/2 on every "
            "edge; a frequency's standard error is <= 1/(2 sqrt(N)), bound 3 of them",
            description=f"max over all {err_agree.size} edges of |P(z_child = z_parent) - (1 + rho)/2|",
        ),
        check(
            "hltm_positive_corr_max_error", float(err_pos.max()), 3.0 / sqrt_n,
            reason="[D] the augmentation resamples every latent below the root: two samples of z_mu given the "
            "same root are conditionally independent, so corr(z_mu, z_mu+) = rho_0mu^2",
            description="max over nodes below the root of |corr(z_mu, z_mu of the positive) - rho_0mu^2|",
        ),
        check(
            "hltm_root_balance_error", abs(float(root.mean()) - 0.5), 1.5 / sqrt_n,
            reason="[V-code] the root is uniform on {0, 1}; 3 standard errors of a frequency",
            description="|mean(z0) - 1/2|",
        ),
        check(
            "hltm_negative_root_agreement_error", abs(float(np.mean(root_neg == root)) - 0.5), 1.5 / sqrt_n,
            reason="[V-code] negatives have an independent root, so half of them share the anchor's root",
            description="|P(root of the negative = root of the anchor) - 1/2|",
        ),
    ]
    summary = {"n": n, "corr_root": corr_root, "path_polarities": [np.asarray(p) for p in path_polarities],
               "edge_agreement": agree}
    return checks, summary
