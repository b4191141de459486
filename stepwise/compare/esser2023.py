"""Checks for Esser, Mukherjee & Ghoshdastidar 2023 (theory note esser2023): collapse, the Grassmann flow, width.

Each function takes the arrays an experiment saved (the ``.npz`` contents as a dict) and returns
:class:`~stepwise.compare.checks.Check` objects and the numbers behind them; the experiment writes them to
results.json and the tests assert them, so both use the same code. Every reason says where its statement comes from,
with the note's labels: [V-abs] the paper's abstract (certain), [D] derived in the note and checked numerically
(true for the natural model; the paper's constants may differ), [R?] our reconstruction / operationalisation of
what the paper most likely contains (the body of the paper could not be read: not checked against the PDF).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from stepwise._precision import float64
from stepwise.compare.checks import Check, check
from stepwise.theory import grassmann as theory

__all__ = [
    "constrained_checks",
    "decay_rate",
    "discrete_rate",
    "flow_vs_closed_form",
    "infinite_width_fraction",
    "loglog_slope",
    "max_sine",
    "naive_checks",
    "orthonormality_error",
    "reduced_ssl_matrix",
    "relative_change",
    "span_projector",
    "width_checks",
]

RATE_TOL = 0.05  # the bound on the collapse and principal-angle rates
ODE_TOL = 1e-6  # the bound on closed form vs a fine ODE solution


# ----------------------------------------------------------------------------------------------------------------
# Statistics.


@float64
def decay_rate(t: np.ndarray, y: np.ndarray, *, lo: float, hi: float) -> tuple[float, int]:
    """Exponential decay rate -d log(y)/dt, least-squares over the samples with lo <= y <= hi.

    Returns:
      ``(rate, n_points)``; ``rate`` is nan when fewer than 3 samples lie in the window.
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(y) & (y >= lo) & (y <= hi)
    if keep.sum() < 3:
        return math.nan, int(keep.sum())
    return float(-np.polyfit(t[keep], np.log(y[keep]), 1)[0]), int(keep.sum())


@float64
def discrete_rate(gap_from: float, gap_to: float, lr: float) -> float:
    """Per-unit-time rate of a ratio that gradient descent multiplies by (1 + 2 lr a) / (1 + 2 lr b) per step.

    Naive GD W <- (I + 2 lr C) W scales the component along u_k by 1 + 2 lr lambda_k, so sigma_2 / sigma_1 decays
    at log((1 + 2 lr lambda_1) / (1 + 2 lr lambda_2)) / lr = 2 (lambda_1 - lambda_2) (1 + O(lr)) [D]; Riemannian GD
    near its limit contracts the slowest principal angle by 1 - 2 lr (lambda_h - lambda_{h+1}) (linearisation, [D]):
    ``discrete_rate(lambda_h - lambda_{h+1}, 0, lr)`` with the sign convention -log(1 - 2 lr g) / lr.
    """
    return float((math.log1p(2 * lr * gap_from) - math.log1p(2 * lr * gap_to)) / lr)


@float64
def loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log(y) against log(x)."""
    return float(np.polyfit(np.log(np.asarray(x, np.float64)), np.log(np.asarray(y, np.float64)), 1)[0])


@float64
def infinite_width_fraction(widths: np.ndarray, change: np.ndarray) -> tuple[float, float, float]:
    """Fraction of a change at the largest width that survives m -> infinity, from change^2 = alpha^2 + beta^2 / m.

    A finite-width network starts from a random kernel that differs from its infinite-width limit by O(m^{-1/2});
    replacing it by any other kernel moves it by that much even when the limit does not move. If the limit moves
    by alpha, the two add in quadrature (independent directions), change^2 ~ alpha^2 + beta^2 / m, so a weighted
    least-squares fit (relative errors) separates the width-independent part alpha^2 from the finite-width part.
    Our model of the finite-width fluctuation ([R?], not from the paper).

    Returns:
      ``(fraction, alpha2, beta2)`` with ``fraction = alpha2 / change[argmax widths]^2`` (negative when the fit's
      intercept is negative, i.e. no width-independent part).
    """
    m = np.asarray(widths, np.float64)
    y2 = np.asarray(change, np.float64) ** 2
    design = np.stack([np.ones_like(m), 1.0 / m], axis=1) / y2[:, None]
    alpha2, beta2 = np.linalg.lstsq(design, np.ones_like(m), rcond=None)[0]
    return float(alpha2 / y2[np.argmax(m)]), float(alpha2), float(beta2)


@float64
def span_projector(w: np.ndarray) -> np.ndarray:
    """W W^T for (..., m, h) W with orthonormal columns: the orthogonal projector onto span(W)."""
    w = np.asarray(w, np.float64)
    return np.einsum("...mh,...nh->...mn", w, w)


@float64
def orthonormality_error(w: np.ndarray) -> np.ndarray:
    """max |W^T W - I| per leading index of (..., m, h) W."""
    w = np.asarray(w, np.float64)
    h = w.shape[-1]
    return np.max(np.abs(np.einsum("...mh,...mk->...hk", w, w) - np.eye(h)), axis=(-2, -1))


@float64
def max_sine(basis_perp: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Largest principal sine between span(W) (orthonormal) and a subspace, from an orthonormal basis of its
    complement: ||U_perp^T W||_2 (accurate for small angles, unlike an arccos of cosines)."""
    return np.linalg.norm(np.einsum("mk,...mh->...kh", np.asarray(basis_perp, np.float64), np.asarray(w, np.float64)),
                          ord=2, axis=(-2, -1))


@float64
def flow_vs_closed_form(c: np.ndarray, w0: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flow dW/dt = 2 (I - W W^T) C W from W0 by the adaptive solver (:func:`stepwise.theory.grassmann.integrate`)
    against its closed-form projector: (||W W^T - P(t)||_F, max |W^T W - I|) at each time of ``t``."""
    ws, _ = theory.integrate(c, w0, t)
    closed = np.asarray(theory.projector_trajectory(c, w0, t))
    return np.linalg.norm(span_projector(ws) - closed, axis=(1, 2)), orthonormality_error(ws)


@float64
def reduced_ssl_matrix(views: tuple[np.ndarray, ...], w0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The SSL matrix C of (n, M) feature views, reduced to the span of the features and W0 (M, h).

    C (:func:`stepwise.theory.grassmann.ssl_matrix`) lives in span(views, W0), so with an orthonormal basis B
    (M, k) of it, the flow from W0 stays in span(B) and B^T C B carries the closed form at dimension k <= M.

    Returns:
      ``(basis, c_reduced)``: B (M, k) and the symmetrised B^T C B (k, k).
    """
    # (jnp: XLA's single-threaded LAPACK; NumPy's threaded BLAS stalls when other processes load the cores)
    basis = np.asarray(jnp.linalg.qr(jnp.asarray(np.concatenate([v.T for v in views] + [w0], axis=1)))[0])
    c_red = np.asarray(theory.ssl_matrix(*(v @ basis for v in views)))
    return basis, 0.5 * (c_red + c_red.T)


@float64
def relative_change(new: np.ndarray, old: np.ndarray) -> float:
    """||new - old||_F / ||old||_F."""
    return float(np.linalg.norm(np.asarray(new) - np.asarray(old)) / np.linalg.norm(np.asarray(old)))


# ----------------------------------------------------------------------------------------------------------------
# The naive (unconstrained) flow.


@float64
def naive_checks(data: Mapping[str, np.ndarray]) -> tuple[list[Check], dict[str, Any]]:
    """Dimension collapse of unconstrained gradient descent on L = -tr(W^T C W).

    Args:
      data: ``t`` (T,) times lr x step; ``sv`` (T, h) singular values of W, decreasing; ``top_cos`` (T,)
        |cos| between the top left singular vector of W and u_1; ``lam`` (m,) eigenvalues of C, decreasing;
        ``lr``; ``window`` (2,) the range of sigma_2 / sigma_1 the rate is fitted over.
    """
    t, sv, lam, lr = data["t"], data["sv"], data["lam"], float(data["lr"])
    lo, hi = (float(v) for v in data["window"])
    ratio = sv[:, 1] / sv[:, 0]
    predicted = 2.0 * (lam[0] - lam[1])
    measured, n_fit = decay_rate(t, ratio, lo=lo, hi=hi)
    growth_pred = 2.0 * lam[0]
    late = ratio <= hi
    growth, _ = decay_rate(t[late], 1.0 / sv[late, 0], lo=0.0, hi=np.inf)
    checks = [
        check(
            "naive_collapse_rate_rel_error", abs(measured / predicted - 1), RATE_TOL, kind="theory",
            reason="[D] (note 2.1, checklist 2) under dW/dt = 2CW, sigma_2/sigma_1 = Theta(exp(-2 (lambda_1 - "
            "lambda_2) t)): collapse to a rank-one 'trivial scalar representation' ([V-abs] claim, exact form [D]). "
            "GD with step lr has rate log((1+2 lr l1)/(1+2 lr l2))/lr, an O(lr) = "
            f"{abs(discrete_rate(lam[0], lam[1], lr) / predicted - 1):.2%} "
            "bias, well inside the issue's 5%",
            description=f"|fitted decay rate of sigma_2/sigma_1 over [{lo:g}, {hi:g}] ({n_fit} samples) / "
            "2(lambda_1 - lambda_2) - 1| for full-batch GD on L = -tr(W^T C W)",
            predicted=predicted, measured=measured,
        ),
        check(
            "naive_final_sv_ratio", ratio[-1], 1e-6, kind="theory",
            reason="[D] the representation collapses to rank one (the abstract's 'trivial scalar representations' "
            f"[V-abs]): sigma_2/sigma_1 falls by e^-1 per e-folding of the predicted rate, and the run lasts "
            f"{predicted * float(t[-1]):.0f} of them (from O(1) at the start); 1e-6 is ~14 e-foldings, so half the "
            "run is left for the transient and the O(lr) bias",
            description="sigma_2 / sigma_1 of W at the end of unconstrained GD",
        ),
        check(
            "naive_top_direction_cosine", data["top_cos"][-1], 0.999, op=">=", kind="theory",
            reason="[D] checklist 2: every column of W aligns with u_1, so the top left singular vector -> u_1",
            description="|cos| between the top left singular vector of W(T) and the top eigenvector u_1 of C",
        ),
    ]
    if lam[0] > 0:
        checks.append(check(
            "naive_norm_growth_rate_rel_error", abs(growth / growth_pred - 1), RATE_TOL, kind="theory",
            reason="[D] checklist 2: for lambda_1 > 0 the norm diverges like exp(2 lambda_1 t) (O(lr) GD bias "
            f"{abs(math.log1p(2 * lr * lam[0]) / lr / growth_pred - 1):.2%})",
            description="|fitted growth rate of sigma_1(W) after the collapse window starts / 2 lambda_1 - 1|",
            predicted=growth_pred, measured=growth,
        ))
    summary = {"collapse_rate_predicted": predicted, "collapse_rate_measured": measured,
               "collapse_rate_gd_exact": discrete_rate(lam[0], lam[1], lr), "norm_growth_measured": growth,
               "fit_points": n_fit}
    return checks, summary


# ----------------------------------------------------------------------------------------------------------------
# The orthogonality-constrained flow.


#: The constrained flow's consistency checks, true by construction: (name, recorded array whose max is judged,
#: tolerance, reason, description).
_CONSTRAINED_BY_CONSTRUCTION = (
    ("flow_orthonormality_max", "flow_ortho", 1e-8,
     "[D] by construction: the field (I - WW^T) CW is horizontal (W^T dW/dt = 0 on W^T W = I), so the flow keeps "
     "W^T W = I; this tests the ODE integration (checklist 3, the note's RK4 bound 1e-8)",
     "max over h and t of max|W^T W - I| along the ODE solution"),
    ("rgd_orthonormality_max", "rgd_ortho", 1e-12,
     "[D] by construction (checklist 3): a QR retraction returns an orthonormal basis at every step, so Riemannian "
     "GD is orthonormal to float64 round-off (errors do not accumulate: each step re-orthonormalises); tests the "
     "retraction code",
     "max over steps of max|W^T W - I| for Riemannian GD (QR retraction)"),
    ("rgd_qr_polar_projector_max", "qr_polar", 1e-10,
     "[D] by construction: both retractions return a basis of span(W - lr xi) and xi = (I - WW^T) grad is "
     "rotation-equivariant, so QR and polar give the same subspaces; tests the retraction code (the retraction the "
     "paper uses is unknown, note pitfall 8); compare projectors, never raw W (pitfall 2)",
     "max over steps of ||P_qr - P_polar||_F"),
)


@float64
def constrained_checks(data: Mapping[str, np.ndarray]) -> tuple[list[Check], dict[str, Any]]:
    """The constrained flow and Riemannian GD against the closed-form projector and the predicted rate.

    Args:
      data: ``hs`` (k,) representation dimensions integrated; ``flow_error`` (k, T) ||P_ode - P_closed||_F and
        ``flow_ortho`` (k, T) max|W^T W - I| of the ODE solution; ``rgd_ortho`` (R,) max|W^T W - I| of Riemannian
        GD (QR) over time; ``qr_polar`` (R,) ||P_qr - P_polar||_F; ``order_lrs`` (L,), ``order_errors`` (L,)
        max-over-time projector error of GD against the closed form; ``t`` (R,), ``sines`` (R,) measured largest
        principal sine of GD to the top-h eigenspace, ``sines_closed`` (R,) the closed form's; ``lam``, ``h``,
        ``lr``, ``window`` (2,) for the rate fit; ``final_loss`` of GD.
    """
    lam, h, lr = data["lam"], int(data["h"]), float(data["lr"])
    lo, hi = (float(v) for v in data["window"])
    predicted = 2.0 * (lam[h - 1] - lam[h])
    measured, n_fit = decay_rate(data["t"], data["sines"], lo=lo, hi=hi)
    order = loglog_slope(data["order_lrs"], data["order_errors"])
    limit = -float(np.sum(lam[:h]))
    hs = [int(v) for v in data["hs"]]
    checks = [
        check(
            "flow_projector_max_error", np.max(data["flow_error"]), ODE_TOL, kind="theory",
            reason="[D] note 2.2: the exact solution of dW/dt = 2 (I - WW^T) CW on the Grassmannian is P(t) = "
            "Y (Y^T Y)^{-1} Y^T, Y = exp(2tC) W0, for every h ('width independent' read as [R?]: the same recipe "
            "for each h, time constants from the spectrum of C only). 1e-6 is the note's bound (checklist 4); the "
            "adaptive Dopri8 solve at rtol 1e-12 is far more accurate than that, so the gate sees the closed form",
            description=f"max over h in {hs} and t of ||W W^T (adaptive ODE, float64) - P_closed(t)||_F",
            measured=np.max(data["flow_error"], axis=1),
        ),
        *(check(name, np.max(data[key]), tol, kind="consistency", reason=reason, description=description)
          for name, key, tol, reason, description in _CONSTRAINED_BY_CONSTRUCTION),
        check(
            "rgd_first_order_error", abs(order - 1), 0.2, kind="theory",
            reason="[D] checklist 4: GD with step lr approximates the flow at t = lr x steps with an O(lr) error; "
            "the fitted order of the projector error must be 1 (+-0.2, as diffrax's test_ode_order allows)",
            description="|log-log slope of max_t ||P_GD - P_closed||_F against lr - 1| over lr in "
            f"{[float(v) for v in data['order_lrs']]}",
            predicted=1.0, measured=order,
        ),
        check(
            "principal_angle_rate_rel_error", abs(measured / predicted - 1), RATE_TOL, kind="theory",
            reason="[D] note 2.2: if W0^T U_h is non-singular the principal angles to the top-h eigenspace decay "
            "like exp(-2 (lambda_h - lambda_{h+1}) t); GD's linearised contraction 1 - 2 lr gap adds an O(lr) "
            f"bias of {abs(discrete_rate(lam[h - 1] - lam[h], 0.0, lr) / predicted - 1):.2%}; the issue's bound is 5%",
            description=f"|fitted decay rate of the largest principal sine of Riemannian GD (h = {h}) over "
            f"[{lo:g}, {hi:g}] ({n_fit} samples) / 2(lambda_h - lambda_(h+1)) - 1|",
            predicted=predicted, measured=measured,
        ),
        check(
            "final_loss_error", abs(float(data["final_loss"]) - limit), 1e-6, kind="theory",
            reason="[D] checklist 5 (Ky Fan): the constrained minimum is -sum_{k<=h} lambda_k, reached from a "
            "generic start; 1e-6 is the note's bound (the run lasts constrained_efolds e-foldings of the angle "
            "rate, and the loss gap is quadratic in the principal sines)",
            description=f"|L(W_T) - (-sum of the top {h} eigenvalues of C)| after Riemannian GD",
            predicted=limit, measured=float(data["final_loss"]),
        ),
    ]
    summary = {"principal_angle_rate_predicted": predicted, "principal_angle_rate_measured": measured,
               "principal_angle_rate_gd_exact": discrete_rate(lam[h - 1] - lam[h], 0.0, lr),
               "first_order_fit": order, "fit_points": n_fit,
               "closed_vs_measured_sine_max_rel": float(np.max(np.abs(data["sines"] / data["sines_closed"] - 1)[
                   (data["sines_closed"] >= lo) & (data["sines_closed"] <= hi)], initial=0.0))}
    return checks, summary


# ----------------------------------------------------------------------------------------------------------------
# Width: SSL with the constraint vs supervised training of the same network.


@float64
def width_checks(data: Mapping[str, np.ndarray]) -> tuple[list[Check], dict[str, Any]]:
    """How far parameters and the empirical NTK move as the hidden width m grows, SSL (constrained) vs supervised.

    Args:
      data: ``widths`` (k,); ``ssl_param``, ``ssl_ntk``, ``sup_param``, ``sup_ntk`` (seeds, k) relative changes
        ||theta_T - theta_0|| / ||theta_0|| (trained layer) and ||K_T - K_0||_F / ||K_0||_F; ``net_vs_model``
        (seeds, k) max over time of ||P_network - P_model||_F; ``net_lr_scale`` (the SSL step in units of
        1 / (lambda_1 - lambda_min)); ``net_projector_error`` (max over time of ||P_network - P_closed||_F),
        ``net_final_sine``, ``ssl_final_loss``, ``ssl_limit_loss`` (seeds, k) for the summary.
    """
    widths = np.asarray(data["widths"], np.float64)
    mean = {k: np.mean(np.asarray(data[k], np.float64), axis=0) for k in ("ssl_param", "ssl_ntk", "sup_param",
                                                                         "sup_ntk")}
    slopes = {k: loglog_slope(widths, v) for k, v in mean.items()}
    fraction, alpha2, beta2 = infinite_width_fraction(widths, mean["ssl_ntk"])
    sup_fraction = infinite_width_fraction(widths, mean["sup_ntk"])[0]
    ratio = mean["ssl_ntk"][-1] / mean["sup_ntk"][-1]
    span = f"m in {[int(w) for w in widths]}"
    checks = [
        check(
            "ssl_param_change_slope", slopes["ssl_param"], -0.1, op=">=", kind="theory",
            reason="[V-abs] SSL deviates from the NTK approximation; [R?] the note's operationalisation (checklist "
            "7): with W^T W = I the subspace travels an O(1) Grassmann distance however wide the net, so the "
            "relative change of the constrained layer does not decrease with m; the note's criterion is a log-log "
            "slope > -0.1 ('no decrease')",
            description=f"log-log slope of ||W_T - W_0|| / ||W_0|| (constrained output layer, SSL) over {span}, "
            "mean over seeds",
            measured=mean["ssl_param"],
        ),
        check(
            "ssl_ntk_change_slope", slopes["ssl_ntk"], -0.1, op=">=", kind="theory",
            reason="[V-abs] the infinite-width SSL model deviates significantly from the NTK approximation; [R?] the "
            "note's criterion (checklist 7): the NTK change of constrained SSL does not decrease with m, log-log "
            "slope > -0.1. Expected to fail at CPU widths: the initial empirical kernel differs from its "
            "infinite-width limit by O(m^-1/2), and any training moves it by that much on top of the "
            "width-independent change (our model, reported as ssl_ntk_change_infinite_width_fraction), so the "
            "slope over m <= 4096 is negative even if the limit moves; the criterion would need widths where that "
            "fluctuation is small against the width-independent part. Kept as the note states it, not replaced",
            description=f"log-log slope of ||K_T - K_0||_F / ||K_0||_F (empirical NTK, all parameters, constrained "
            f"SSL) over {span}, mean over seeds",
            measured=mean["ssl_ntk"],
        ),
        check(
            "sup_param_change_slope", slopes["sup_param"], -0.3, kind="theory",
            reason="NTK theory (Jacot et al. 2018; note 2.3 and checklist 7): in NTK parametrisation the parameters "
            "move O(m^-1/2) relative (slope -1/2); the gate is -1/2 with the +-0.2 tolerance of a fitted order "
            "(as rgd_first_order_error), one-sided because a faster decay is lazier still",
            description=f"log-log slope of ||a_T - a_0|| / ||a_0|| (output layer, supervised MSE) over {span}",
            predicted=-0.5, measured=mean["sup_param"],
        ),
        check(
            "sup_ntk_change_slope", slopes["sup_ntk"], -0.3, kind="theory",
            reason="NTK theory: the tangent kernel of supervised training stays at its initial value as m -> inf "
            "(lazy regime); the note's checklist 7 expects ~m^-1/2, and with only the output layer trained the "
            "change is O(|delta a|^2 + <a, delta a>/m), slope about -1 (our derivation); the gate is the note's "
            "-1/2 with the +-0.2 tolerance of a fitted order, one-sided (-1 is lazier still)",
            description=f"log-log slope of ||K_T - K_0||_F / ||K_0||_F (empirical NTK, all parameters) over {span}",
            measured=mean["sup_ntk"],
        ),
        check(
            "ssl_ntk_change_infinite_width_fraction", fraction, 0.5, op=">=", kind="reported",
            reason="not gated: our own model of the finite-width fluctuation ([R?], not from the paper or the note): "
            "fit change^2 = alpha^2 + beta^2/m (the initial kernel's O(m^-1/2) fluctuation adds in quadrature) and "
            "report the width-independent share alpha^2 at the largest width; no theory fixes what share counts "
            "as 'does not vanish' (the reference 0.5 is a choice), so it explains ssl_ntk_change_slope rather than "
            "replacing it",
            description=f"alpha^2 / (NTK change at m = {int(widths[-1])})^2 for constrained SSL (alpha^2 = "
            f"{alpha2:.3g}, beta^2 = {beta2:.3g}); supervised for comparison: {sup_fraction:.3g}",
            measured=mean["ssl_ntk"],
        ),
        check(
            "ssl_vs_sup_ntk_change_ratio", ratio, 1.0, op=">", kind="baseline",
            reason="[V-abs] / [R?]: the null model is the same network (initialisation, data, width) trained "
            "supervised, the NTK regime; under the null the SSL kernel moves as much as that one, ratio 1 (the "
            "null's exact value). The abstract quantifies no ratio, so the gate is the null's value, not a "
            "multiple of it",
            description=f"NTK change of SSL / of supervised training at m = {int(widths[-1])} (seed means)",
            predicted=1.0, measured={"ssl": mean["ssl_ntk"][-1], "supervised": mean["sup_ntk"][-1]},
        ),
        check(
            "network_vs_grassmann_model_max", np.max(data["net_vs_model"]), 1e-8, kind="consistency",
            reason="[D] by construction: with its hidden layer frozen, the constrained SSL network is the linear "
            "Grassmann model of its own C = C_phi / m (features phi, whose spectrum converges as m grows), so "
            "Riemannian GD on the network (autodiff through the features, step lr on a in NTK parametrisation) and "
            "on -tr(W^T C W) give the same subspaces to round-off; tests the width study's code. With the "
            "closed-form checks above this is the abstract's 'exact, network width independent dynamics' [V-abs] in "
            "our reading [R?]. The closed form itself differs from GD by O(lr) (summary: net_projector_error_max, "
            f"at lr (lambda_1 - lambda_min) = {float(data['net_lr_scale']):g})",
            description="max over widths, seeds and recorded times of ||P_network(t) - P_model(t)||_F",
        ),
    ]
    summary = {"slopes": slopes, "means": mean, "ssl_ntk_alpha2": alpha2, "ssl_ntk_beta2": beta2,
               "ssl_ntk_infinite_width_fraction": fraction, "sup_ntk_infinite_width_fraction": sup_fraction,
               "net_final_max_sine": float(np.max(data["net_final_sine"])),
               "net_projector_error_max": float(np.max(data["net_projector_error"])),
               "ssl_loss_gap_to_limit_max": float(np.max(data["ssl_final_loss"] - data["ssl_limit_loss"]))}
    return checks, summary
