"""Checks for Tian, Chen & Ganguli 2021 on trained networks (theory note tian2021, checklist B) and DirectPred.

The statistics are computed on the host in float64 from a run's tracked F = E[f f^T] (uncentred, online projector
outputs over the fixed evaluation views) and predictor W_p, with the theory module's own diagnostics
(:func:`stepwise.theory.noncontrastive.aligned_spectrum`, ``alignment_cosines``, ``asymmetry``). Each check
function returns :class:`~stepwise.compare.checks.Check` objects; the experiments write them to results.json and the
tests assert them, so a figure's verdict and CI use the same code. Every check says its kind of evidence
(:mod:`stepwise.compare.checks`): the note's criteria are theory checks (gated even where they fail at CPU scale),
trends are baselines against predictors that have not learned (:func:`random_predictor_null`) or against the
untrained network, paired by seed (:func:`seed_margin`), and what has no honest threshold is reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import numpy as np

from stepwise import _compat
from stepwise._precision import float64
from stepwise.compare.checks import Check, check
from stepwise.theory import noncontrastive as nc

__all__ = [
    "ALIGN_FLOOR",
    "NULL_DRAWS",
    "Alignment",
    "alignment_trajectory",
    "b4_checks",
    "deep_checks",
    "directpred_checks",
    "loglog_slope",
    "mean_spread",
    "random_predictor_null",
    "seed_margin",
    "spectrum_split",
]

# Note B1: modes with s_j > 1e-3 s_max are "non-null"; the near-null ones are ignored.
ALIGN_FLOOR = 1e-3


@dataclasses.dataclass(frozen=True)
class Alignment:
    """Alignment and symmetry of W_p with F over the T tracking points of one run.

    Attributes:
      s: (T, d) eigenvalues of F, descending. p: (T, d) p_j = u_j^T W_p u_j on F's eigenvectors u_j.
      cos: (T, d) cos_j = u_j^T W_p u_j / ||W_p u_j|| (Fig. 2, note B1).
      alive: (T, d) s_j > floor * s_max.
      asymmetry: (T,) ||W_p - W_p^T||_F / ||W_p||_F (note B2).
      min_eig_ratio: (T,) smallest / largest eigenvalue of the symmetric part (W_p + W_p^T) / 2 (B2: negative
        eigenvalues shrink towards 0).
    """

    s: np.ndarray
    p: np.ndarray
    cos: np.ndarray
    alive: np.ndarray
    asymmetry: np.ndarray
    min_eig_ratio: np.ndarray


@float64
def alignment_trajectory(corr: np.ndarray, wp: np.ndarray, *, floor: float = ALIGN_FLOOR) -> Alignment:
    """The statistics of :class:`Alignment` for (T, d, d) histories of F and W_p (float64).

    Raises:
      ValueError: shapes that are not (T, d, d) and equal, or a floor outside (0, 1).
    """
    corr, wp = np.asarray(corr, np.float64), np.asarray(wp, np.float64)
    if corr.ndim != 3 or corr.shape != wp.shape or corr.shape[1] != corr.shape[2]:
        raise ValueError(f"corr and wp must both be (T, d, d); got {corr.shape} and {wp.shape}")
    if not 0 < floor < 1:
        raise ValueError(f"floor must be in (0, 1) (got {floor})")
    with _compat.enable_x64(True):
        s, p = (np.asarray(a) for a in jax.vmap(nc.aligned_spectrum)(corr, wp))
        cos = np.asarray(jax.vmap(nc.alignment_cosines)(corr, wp))
        asym = np.asarray(nc.asymmetry(wp))
    sym_eigs = np.linalg.eigvalsh(0.5 * (wp + np.swapaxes(wp, 1, 2)))
    ratio = sym_eigs[:, 0] / np.max(np.abs(sym_eigs), axis=1)
    return Alignment(s=s, p=p, cos=cos, alive=s > floor * s[:, :1], asymmetry=asym, min_eig_ratio=ratio)


@float64
def loglog_slope(s: np.ndarray, p: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Least-squares slope of log p_j against log s_j over the masked modes with s_j, p_j > 0 (NaN if < 2)."""
    s, p = np.asarray(s, np.float64), np.asarray(p, np.float64)
    ok = (s > 0) & (p > 0) & (np.ones_like(s, bool) if mask is None else np.asarray(mask, bool))
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(s[ok]), np.log(p[ok]), 1)[0])


@float64
def spectrum_split(s: np.ndarray, *, floor: float = ALIGN_FLOOR) -> tuple[float, float]:
    """How F's spectrum splits into a group that holds and a group going to 0 over the second half of training.

    Args:
      s: (T, d) eigenvalues of F over the tracking points, descending at each point.
      floor: a mode is null at the end when s_j < floor s_max.

    Returns:
      (separation, null_change), in decades of s_j / s_max between the middle (T // 2) and the last tracking
      point: separation = the smallest change of a non-null mode minus the largest change of a null mode;
      null_change = the largest change of a null mode (negative: every null mode is still shrinking). Both are NaN
      when every mode is non-null (there is no split).
    """
    s = np.asarray(s, np.float64)
    rel = np.maximum(s / s[:, :1], 1e-300)
    change = np.log10(rel[-1] / rel[s.shape[0] // 2])
    alive = rel[-1] > floor
    if alive.all():
        return float("nan"), float("nan")
    null_change = float(change[~alive].max())
    return float(change[alive].min()) - null_change, null_change


@float64
def mean_spread(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (ddof = 1; 0 for one seed) over the first axis (seeds)."""
    values = np.asarray(values, np.float64)
    spread = values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.zeros(values.shape[1:])
    return values.mean(axis=0), spread


# ----------------------------------------------------------------------------------------------------------------
# The null model of a predictor that has not learned.

#: Draws of the random-predictor null (the checks module's baselines ask for >= 20).
NULL_DRAWS = 200


@float64
def random_predictor_null(d: int, n_modes: int, *, draws: int = NULL_DRAWS, seed: int = 0) -> dict[str, np.ndarray]:
    """The B1/B2 statistics of predictors that have not learned: ``draws`` i.i.d. Gaussian d x d W_p (the
    distribution the linear predictor starts from, N(0, c / d) entries).

    Every statistic here is scale-free, so c does not matter, and the distribution of Q^T W_p Q is that of W_p for
    any orthogonal Q, so the cosines with F's eigenvectors are distributed as those with the first ``n_modes``
    standard basis vectors, whatever F is: the null depends on d and ``n_modes`` only.

    Returns:
      ``{"mean_cos": (draws,), "asymmetry": (draws,), "min_eig_ratio": (draws,)}``: mean over ``n_modes`` modes of
      cos_j = u_j^T W_p u_j / ||W_p u_j||, ||W_p - W_p^T||_F / ||W_p||_F, and lambda_min / max|lambda| of
      (W_p + W_p^T) / 2, for each draw.

    Raises:
      ValueError: d < 2, n_modes outside [1, d] or draws < 2.
    """
    if d < 2 or not 1 <= n_modes <= d or draws < 2:
        raise ValueError(f"need d >= 2, 1 <= n_modes <= d and draws >= 2 (got {d}, {n_modes}, {draws})")
    wp = np.random.default_rng(seed).normal(size=(draws, d, d)) / np.sqrt(d)
    cols = wp[:, :, :n_modes]  # W_p e_j
    cos = np.diagonal(cols[:, :n_modes, :], axis1=1, axis2=2) / np.linalg.norm(cols, axis=1)
    sym = np.linalg.eigvalsh(0.5 * (wp + np.swapaxes(wp, 1, 2)))
    asym = np.linalg.norm(wp - np.swapaxes(wp, 1, 2), axis=(1, 2)) / np.linalg.norm(wp, axis=(1, 2))
    return {"mean_cos": cos.mean(axis=1), "asymmetry": asym,
            "min_eig_ratio": sym[:, 0] / np.max(np.abs(sym), axis=1)}


@float64
def seed_margin(diff: np.ndarray) -> tuple[float, float]:
    """(mean, standard error of the mean) over seeds of paired per-seed differences (SE 0 for one seed)."""
    diff = np.asarray(diff, np.float64)
    se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
    return float(diff.mean()), se


# ----------------------------------------------------------------------------------------------------------------
# Checks.


_NULL = "{n} i.i.d. Gaussian W_p (the linear predictor's initial distribution)"


@float64
def deep_checks(runs: Sequence[Alignment], *, min_cos: float = 0.9, min_modes: int = 2,
                max_asymmetry: float = 0.1, null_draws: int = NULL_DRAWS) -> list[Check]:
    """Checks B1-B3 of the note on BYOL runs with a linear predictor (one :class:`Alignment` per seed).

    Every statistic is the worst over the seeds, at the last tracking point unless said otherwise. Theory: the
    note's B1 cosine criterion, no complete collapse and the note's B2 asymmetry criterion. Baseline: the mean
    alignment cosine and the smallest eigenvalue of W_p's symmetric part against predictors that have not learned
    (:func:`random_predictor_null`, threshold mean +- 2 std of the null). Reported, not gated: W_p's asymmetry
    over training, the split of F's spectrum (B3) and the log-log slope of p_j against s_j (B3).
    """
    end = [r.alive[-1] for r in runs]
    cos_min = min(float(r.cos[-1][a].min()) for r, a in zip(runs, end))
    n_modes = [int(a.sum()) for a in end]
    mean_cos = [float(r.cos[-1][a].mean()) for r, a in zip(runs, end)]
    asym_end = [float(r.asymmetry[-1]) for r in runs]
    asym_ratio = [float(r.asymmetry[-1] / r.asymmetry[0]) for r in runs]
    eig_ratio = [float(r.min_eig_ratio[-1]) for r in runs]
    splits = [spectrum_split(r.s) for r in runs]
    slopes = [loglog_slope(r.s[-1], r.p[-1], a) for r, a in zip(runs, end)]
    # One null per seed (its d and number of non-null modes); the most demanding of them is the threshold.
    nulls = [random_predictor_null(r.cos.shape[1], max(n, 1), draws=null_draws) for r, n in zip(runs, n_modes)]
    cos_null = max(float(n["mean_cos"].mean() + 2 * n["mean_cos"].std(ddof=1)) for n in nulls)
    eig_null = max(float(n["min_eig_ratio"].mean() + 2 * n["min_eig_ratio"].std(ddof=1)) for n in nulls)
    null = _NULL.format(n=null_draws)
    return [
        check(
            "b1_alignment_cos_min", cos_min, min_cos, op=">", kind="theory",
            reason="note B1 [proposed]: cos_j > 0.9 for every mode with s_j > 1e-3 s_max by the end of training (the "
            "paper's Fig. 2 shows the cosines rising towards 1 without a number; 0.9 is the note's)",
            description="min over seeds and non-null modes of cos_j = u_j^T W_p u_j / ||W_p u_j|| at the end, u_j "
            "the eigenvectors of F = E[f f^T] (online projector outputs, both evaluation views, uncentred)",
            measured=[float(r.cos[-1][a].min()) for r, a in zip(runs, end)],
        ),
        check(
            "b1_aligned_modes_min", min(n_modes), min_modes, op=">=", kind="theory",
            reason="the paper's claim that BYOL with a predictor does not collapse (Fig. 2: a group of modes grows "
            "and holds): a completely collapsed network outputs one vector, whose uncentred F has rank 1, so a run "
            "that has not collapsed keeps >= 2 modes with s_j > 1e-3 s_max (min_modes, config)",
            description="min over seeds of the number of modes with s_j > 1e-3 s_max at the end",
            measured=n_modes,
        ),
        check(
            "b1_alignment_vs_random", min(mean_cos), cos_null, op=">", kind="baseline",
            reason="paper Fig. 2: W_p aligns with F's eigenvectors through training; null: " + null + " against the "
            "same number of F's eigenvectors, threshold its mean + 2 std (the highest over seeds)",
            description="min over seeds of mean_j cos_j over the modes non-null at the end",
            measured={"mean_cos": mean_cos, "cos_start": [float(r.cos[0][a].mean()) for r, a in zip(runs, end)],
                      "null_mean_std": [[float(n["mean_cos"].mean()), float(n["mean_cos"].std(ddof=1))]
                                        for n in nulls]},
        ),
        check(
            "b2_asymmetry_end", max(asym_end), max_asymmetry, op="<", kind="theory",
            reason="note B2 [proposed]: ||W_p - W_p^T||_F / ||W_p||_F < 0.1 by the end of training (the paper's Fig. "
            "2: W_p becomes symmetric). At CPU scale this can fail: the runs are a few thousand SGD steps instead of "
            "100 epochs, and the antisymmetric part of W_p, which only weight decay and the alignment terms remove, "
            "is kept up by minibatch gradient noise",
            description="max over seeds of ||W_p - W_p^T||_F / ||W_p||_F at the end",
            measured=asym_end,
        ),
        check(
            "b2_min_eigenvalue_vs_random", min(eig_ratio), eig_null, op=">", kind="baseline",
            reason="paper Fig. 2 / note B2: W_p's negative eigenvalues shrink towards 0 (it becomes positive "
            "semi-definite); null: " + null + ", threshold its mean + 2 std",
            description="min over seeds of lambda_min / max|lambda| of (W_p + W_p^T)/2 at the end (0: positive "
            "semi-definite; a random W_p is near -1)",
            measured={"end": eig_ratio, "start": [float(r.min_eig_ratio[0]) for r in runs],
                      "null_mean_std": [[float(n["min_eig_ratio"].mean()), float(n["min_eig_ratio"].std(ddof=1))]
                                        for n in nulls]},
        ),
        check(
            "b2_asymmetry_ratio", max(asym_ratio), None, kind="reported",
            reason="the trend behind B2, shown for the reader: the paper gives no factor, and the gated criterion is "
            "the note's end value (b2_asymmetry_end)",
            description="max over seeds of asymmetry(end) / asymmetry(0)",
            measured={"start": [float(r.asymmetry[0]) for r in runs], "end": asym_end},
        ),
        check(
            "b3_spectrum_split_decades", float(np.min([g for g, _ in splits])), None, op=">=", kind="reported",
            reason="paper Fig. 2 / note B3: log s_j splits into a group that grows or holds and a group going to 0; "
            "the figure is qualitative and gives no size, and the groups are defined by where the modes end, so "
            "even noise gives a positive separation: no threshold follows, shown not gated",
            description="min over seeds of [smallest change of a non-null mode - largest change of a null mode] of "
            "log10(s_j / s_max) from mid-training to the end (null: s_j < 1e-3 s_max at the end; NaN if none)",
            measured=[g for g, _ in splits],
        ),
        check(
            "b3_null_modes_shrink_decades", float(np.max([c for _, c in splits])), None, kind="reported",
            reason="paper Fig. 2 / note B3: the vanishing group keeps going to 0; the rate in the linear theory "
            "(s_j ~ e^{-2 eta t} once p_j -> 0) is for the unnormalised loss, not the cosine loss trained here, and "
            "modes selected for ending small shrink under noise too: shown, not gated",
            description="max over seeds and null modes of the change of log10(s_j / s_max) from mid-training to "
            "the end",
            measured=[c for _, c in splits],
        ),
        check(
            "b3_loglog_slope", float(np.nanmean(slopes)) if np.isfinite(slopes).any() else float("nan"), 0.5,
            op="==", kind="reported",
            reason="note B3 [proposed, theory-derived]: s proportional to p^2 (slope 0.5) is the linear model's "
            "invariant parabola (Eqn 14) with isotropic data and the unnormalised loss; the paper does not measure "
            "it on networks. Under the cosine loss the non-null modes' p_j approach a common value (like the per-"
            "mode fixed point p_+) while their s_j can differ by decades, so the slope is expected well below 0.5 "
            "here; reported (reference 0.5), not gated",
            description="mean over seeds of the least-squares slope of log p_j against log s_j over the modes "
            "non-null at the end (p_j = u_j^T W_p u_j)",
            measured=slopes,
        ),
    ]



@float64
def directpred_checks(final: Mapping[str, np.ndarray], initial: np.ndarray, n_modes: Mapping[str, Sequence[int]], *,
                      min_modes: int = 2, sweep: Mapping[float, Sequence[float]] | None = None) -> list[Check]:
    """DirectPred against trained predictors at CPU scale (note B5, B6), from final probe accuracies per seed.

    The comparisons are paired by seed (the same network initialisation, batches, views and probe split) and gated
    on the seed statistic mean - 2 standard errors of the per-seed differences (:func:`seed_margin`), the 2-sigma
    convention of the baselines; with one seed it is the difference itself.

    Args:
      final: method -> (seeds,) linear-probe accuracy at the end; must hold ``directpred`` and ``linear``, may hold
        ``mlp`` (the two-layer predictor, reported) and ``lstsq`` (Table 1's least-squares predictor, note B8).
      initial: (seeds,) probe accuracy of the untrained networks.
      n_modes: method -> per-seed number of non-null modes of F at the end.
      min_modes: fewest non-null modes counted as "not collapsed" (2: a collapsed network's F has rank 1).
      sweep: eps -> final accuracies of DirectPred's eps sweep (reported, not gated), or None.
    """
    dp, lin = np.asarray(final["directpred"], np.float64), np.asarray(final["linear"], np.float64)
    init = np.asarray(initial, np.float64)
    beats, beats_se = seed_margin(dp - lin)
    learns, learns_se = seed_margin(dp - init)
    modes_diff = np.asarray(n_modes["directpred"], np.float64) - np.asarray(n_modes["linear"], np.float64)
    n_seeds = dp.size
    checks = [
        check(
            "directpred_modes_min", min(n_modes["directpred"]), min_modes, op=">=", kind="theory",
            reason="the paper's DirectPred runs do not collapse (Tables 6 and 8): a completely collapsed network "
            "outputs one vector, whose uncentred F has rank 1, so a run that has not collapsed keeps >= 2 modes with "
            "s_j > 1e-3 s_max (min_modes, config)",
            description="min over seeds of the number of modes of F with s_j > 1e-3 s_max at the end",
            measured=list(n_modes["directpred"]),
        ),
        check(
            "directpred_modes_vs_linear", float(modes_diff.mean()), 0.0, op=">=", kind="theory",
            reason="Section 6: eps boosts the small eigenvalues p_j so that weak modes keep learning; so DirectPred "
            "keeps at least as many non-null modes as the trained linear predictor (the claim's own threshold, 0, "
            "on the mean over seeds)",
            description="mean over seeds of the number of non-null modes of F at the end, DirectPred minus linear",
            measured={m: list(v) for m, v in n_modes.items()},
        ),
        check(
            "directpred_vs_linear", beats - 2 * beats_se, 0.0, op=">", kind="theory",
            reason="note B5 (Tables 6 and 8): DirectPred beats the SGD-trained linear predictor (STL-10 +3.4 points, "
            "CIFAR-10 +0.7 at 100 epochs, several seed std); gated as its seed statistic: mean - 2 SE of the paired "
            f"differences over {n_seeds} seed(s) > 0. At CPU scale (an MLP on digits, 1000 steps) the check can "
            "fail without contradicting the paper: a probe scored on a few hundred held-out views has a binomial "
            "noise of about 2 points at 90% accuracy, the size of the paper's gains",
            description="mean - 2 standard errors over seeds of the per-seed final probe accuracy, DirectPred minus "
            "linear predictor (same seed: same initialisation, batches, views and probe split)",
            predicted=">0",
            measured={"directpred": dp.tolist(), "linear": lin.tolist(), "mean_difference": beats,
                      "standard_error": beats_se},
        ),
        check(
            "directpred_learns", learns - 2 * learns_se, 0.0, op=">", kind="baseline",
            reason="null: the untrained network (the same seed's network before training, probed with the same "
            "split); DirectPred's features must beat it, gated as mean - 2 SE of the paired differences over seeds "
            "> 0. A small network's random features already give a linear probe most of its accuracy on digits, and "
            "the probe's binomial noise on a few hundred views is about 2 points, so with 3 seeds this can fail at "
            "CPU scale",
            description="mean - 2 standard errors over seeds of the final probe accuracy of DirectPred minus that "
            "of the same seed's untrained network",
            measured={"directpred": dp.tolist(), "initial": init.tolist(), "mean_difference": learns,
                      "standard_error": learns_se},
        ),
    ]
    if "mlp" in final:
        mlp = np.asarray(final["mlp"], np.float64)
        diff, se = seed_margin(mlp - lin)
        checks.append(check(
            "twolayer_vs_linear", diff, 0.0, op=">", kind="reported",
            reason="paper Table 3 (STL-10, EMA, no bias): the two-layer predictor beats the linear one (78.85 vs "
            "74.51) on a ResNet-18 with BatchNorm; our CPU stand-in (a BatchNorm-free MLP on digits, 1000 steps) is "
            "not the setting of that claim, so it is shown (reference > 0), not gated",
            description="mean over seeds of the final probe accuracy, two-layer minus linear predictor",
            measured={"mlp": mlp.tolist(), "linear": lin.tolist(), "standard_error": se},
        ))
    if "lstsq" in final:
        ls = np.asarray(final["lstsq"], np.float64)
        worse, worse_se = seed_margin(dp - ls)
        vs_lin, vs_lin_se = seed_margin(lin - ls)
        checks += [
            check(
                "lstsq_worse_than_directpred", worse - 2 * worse_se, 0.0, op=">", kind="theory",
                reason="note B8 (Table 1): plugging in the least-squares 'optimal' linear predictor, re-solved from "
                "running moments, gives poor features (35-41% on STL-10) where DirectPred gives about 77%: the "
                "predictor that best fits the current targets does not give the dynamics that learn features; gated "
                f"as the seed statistic mean - 2 SE of the paired differences over {n_seeds} seed(s) > 0. At CPU "
                "scale (an MLP on digits, 1000 steps; random features already give most of the probe's accuracy) "
                "the gap can be within the probe's binomial noise of about 2 points, so it can fail without "
                "contradicting the paper",
                description="mean - 2 standard errors over seeds of the per-seed final probe accuracy, DirectPred "
                "minus the least-squares predictor (same seed: same initialisation, batches, views and probe split)",
                predicted=">0",
                measured={"directpred": dp.tolist(), "lstsq": ls.tolist(), "mean_difference": worse,
                          "standard_error": worse_se},
            ),
            check(
                "lstsq_vs_linear", vs_lin, 0.0, op=">", kind="reported",
                reason="Table 1 also puts the least-squares predictor below the SGD-trained linear one (35-41% vs "
                "74-75%); the gated B8 comparison is the one against DirectPred (above), this one is shown "
                "(reference > 0)",
                description="mean over seeds of the final probe accuracy, trained linear minus least-squares predictor",
                measured={"linear": lin.tolist(), "lstsq": ls.tolist(), "standard_error": vs_lin_se,
                          "lstsq_minus_untrained_mean": float(np.mean(ls - init))},
            ),
        ]
        if "lstsq" in n_modes:
            checks.append(check(
                "lstsq_modes_mean", float(np.mean(n_modes["lstsq"])), float(np.mean(n_modes["directpred"])), op="<",
                kind="reported",
                reason="what the least-squares predictor does to the representation: the paper reports only the "
                "accuracy (Table 1), not F's spectrum, so the number of non-null modes of F (s_j > 1e-3 s_max) is "
                "shown against DirectPred's (the reference), not gated",
                description="mean over seeds of the number of non-null modes of F at the end, least-squares predictor",
                measured={"lstsq": list(n_modes["lstsq"]), "directpred": list(n_modes["directpred"])},
            ))
    if sweep:
        eps = sorted(sweep)
        means = [float(np.mean(sweep[e])) for e in eps]
        checks.append(check(
            "directpred_eps_best", eps[int(np.argmax(means))], 0.1, op="==", kind="reported",
            reason="note B6 (Table 6): eps = 0.1 is best and eps = 0.5 worse; the sweep runs fewer seeds than a seed "
            "statistic needs (sweep_seeds), so the best eps is shown (reference 0.1), not gated",
            description="the eps of the sweep with the highest mean final probe accuracy",
            measured={f"{e:g}": [float(x) for x in sweep[e]] for e in eps},
        ))
    return checks


@float64
def b4_checks(modes: Mapping[str, Sequence[int]], *, alpha_p: float) -> list[Check]:
    """Note B4 (Table 3): without EMA, a symmetric linear predictor collapses where a regular one does not.

    Args:
      modes: ``symmetric`` and ``regular`` -> per-seed number of non-null modes of F (s_j > 1e-3 s_max) at the end
        of SimSiam-style runs (no EMA: the target is the online network under stop-gradient), paired by seed.
      alpha_p: the predictor's relative learning rate of those runs (the paper's Table 3: 1).
    """
    sym = np.asarray(modes["symmetric"], np.float64)
    reg = np.asarray(modes["regular"], np.float64)
    diff, se = seed_margin(reg - sym)
    return [check(
        "b4_symmetric_no_ema_collapses", diff - 2 * se, 0.0, op=">", kind="theory",
        reason="note B4 (Table 3, alpha_p = 1, no EMA): a symmetric W_p collapses (36-42% on STL-10) where a regular "
        "one does not (66-73%); Eqn 17 fails for small p_j when tau = 1. Collapse is measured as F losing its "
        "non-null modes (a collapsed network's uncentred F has rank 1); gated as the paired seed statistic mean - 2 "
        "SE of (regular - symmetric) > 0. Fig. 6: alpha_p > 1 can rescue the symmetric predictor, hence alpha_p = "
        f"{alpha_p:g} here. It can fail at CPU scale where the BatchNorm-free MLP collapses with a regular "
        "predictor too, so that there is no contrast to show",
        description="mean - 2 standard errors over seeds of the number of non-null modes of F at the end, regular "
        f"minus symmetric W_p, no EMA, alpha_p = {alpha_p:g}",
        measured={k: [int(x) for x in v] for k, v in modes.items()} | {"mean_difference": diff,
                                                                      "standard_error": se},
    )]
