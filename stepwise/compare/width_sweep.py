"""Checks of a width sweep (Simon et al. 2023, NTK extension; theory note 3 and 6.9): one-hidden-layer ReLU MLPs of
growing width against the kernel theory on the infinite-width NTK (held-out embeddings) and on each net's own NTK at
initialisation (step times), a random-function baseline, and the trend of all of them with the width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from stepwise._precision import float64
from stepwise.compare.checks import Check, check
from stepwise.compare.esser2023 import loglog_slope
from stepwise.compare.metrics import gram_relative_error, relative_errors

__all__ = ["STEP_ERROR_TARGET", "linearised_checks", "monotone_violation", "random_function_errors",
           "random_function_threshold", "step_time_checks", "step_time_statistics", "sweep_checks"]

STEP_ERROR_TARGET = 0.10  # issue 12 item 5: the widest nets' median relative step-time error


def _seeds(n: int) -> str:
    return f"{n} network seed{'s' if n > 1 else ''}"


@float64
def monotone_violation(values: np.ndarray) -> float:
    """Largest relative rise from one width to the next: max_i (v_(i+1) - v_i) / v_i; <= 0 iff non-increasing."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.max((v[1:] - v[:-1]) / v[:-1]))


@float64
def random_function_errors(kt: np.ndarray, predicted: np.ndarray, n_draws: int, seed: int) -> np.ndarray:
    """(n_draws,) held-out Gram errors against ``predicted`` (n_test, d) of random functions B k(x) of the same
    kernel (rows ``kt`` (n_test, 2n); B Gaussian, scaled to the prediction's norm): the null a learned embedding must
    beat."""
    rng = np.random.default_rng(seed)
    p = predicted
    out = np.empty(n_draws)
    for j in range(n_draws):
        f = kt @ rng.standard_normal((kt.shape[1], p.shape[1]))
        out[j] = gram_relative_error(f * (np.linalg.norm(p) / np.linalg.norm(f)), p)
    return out



@float64
def random_function_threshold(errors: np.ndarray) -> float:
    """The baseline's threshold over (n_draws,) :func:`random_function_errors`: their mean - 2 std."""
    return float(errors.mean() - 2.0 * errors.std())


@float64
def step_time_statistics(predicted: np.ndarray, measured: np.ndarray) -> dict[str, np.ndarray]:
    """Relative step-time errors of every net and their per-width statistics.

    Args:
      predicted, measured: (n_seeds, W, d) half-rise steps (the j-th event, sorted), predicted from each net's own
        NTK at initialisation and measured on the net.

    Returns:
      ``rel`` (n_seeds, W, d) signed relative errors; ``median`` (n_seeds, W) each net's median |error| over its d
      modes; ``mean_median`` (W,) the mean of that over the seeds (the statistic the checks judge); ``max`` (W,) the
      largest |error| of any mode of any seed. A mode that never reached 1/2 is nan and makes its statistics nan.
    """
    rel = relative_errors(predicted, measured)
    med = np.median(np.abs(rel), axis=-1)
    return {"rel": rel, "median": med, "mean_median": med.mean(axis=0), "max": np.abs(rel).max(axis=(0, 2))}


@float64
def step_time_checks(widths: Sequence[int], monotone_tolerance: float, stats: dict[str, np.ndarray],
                     predicted_widest: np.ndarray, measured_widest: np.ndarray) -> list[Check]:
    """The step-time checks of issue 12 item 5: every step of every net predicted from its own NTK at init.

    ``stats`` from :func:`step_time_statistics`; ``predicted_widest``, ``measured_widest``: (n_seeds, d) of the
    widest nets (shown with the check); ``monotone_tolerance``: the allowed relative rise from one width to the next.
    """
    seeds = _seeds(stats["median"].shape[0])
    widest = widths[-1]
    why = ("the kernel theory (stepwise.theory.kernel.predict: contrastive eigenproblem of the net's own empirical "
           "NTK at initialisation, neural-tangents, output-averaged; Gram-Schmidt amplitudes of F(0) a_j; the exact "
           "per-mode GD map at the training lr) is exact for a kernel machine whose kernel stays fixed (kernel_bt "
           "gates it at 2%); a network of width N differs from that machine by O(1/sqrt(N)) (the NTK's change "
           "during training, and its output blocks: K_kl = delta_kl K only as N -> infinity)")
    return [
        check(
            "step_time_error_monotone_in_width", monotone_violation(stats["mean_median"]), monotone_tolerance,
            kind="theory",
            reason=why + ", so the error falls as the width grows (theory note 3, role of the NTK). Judged, like the "
            f"distances, on the mean over {seeds} of each net's median |relative error| over its d steps; value = "
            "the largest relative rise of that mean from one width to the next",
            description=f"max relative increase over widths {list(widths)} of the seed-mean median |predicted "
            "- measured| / measured half-rise step",
            measured=stats["median"],
        ),
        check(
            "step_time_rel_error_widest", float(stats["mean_median"][-1]), STEP_ERROR_TARGET, kind="theory",
            reason=f"issue 12 item 5: at the widest net the kernel theory on its own NTK must predict the step "
            f"times to 10%. Derived room: 1/sqrt({widest}) = {1 / math.sqrt(widest):.3f} for the finite-width "
            "corrections times an O(1) constant, on top of the fixed-kernel theory's own error (theory note 2.4 "
            "numerics: <= 1.5%); the half-rise step is logit-interpolated between updates (< 1 update)",
            description=f"mean over {seeds} of the median |relative error| of the d predicted half-rise steps of the "
            f"width-{widest} nets",
            predicted=predicted_widest, measured=measured_widest,
        ),
        check(
            "step_time_rel_error_max", float(stats["max"][-1]), None, kind="reported",
            reason="issue 12 item 5 asks for the largest error per width; the gate is on the median (a single mode "
            "can sit near a degenerate neighbour, theory note 7.7); measured = the largest |relative error| of each "
            "width, narrowest first",
            description=f"largest |relative error| of any predicted half-rise step of the width-{widest} nets (over "
            f"the d modes and the {seeds})",
            measured=stats["max"],
        ),
        check(
            "first_step_rel_error_widest", float(np.max(np.abs(stats["rel"][:, -1, 0]))), None, kind="reported",
            reason="the first step grows from the initial embedding alone, before any mode is learned, so neither the "
            "kernel's change during training nor its output blocks act on it yet: it isolates the kernel theory's "
            "own error; every later step starts after earlier modes have made the embeddings O(1)",
            description=f"largest |relative error| of step 1 over the {seeds} at width {widest}; measured = each "
            "width's largest, narrowest first",
            measured=np.max(np.abs(stats["rel"][:, :, 0]), axis=0),
        ),
    ]


@float64
def linearised_checks(width: int, pred: np.ndarray, net: np.ndarray, lin: np.ndarray) -> list[Check]:
    """Reported: the first widest net (``width``) against its own linearisation at initialisation: (d,) half-rise
    steps predicted from its NTK at initialisation (``pred``), measured on the net and on its linearisation."""
    return [
        check(
            "linearised_vs_net_step_rel_diff", float(np.max(np.abs(relative_errors(lin, net)))), None,
            kind="reported",
            reason="a diagnosis, not a prediction: the linearised net keeps its NTK at initialisation exactly, so "
            "a small difference from the net says the kernel's change during training does not set the step "
            "times; what then separates the net from the theory is the NTK's output structure the theory averages "
            "out (K_kl = delta_kl K)",
            description=f"largest |t_linearised - t_net| / t_net over the d half-rise steps (width "
            f"{width}, first seed)",
            predicted=lin, measured=net,
        ),
        check(
            "linearised_step_time_rel_error", float(np.median(np.abs(relative_errors(pred, lin)))), None,
            kind="reported",
            reason="the kernel theory's median step-time error on a model whose NTK cannot change (the net's "
            "linearisation at initialisation): what remains is what the output-averaged kernel leaves out",
            description=f"median |predicted - measured| / measured half-rise step of the linearised width-"
            f"{width} net (first seed)",
            predicted=pred, measured=lin,
        ),
    ]


@float64
def sweep_checks(widths: Sequence[int], monotone_tolerance: float, per_seed: dict[str, np.ndarray], null: np.ndarray,
                 limit_gram: float) -> list[Check]:
    """The distance, baseline, kernel-limit, loss and step-time checks of a width sweep.

    Args:
      widths: the hidden widths, increasing.
      monotone_tolerance: allowed relative rise of a seed mean from one width to the next (0 = strict).
      per_seed: (n_seeds, W) arrays ``gram_inf``, ``proj_inf`` (held-out Gram error and projector distance to the
        infinite-width NTK prediction), ``gram_emp`` (to the own NTK's), ``final_loss``; (n_seeds, W, d)
        ``pred_steps``, ``meas_steps`` (half-rise steps predicted from each net's own NTK and measured).
      null: (W, n_draws) :func:`random_function_errors` of each width.
      limit_gram: held-out Gram error of the kernel machine on the widest stax NTK.
    """
    mean = {name: np.asarray(per_seed[name]).mean(axis=0) for name in ("gram_inf", "proj_inf", "gram_emp")}
    viol_gram, viol_proj = monotone_violation(mean["gram_inf"]), monotone_violation(mean["proj_inf"])
    null_thr = random_function_threshold(null[-1])
    slope = loglog_slope(widths, mean["gram_inf"])
    seeds = _seeds(np.asarray(per_seed["gram_inf"]).shape[0])
    step_stats = step_time_statistics(per_seed["pred_steps"], per_seed["meas_steps"])
    trend = ("theory note 6.9 (E7) and note 3 (role of the NTK): a wider net stays closer to its linearisation, so "
             "its embedding's distance to the infinite-width kernel prediction decreases monotonically with width. "
             f"The claim is about the expected distance (one network fluctuates), so it is gated on the mean over "
             f"{seeds} per width; value = the largest relative rise of that mean from one width to the next")
    floor = ("the finite net's NTK fluctuates about its limit by O(1/sqrt(width)) with no stated constant, drifts "
             "during training, and its limit differs from stax's by a width-independent amount (Flax's "
             "truncated-normal first layer, stepwise.ntk.stax_network)")
    return [
        check(
            "gram_error_monotone_in_width", viol_gram, monotone_tolerance, kind="theory", reason=trend,
            description=f"max relative increase of the seed-mean held-out Gram error over widths {list(widths)}",
            measured=per_seed["gram_inf"],
        ),
        check(
            "projector_distance_monotone_in_width", viol_proj, monotone_tolerance, kind="theory",
            reason="the same for the learned subspace (rotation-invariant projector distance): " + trend,
            description="max relative increase of the seed-mean ||P_net - P_ntk||_F over the widths",
            measured=per_seed["proj_inf"],
        ),
        check(
            "widest_gram_vs_random_function", float(per_seed["gram_inf"][:, -1].max()), null_thr, kind="baseline",
            reason="the widest nets' embeddings must be closer to the stax NTK prediction than random functions "
            f"B k(x) of the same kernel (scaled alike): threshold = mean - 2 std of {null.shape[1]} draws (mean "
            f"{null[-1].mean():.2f}); value = the worst of the {seeds}",
            description=f"largest held-out Gram relative error of the width-{widths[-1]} nets vs the stax NTK "
            "prediction",
            predicted=null[-1], measured=per_seed["gram_inf"][:, -1],
        ),
        check(
            "widest_gram_rel_error", float(mean["gram_inf"][-1]), None, kind="reported",
            reason="theory note 6.9: the paper's numbers are [U] and the note asks for the trend (gated above) and "
            f"the values; no theory value exists for a finite width: {floor}",
            description=f"seed-mean held-out Gram relative error of width {widths[-1]} vs the stax NTK prediction "
            f"(measured: each seed; own NTK at initialisation: {mean['gram_emp'][-1]:.3g})",
            measured=per_seed["gram_inf"][:, -1],
        ),
        check(
            "gram_error_loglog_slope", slope, -0.5, op="==", kind="reported",
            reason="the NTK's finite-width fluctuation is O(1/sqrt(width)), so a distance linear in it falls with "
            "slope -1/2 (the kernel distance per width is in the summary, ntk_rel_diff); not gated: the paper states "
            "no rate, the narrowest nets are outside the perturbative regime, and the width-independent part of the "
            "kernel's limit (Flax's truncated-normal first layer) would flatten the slope at large width",
            description="least-squares slope of log seed-mean Gram error vs log width",
        ),
        check(
            "kernel_limit_gram_rel_error", limit_gram, 1e-2, kind="theory",
            reason="theory note 6.8 (criterion 1e-2, as 6.7): the kernel machine on the widest architecture's stax "
            "NTK, trained by GD from small initialisation, ends at kernel PCA of the contrastive kernel (the "
            "sweep's infinite-width point)",
            description="held-out Gram relative error of the stax-NTK kernel machine vs its kernel-PCA prediction",
        ),
        check(
            "final_loss_max", float(per_seed["final_loss"].max()), 1e-6, kind="theory",
            reason="theory note 2.6 / 6.7 (criterion ||C - I||_F < 1e-3, i.e. loss < 1e-6): GD from small "
            "initialisation reaches the minimum C = I with all d modes learned, which the final-embedding "
            "comparison needs",
            description=f"largest final ||C - I||_F^2 over the widths and the {seeds}",
        ),
        *step_time_checks(widths, monotone_tolerance, step_stats, per_seed["pred_steps"][:, -1],
                          per_seed["meas_steps"][:, -1]),
    ]
