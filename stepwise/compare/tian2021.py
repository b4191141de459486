"""Checks for Tian, Chen & Ganguli 2021 on trained networks (theory note tian2021, checklist B) and DirectPred, and
on the linear model itself (checklist A: A1-A9 and Fig. 9, the last section, ``LINEAR_CHECKS``).

Checklist B's statistics are computed on the host in float64 from a run's tracked F = E[f f^T] (uncentred, online
projector outputs over the fixed evaluation views) and predictor W_p, with the theory module's own diagnostics
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
from typing import Any

import jax
import numpy as np

from stepwise import _compat
from stepwise._precision import float64
from stepwise.compare.checks import Check, Kind, check
from stepwise.theory import noncontrastive as nc

__all__ = [
    "ALIGN_FLOOR",
    "NULL_DRAWS",
    "Alignment",
    "alignment_summary",
    "alignment_trajectory",
    "b4_checks",
    "b7_checks",
    "deep_checks",
    "directpred_checks",
    "end_spectrum",
    "fig6_checks",
    "loglog_slope",
    "mean_spread",
    "no_ema_checks",
    "no_ema_summary",
    "non_null_modes",
    "random_predictor_null",
    "seed_margin",
    "spectrum_split",
]

# Note B1: modes with s_j > 1e-3 s_max are "non-null"; the near-null ones are ignored.
ALIGN_FLOOR = 1e-3


@float64
def end_spectrum(corr: np.ndarray) -> np.ndarray:
    """Eigenvalues of the last tracked F (``corr[-1]``, of a (T, d, d) series) in float64, descending."""
    return np.linalg.eigvalsh(corr[-1].astype(np.float64))[::-1]


@float64
def non_null_modes(s: np.ndarray) -> int:
    """Non-null modes of a spectrum (descending): s_j > ALIGN_FLOOR s_max, the count of note B1 that the B4, B6, B7
    and Fig. 6 checks compare."""
    return int(np.sum(s > ALIGN_FLOOR * s[0]))


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
def alignment_summary(runs: Sequence[Alignment]) -> dict[str, list]:
    """Per run, what its alignment shows beside the checks: the cosines of the modes non-null at the end, at the end
    and at the start, their number, the asymmetry at the start and end, B3's log-log slope of p against s at the end
    (:func:`loglog_slope`) and the spectrum's split (:func:`spectrum_split`)."""
    end = [a.alive[-1] for a in runs]
    return {
        "alignment_cos_end": [a.cos[-1][m].tolist() for a, m in zip(runs, end)],
        "alignment_cos_start": [a.cos[0][m].tolist() for a, m in zip(runs, end)],
        "non_null_modes_end": [int(m.sum()) for m in end],
        "asymmetry_start": [float(a.asymmetry[0]) for a in runs],
        "asymmetry_end": [float(a.asymmetry[-1]) for a in runs],
        "b3_loglog_slope": [loglog_slope(a.s[-1], a.p[-1], m) for a, m in zip(runs, end)],
        "spectrum_split_decades_and_null_change": [spectrum_split(a.s) for a in runs],
    }


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


def _null_threshold(nulls: Sequence[Mapping[str, np.ndarray]], key: str) -> tuple[float, list[list[float]]]:
    """A baseline's threshold against :func:`random_predictor_null` draws (one null per seed): the most demanding
    over seeds of the null's mean + 2 std of statistic ``key``, and each null's [mean, std]."""
    stats = [[float(n[key].mean()), float(n[key].std(ddof=1))] for n in nulls]
    return max(float(n[key].mean() + 2 * n[key].std(ddof=1)) for n in nulls), stats


def _paired_seed_check(name: str, kind: Kind, pair: Mapping[str, np.ndarray], *, reason: str, description: str,
                       predicted: Any = None) -> Check:
    """The gate of a paired comparison over seeds: mean - 2 standard errors of the per-seed differences first - second
    of ``pair`` (label -> (seeds,) values, paired by seed) must be > 0 (:func:`seed_margin`, the 2-sigma convention
    of the baselines). Measured: both series, the mean difference and its standard error."""
    (first, a), (second, b) = pair.items()
    mean, se = seed_margin(a - b)
    return check(name, mean - 2 * se, 0.0, op=">", kind=kind, reason=reason, description=description,
                 predicted=predicted,
                 measured={first: a.tolist(), second: b.tolist(), "mean_difference": mean, "standard_error": se})


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
    cos_null, cos_null_stats = _null_threshold(nulls, "mean_cos")
    eig_null, eig_null_stats = _null_threshold(nulls, "min_eig_ratio")
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
                      "null_mean_std": cos_null_stats},
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
                      "null_mean_std": eig_null_stats},
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
        _paired_seed_check(
            "directpred_vs_linear", "theory", {"directpred": dp, "linear": lin},
            reason="note B5 (Tables 6 and 8): DirectPred beats the SGD-trained linear predictor (STL-10 +3.4 points, "
            "CIFAR-10 +0.7 at 100 epochs, several seed std); gated as its seed statistic: mean - 2 SE of the paired "
            f"differences over {n_seeds} seed(s) > 0. At CPU scale (an MLP on digits, 1000 steps) the check can "
            "fail without contradicting the paper: a probe scored on a few hundred held-out views has a binomial "
            "noise of about 2 points at 90% accuracy, the size of the paper's gains",
            description="mean - 2 standard errors over seeds of the per-seed final probe accuracy, DirectPred minus "
            "linear predictor (same seed: same initialisation, batches, views and probe split)",
            predicted=">0",
        ),
        _paired_seed_check(
            "directpred_learns", "baseline", {"directpred": dp, "initial": init},
            reason="null: the untrained network (the same seed's network before training, probed with the same "
            "split); DirectPred's features must beat it, gated as mean - 2 SE of the paired differences over seeds "
            "> 0. A small network's random features already give a linear probe most of its accuracy on digits, and "
            "the probe's binomial noise on a few hundred views is about 2 points, so with 3 seeds this can fail at "
            "CPU scale",
            description="mean - 2 standard errors over seeds of the final probe accuracy of DirectPred minus that "
            "of the same seed's untrained network",
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
        vs_lin, vs_lin_se = seed_margin(lin - ls)
        checks += [
            _paired_seed_check(
                "lstsq_worse_than_directpred", "theory", {"directpred": dp, "lstsq": ls},
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
            "statistic needs (eps_sweep.seeds), so the best eps is shown (reference 0.1), not gated",
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


@float64
def b7_checks(final: Mapping[str, Sequence[float]], n_modes: Mapping[str, Sequence[int]], *, c: float,
              eps: float) -> list[Check]:
    """Note B7 (Table 7): DirectPred with a positive constant c_j at freq = 1 gives poor, unstable runs.

    Args:
      final: ``default`` (DirectPred as configured, at eps) and ``positive_c`` (Table 7's variant p_j =
        sqrt(max(s_j / s_max - c, 1e-4)), eps = 0, freq = 1) -> per-seed final linear-probe accuracy, paired by
        seed (the same initialisation, batches, views and probe split).
      n_modes: the same keys -> per-seed number of non-null modes of F (s_j > 1e-3 s_max) at the end.
      c: the positive constant of the variant runs (in units of s_max). eps: the default runs' eps.

    Raises:
      ValueError: c <= 0, or the two methods' seed counts differ (the statistic is paired).
    """
    dflt, pos = np.asarray(final["default"], np.float64), np.asarray(final["positive_c"], np.float64)
    if not c > 0:
        raise ValueError(f"B7 is about a positive c (got {c})")
    if dflt.shape != pos.shape or dflt.ndim != 1:
        raise ValueError(f"final accuracies must be paired per seed (got {dflt.shape} and {pos.shape})")
    (_, sd_default), (_, sd_pos) = mean_spread(dflt), mean_spread(pos)
    n = dflt.size
    return [
        _paired_seed_check(
            "b7_positive_c_worse", "theory", {"default": dflt, "positive_c": pos},
            reason=f"note B7 (Table 7, rho 0.3, eps 0, EMA, freq 1): DirectPred with positive c gives poor runs, "
            "46.57 +- 18.43 (c = 0.1) and 65.31 +- 18.22 (c = 0.05) against 76.77 for c = 0 (Table 6, eps 0) and "
            "77.86 for eps 0.1; p_j ~ 0 on the modes with s_j < c s_max removes their gradient through W_p, so "
            "they fade (Eqn 12 with p_j = 0: ds_j/dt = -2 eta s_j). Gated as the paired seed statistic mean - 2 SE "
            f"over {n} seed(s) of (DirectPred at eps {eps:g}) - (c = {c:g}, eps 0) > 0. At CPU scale (an MLP on "
            "digits, whose random features already probe well) the gap can be inside the probe's noise of about 2 "
            "points, so it can fail without contradicting the paper",
            description="mean - 2 standard errors over seeds of the per-seed final probe accuracy, default "
            f"DirectPred minus DirectPred with c = {c:g} (same seed: same initialisation, batches, views and probe)",
            predicted=">0",
        ),
        check(
            "b7_positive_c_spread", sd_pos, sd_default, op=">", kind="reported",
            reason="Table 7's 'unstable': the std over 5 seeds is about 18 points with positive c against 0.2-0.7 "
            f"otherwise. With {n} seeds a sample standard deviation has a relative error of about 1 / sqrt(2 (n - "
            "1)) (50% at 3 seeds), so a ratio of two of them has no 2-sigma margin short of an order of magnitude: "
            "shown against the default's (reference), not gated",
            description=f"standard deviation over seeds of the final probe accuracy with c = {c:g} (threshold: "
            "the default DirectPred's)",
            measured={"positive_c": float(sd_pos), "default": float(sd_default)},
        ),
        check(
            "b7_positive_c_modes", float(np.mean(n_modes["positive_c"])), float(np.mean(n_modes["default"])),
            op="<", kind="reported",
            reason="the mechanism behind B7 (derived, not in the paper): the modes with s_j < c s_max get p_j ~ 0 "
            "and fade under weight decay, so F keeps fewer non-null modes than with eps > 0 (which keeps every "
            "p_j >= eps); the paper reports accuracy only, and the decay e^{-2 eta t} over a CPU run may not reach "
            "the 1e-3 s_max floor: shown against the default's (reference), not gated",
            description=f"mean over seeds of the number of non-null modes of F at the end, DirectPred with c = {c:g}",
            measured={k: [int(x) for x in v] for k, v in n_modes.items()},
        ),
    ]


@float64
def fig6_checks(modes: Mapping[str, Sequence[int]], *, alpha_p: float, base_alpha_p: float,
                min_modes: int = 2) -> list[Check]:
    """Fig. 6: without EMA, a larger relative predictor learning rate alpha_p rescues the symmetric W_p.

    Args:
      modes: ``base`` (symmetric W_p, no EMA, ``base_alpha_p``: B4's runs) and ``rescue`` (the same at
        ``alpha_p``) -> per-seed number of non-null modes of F (s_j > 1e-3 s_max) at the end, paired by seed.
      alpha_p, base_alpha_p: the two relative predictor learning rates (alpha_p > base_alpha_p).
      min_modes: fewest non-null modes counted as "not collapsed" (2: a collapsed network's F has rank 1).

    The claim needs a collapse to rescue: when no seed's ``base`` run collapsed (every one keeps >= min_modes modes)
    the check is reported, not gated (a pass would be vacuous).

    Raises:
      ValueError: alpha_p <= base_alpha_p, or the two seed counts differ (the statistic is paired).
    """
    base, rescue = np.asarray(modes["base"], np.float64), np.asarray(modes["rescue"], np.float64)
    if not alpha_p > base_alpha_p:
        raise ValueError(f"the rescue needs alpha_p > base_alpha_p (got {alpha_p} and {base_alpha_p})")
    if base.shape != rescue.shape or base.ndim != 1:
        raise ValueError(f"modes must be paired per seed (got {base.shape} and {rescue.shape})")
    gain, se = seed_margin(rescue - base)
    collapsed = int(np.sum(base < min_modes))
    claim = (f"paper Fig. 6 (no EMA, symmetric W_p, STL-10 and CIFAR-10, 5 seeds): alpha_p > 1 rescues training that "
             f"collapses at alpha_p = 1 (Table 3: 36.62 against 72.85 with a regular W_p); Obs#1 and #6: a larger "
             f"alpha_p flattens the invariant parabola and loosens the alignment condition (Eqn 17). alpha_p = "
             f"{alpha_p:g} against {base_alpha_p:g}: the paper gives its values only in the plot, and the ReScience C "
             "replication (CIFAR-10) rescued the symmetric SimSiam predictor with alpha_pred = 2 (with lr 0.2 and "
             "a predictor-only weight decay). "
             "Collapse is measured as F losing its non-null modes")
    if collapsed:
        kind, reason = "theory", claim + (
            f"; gated as the paired seed statistic mean - 2 SE of (alpha_p = {alpha_p:g}) - (alpha_p = "
            f"{base_alpha_p:g}) > 0 over {base.size} seed(s)")
    else:
        kind, reason = "reported", claim + (
            f"; but no seed's symmetric run at alpha_p = {base_alpha_p:g} collapsed (each keeps >= {min_modes} "
            "non-null modes), so there is nothing to rescue: shown, not gated")
    return [check(
        "fig6_alpha_p_rescues_symmetric", gain - 2 * se, 0.0, op=">", kind=kind, reason=reason,
        description=f"mean - 2 standard errors over seeds of the number of non-null modes of F at the end, symmetric "
        f"W_p without EMA at alpha_p = {alpha_p:g} minus at alpha_p = {base_alpha_p:g} (same seeds as B4)",
        measured={"base": [int(x) for x in base], "rescue": [int(x) for x in rescue], "mean_difference": gain,
                  "standard_error": se, "base_collapsed_seeds": collapsed},
    )]


@float64
def no_ema_checks(modes: Mapping[str, Sequence[int]], *, b4_alpha_p: float, fig6_alpha_p: float,
                  min_modes: int = 2) -> list[Check]:
    """The runs without EMA: :func:`b4_checks` then :func:`fig6_checks`, from per-seed non-null mode counts of F at
    the end (:func:`non_null_modes`), paired by seed: ``regular`` and ``base`` (regular and symmetric W_p at
    ``b4_alpha_p``), ``rescue`` (symmetric W_p at ``fig6_alpha_p``)."""
    checks = b4_checks({"symmetric": modes["base"], "regular": modes["regular"]}, alpha_p=b4_alpha_p)
    return checks + fig6_checks({"base": modes["base"], "rescue": modes["rescue"]}, alpha_p=fig6_alpha_p,
                                base_alpha_p=b4_alpha_p, min_modes=min_modes)


@float64
def no_ema_summary(spectra: Mapping[str, Sequence[np.ndarray]]) -> dict[str, Any]:
    """What the runs without EMA show beside :func:`no_ema_checks`, from F's spectra at the end per seed (``base``,
    ``regular``, ``rescue`` as there): B4's non-null modes and participation ratio (sum s)^2 / sum s^2 per W_p, the
    Fig. 6 rescue's non-null modes and second-to-first eigenvalue ratio."""
    b4 = {"symmetric": spectra["base"], "regular": spectra["regular"]}
    return {
        "b4_non_null_modes_end": {k: [non_null_modes(s) for s in v] for k, v in b4.items()},
        "b4_participation_ratio_end": {k: [float(np.sum(s) ** 2 / np.sum(s**2)) for s in v] for k, v in b4.items()},
        "fig6_non_null_modes_end": [non_null_modes(s) for s in spectra["rescue"]],
        "fig6_second_mode_ratio_end": [float(s[1] / s[0]) for s in spectra["rescue"]],
    }


# ================================================================================================================
# The linear model (theory note tian2021, checklist A; moved from experiments/noncontrastive_linear/run.py).
#
# A1-A9 and Fig. 9 integrate Lemma 1's matrix model and its per-mode reduction (Eqns 11-13) with
# :func:`stepwise.theory.noncontrastive.integrate` / ``integrate_modes`` in float64 and check the paper's results.
# Each ``*_checks(cfg, data, summary)`` reads its settings from ``cfg`` (an
# ``experiments.noncontrastive_linear.NoncontrastiveLinearConfig``, or anything with its fields), adds the arrays
# its figure needs to ``data`` and its diagnostics to ``summary``, and returns its checks.

__all__ += [
    "FIXED_POINT_TABLE",
    "LINEAR_CHECKS",
    "a1_invariant_checks",
    "a2_decay_checks",
    "a3_alignment_checks",
    "a4_mode_checks",
    "a5_fixed_point_checks",
    "a6_no_decay_checks",
    "a7_matrix_checks",
    "a8_ema_checks",
    "a9_asymmetry_checks",
    "fig9_commutator_checks",
    "phase_portrait_data",
]

# Theory note section 5, A5: (tau, sigma2, eta, p_minus, p_plus), [derived] reference values to 5 decimals.
FIXED_POINT_TABLE = (
    (1.0, 0.5, 0.0, 0.0, 0.66667),
    (1.0, 0.5, 0.01, 0.01015, 0.65651),
    (1.0, 0.5, 0.04, 0.04274, 0.62393),
    (1.0, 0.5, 0.05, 0.05445, 0.61222),
    (1.0, 0.0, 0.01, 0.01010, 0.98990),
    (0.5, 0.5, 0.04, 0.13333, 0.20000),
)


def _cfg_rng(cfg: Any, *stream: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, *stream])


def _times(t_end: float, n: int, log: bool = False) -> np.ndarray:
    """n save times from 0 to t_end, evenly spaced or (log) 0 followed by a geometric grid from t_end * 1e-5."""
    if log:
        return np.concatenate([[0.0], np.geomspace(t_end * 1e-5, t_end, n - 1)])
    return np.linspace(0.0, t_end, n)


def _random_weights(rng, n2: int, n1: int, scale: float, *, symmetric: bool = False, wa: bool = False) -> nc.Weights:
    w = scale * rng.normal(size=(n2, n1)) / np.sqrt(n1)
    wp = scale * rng.normal(size=(n2, n2)) / np.sqrt(n2)
    if symmetric:
        wp = (wp + wp.T) / np.sqrt(2.0)
    target = scale * rng.normal(size=(n2, n1)) / np.sqrt(n1) if wa else np.zeros((n2, n1))
    return nc.Weights(w, wp, target)


def _solve(cfg, y0, x, x_aug, t, hyper, **kw) -> nc.Trajectory:
    opts = dict(solver=cfg.solver, rtol=cfg.rtol, atol=cfg.atol) | kw
    return nc.integrate(y0, x, x_aug, t, hyper, **opts)


def _solve_modes(cfg, p0, s0, t, hyper, **kw) -> nc.ModeTrajectory:
    return nc.integrate_modes(p0, s0, t, hyper, solver=cfg.solver, rtol=cfg.rtol, atol=cfg.atol, **kw)


def _gram(w: np.ndarray) -> np.ndarray:
    return w @ np.swapaxes(w, -1, -2)


def _fro(a: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a, axis=(-2, -1))


# ----------------------------------------------------------------------------------------------------------------
# A1: Theorem 1.


@float64
def a1_invariant_checks(cfg: Any, data: dict, summary: dict) -> list[Check]:
    n1, n2 = cfg.n1, cfg.n2
    rng = _cfg_rng(cfg, 1)
    a, b = rng.normal(size=(n1, n1)), rng.normal(size=(n1, n1))
    x, x_aug = a @ a.T / n1, 0.3 * b @ b.T / n1  # generic (non-isotropic) X and X'
    runs = {
        "byol": nc.Hyper("byol", alpha_p=2.0, beta=0.5, eta=0.01),
        "byol_beta1": nc.Hyper("byol", alpha_p=0.5, beta=1.0, eta=0.05),
        "simsiam": nc.Hyper("simsiam", alpha_p=1.5, eta=0.02),
        "fixed_tau": nc.Hyper("fixed_tau", alpha_p=1.0, tau=0.6, eta=0.0),
        # Controls, not gated: Theorem 1 needs the stop-gradient and an unsymmetrised predictor flow.
        "control_no_stopgrad": nc.Hyper("simsiam", alpha_p=1.5, eta=0.02, stop_gradient=False),
        "control_symmetrised": nc.Hyper("fixed_tau", alpha_p=1.0, tau=0.6, eta=0.0, symmetric_predictor=True),
    }
    t = _times(cfg.t_invariant, cfg.n_save)
    y0 = _random_weights(rng, n2, n1, 1.0, symmetric=True, wa=True)
    errors = {}
    for name, hyper in runs.items():
        tr = _solve(cfg, y0, x, x_aug, t, hyper)
        c = np.asarray(nc.balance(tr.w, tr.wp, tr.t, alpha_p=hyper.alpha_p, eta=hyper.eta))
        errors[name] = _fro(c - c[0]) / _fro(c[0])
    gated = [k for k in runs if not k.startswith("control")]
    worst = max(float(errors[k].max()) for k in gated)
    data.update(a1_t=t, a1_names=np.array(list(runs)), a1_rel_error=np.stack([errors[k] for k in runs]))
    summary["a1_invariant_max_rel_error"] = {k: float(v.max()) for k, v in errors.items()}
    return [check(
        "a1_invariant_rel_error", worst, 1e-6, kind="theory",
        reason="theory note A1: < 1e-6 with an adaptive solver (Theorem 1's invariant is exact for any W_a, X, X'; "
        "what is left is the solver's error, of order its rtol 1e-10 per unit time)",
        description=f"max over t <= {cfg.t_invariant:g} and {len(gated)} runs (BYOL beta 0.5 and 1, SimSiam, fixed "
        "tau; random non-isotropic X, X', random W_a(0)) of ||C(t) - C(0)||_F / ||C(0)||_F, "
        "C = e^{2 eta t}(W W^T - W_p^T W_p / alpha_p)",
        measured={k: float(errors[k].max()) for k in gated},
    )]


# ----------------------------------------------------------------------------------------------------------------
# A2: Theorem 2.


@float64
def a2_decay_checks(cfg: Any, data: dict, summary: dict) -> list[Check]:
    n1, n2, eta = cfg.n1, cfg.n2, 0.01  # eta of the note's derived example
    x, x_aug = nc.isotropic(n1, cfg.sigma2)
    rng = _cfg_rng(cfg, 2)
    y0 = _random_weights(rng, n2, n1, 1.0)
    t = _times(cfg.t_decay, cfg.n_save)
    rate = nc.isotropic_decay_rate(cfg.sigma2, eta)
    bound = np.exp(-rate * t)
    runs = {
        "fixed_wp": nc.Hyper("simsiam", alpha_p=0.0, eta=eta, eta_p=0.0, stop_gradient=False),
        "trained_wp": nc.Hyper("simsiam", alpha_p=1.0, eta=eta, stop_gradient=False),
    }
    ratio, lam_min, norms = {}, {}, {}
    for name, hyper in runs.items():
        tr = _solve(cfg, y0, x, x_aug, t, hyper)
        norms[name] = _fro(tr.w) / _fro(tr.w[0])
        ratio[name] = float(np.max(norms[name][1:] / bound[1:]))
        h = jax.vmap(lambda wp, hyper=hyper: nc.theorem2_operator(wp, x, x_aug, hyper))(tr.wp)
        lam_min[name] = float(np.min(np.linalg.eigvalsh(np.asarray(h))[:, 0]))
    # With stop-gradient, W_a = W and W_p = I held fixed, dW/dt = -(sigma2 + eta) W exactly.
    exact = _solve(cfg, nc.Weights(y0.w, np.eye(n2), y0.wa), x, x_aug, t,
                   nc.Hyper("simsiam", alpha_p=0.0, eta=eta, eta_p=0.0))
    exact_err = float(np.max(_fro(exact.w - bound[:, None, None] * y0.w)) / _fro(y0.w))
    data.update(a2_t=t, a2_bound=bound, a2_norm_fixed=norms["fixed_wp"], a2_norm_trained=norms["trained_wp"])
    summary["a2"] = {"rate": rate, "norm_ratio_end": {k: float(v[-1]) for k, v in norms.items()},
                     "bound_end": float(bound[-1]), "lambda_min_H": lam_min}
    return [
        check(
            "a2_decay_bound_ratio", max(ratio.values()), 1.0, kind="theory",
            reason="Theorem 2 (Eqn 6): ||W(t)|| <= e^{-lambda0 t} ||W(0)|| with lambda0 >= sigma2 + eta under "
            "isotropy; a ratio above 1 would contradict the theorem",
            description=f"max over 0 < t <= {cfg.t_decay:g} of ||W(t)|| / (e^{{-(sigma2+eta) t}} ||W(0)||), SimSiam "
            "without stop-gradient, W_p fixed or trained",
            measured=ratio,
        ),
        check(
            "a2_lambda_min_H", min(lam_min.values()), rate * (1 - 1e-12), op=">=", kind="consistency",
            reason="holds by construction for any W_p (it tests the code's H, not the paper): under isotropy H = "
            "sigma2 I (x) (W_p^T W_p + I) + I (x) W~_p^T W~_p + eta I is (sigma2 + eta) I plus positive "
            "semi-definite terms, so lambda_min >= sigma2 + eta (note A2 [derived]); threshold: that value less "
            "round-off",
            description="min over the saved W_p(t) of lambda_min(H) for both runs",
            predicted=rate,
        ),
        check(
            "a2_exact_decay_rel_error", exact_err, 1e-8, kind="theory",
            reason="theory note A2: with stop-gradient, W_a = W, W_p = I and isotropy, W(t) = e^{-(sigma2+eta)t} "
            "W(0) exactly; 1e-8 leaves room for the adaptive solver only",
            description="max_t ||W(t) - e^{-(sigma2+eta) t} W(0)||_F / ||W(0)||_F",
        ),
    ]


# ----------------------------------------------------------------------------------------------------------------
# A3: Eqn 7 and Theorem 3.


def _commutator_rate(y: nc.Weights, x, x_aug, hyper) -> tuple[jax.Array, jax.Array]:
    """dL/dt from Lemma 1's vector field (F = W W^T under X = I) and Theorem 3's -(L K + K L)."""
    d = nc.vector_field(y, x, x_aug, hyper)
    f, wp = y.w @ y.w.T, y.wp
    df = d.w @ y.w.T + y.w @ d.w.T
    dl = df @ wp + f @ d.wp - d.wp @ f - wp @ df
    lmat, k = nc.commutator(f, wp), nc.alignment_operator(f, wp, hyper.tau, hyper)
    return dl, -(lmat @ k + k @ lmat)


@float64
def a3_alignment_checks(cfg: Any, data: dict, summary: dict) -> list[Check]:
    n1, n2 = cfg.n1, cfg.n2
    x, x_aug = nc.isotropic(n1, cfg.sigma2)
    hyper = nc.Hyper("fixed_tau", tau=cfg.align.tau, sigma2=cfg.sigma2, eta=cfg.align.eta, symmetric_predictor=True)
    rng = _cfg_rng(cfg, 3)
    identity_err = 0.0
    for _ in range(5):
        y = _random_weights(rng, n2, n1, 1.0, symmetric=True)
        dl, pred = (np.asarray(a) for a in _commutator_rate(y, x, x_aug, hyper))
        identity_err = max(identity_err, float(_fro(dl - pred) / _fro(pred)))
    y0 = _random_weights(rng, n2, n1, 1.0, symmetric=True)
    t = _times(cfg.t_align, cfg.n_save)
    tr = _solve(cfg, y0, x, x_aug, t, hyper)
    f = _gram(tr.w)
    lnorm = _fro(np.asarray(jax.vmap(nc.commutator)(f, tr.wp)))
    k = np.asarray(jax.vmap(lambda f, wp: nc.alignment_operator(f, wp, hyper.tau, hyper))(f, tr.wp))
    lam = np.linalg.eigvalsh(k)[:, 0]
    lam0 = float(lam.min())
    bound = np.exp(-2 * lam0 * t) * lnorm[0]
    s_end, _ = nc.aligned_spectrum(f[-1], tr.wp[-1])
    cos = np.asarray(nc.alignment_cosines(f[-1], tr.wp[-1]))
    live = np.asarray(s_end) > ALIGN_FLOOR * float(s_end[0])
    data.update(a3_t=t, a3_commutator=lnorm, a3_bound=bound, a3_lambda_min_k=lam)
    summary["a3"] = {"lambda0": lam0, "commutator_end_over_start": float(lnorm[-1] / lnorm[0]),
                     "identity_rel_error": identity_err, "cosines_end": cos}
    return [
        check(
            "a3_commutator_identity", identity_err, 1e-10, kind="theory",
            reason="theory note A3: dL/dt = -(LK + KL) is an identity of the paper's derivation (Eqns 7-9 from "
            "Lemma 1 under isotropy, W_a = tau W, symmetric W_p): the paper's K (Eqn 9) against Lemma 1's vector "
            "field, so a wrong K fails it; 1e-10 allows float64 round-off",
            description="max over 5 random states of ||dL/dt (from Lemma 1's field) + (LK + KL)||_F / ||LK + KL||_F",
        ),
        check(
            "a3_lambda0", lam0, 0.0, op=">", kind="consistency",
            reason="Theorem 3's hypothesis inf_t lambda_min K(t) > 0, true by construction of the setting: for a "
            "symmetric W_p, W_p^2 - tau W_p / (1+sigma2) >= -tau^2 / (4(1+sigma2)^2) I and F >= 0, so K >= (1.5 eta "
            "- tau^2/(4(1+sigma2))) I > 0 with the config's align.eta; a failure means the symmetrised flow, K or "
            "the config is wrong (checked on the trajectory)",
            description="min over the saved times of lambda_min K(t)",
        ),
        check(
            "a3_commutator_bound_ratio", float(np.max(lnorm[1:] / bound[1:])), 1.0, kind="theory",
            reason="Theorem 3: ||[F(t), W_p(t)]||_F <= e^{-2 lambda0 t} ||[F(0), W_p(0)]||_F; above 1 contradicts it",
            description=f"max over 0 < t <= {cfg.t_align:g} of ||L(t)|| / (e^{{-2 lambda0 t}} ||L(0)||), full matrix "
            "model with symmetrised W_p flow, W_a = tau W",
        ),
        check(
            "a3_alignment_cos_min", float(cos[live].min()), 1 - 1e-6, op=">=", kind="theory",
            reason="Theorem 3's conclusion: W_p shares F's eigenvectors, cos(W_p u_j, u_j) = 1 up to sign on "
            "non-null modes as t -> infinity; 1e-6 (ours) is a numerical zero, 1e4 x the solver's rtol 1e-10. The "
            "theorem's bound e^{-2 lambda0 t} ||L(0)|| gives no useful bound on the angle at finite T: the "
            "surviving modes approach the same p_+, so F's eigen-gaps close and ||L|| bounds the angle only as "
            "||L|| / (gap p_j)",
            description="min over modes with s_j > 1e-3 s_max of u_j^T W_p u_j / ||W_p u_j|| at the end (positive "
            "p_j there)",
            measured=cos,
        ),
    ]


# ----------------------------------------------------------------------------------------------------------------
# A4 (per-mode integral, aligned reduction), A5 (fixed points, basins), A6 (eta = 0).


def _mode_scale_error(p, s, c0, t, alpha_p, eta) -> float:
    """max_j max_t |s - p^2/alpha_p - c_j e^{-2 eta t}| / max_t (|s| + p^2/alpha_p)."""
    resid = s - p**2 / alpha_p - c0[None, :] * np.exp(-2 * eta * t)[:, None]
    scale = np.max(np.abs(s) + p**2 / alpha_p, axis=0)
    return float(np.max(np.max(np.abs(resid), axis=0) / scale))


@float64
def a4_mode_checks(cfg: Any, data: dict, summary: dict) -> list[Check]:
    rng = _cfg_rng(cfg, 4)
    k = 8  # the per-mode solver is compiled for 8 modes (k is padded to a power of two >= 8)
    p0 = rng.uniform(-0.3, 1.0, k)
    alpha_p = 2.0 * cfg.alpha_p  # away from 1 so that a missing 1/alpha_p would show
    s0 = np.maximum(p0**2 / alpha_p + rng.uniform(-0.1, 0.3, k), 1e-3)
    t = _times(cfg.t_modes, cfg.n_save, log=True)
    errs, final_off = {}, 0.0
    for method in ("byol", "simsiam"):
        hyper = nc.Hyper(method, alpha_p=alpha_p, beta=cfg.beta, eta=cfg.eta, sigma2=cfg.sigma2)
        tr = _solve_modes(cfg, p0, s0, t, hyper)
        errs[method] = _mode_scale_error(tr.p, tr.s, s0 - p0**2 / alpha_p, t, alpha_p, cfg.eta)
        scale = np.max(np.abs(tr.s) + tr.p**2 / alpha_p, axis=0)
        final_off = max(final_off, float(np.max(np.abs(tr.s[-1] - tr.p[-1] ** 2 / alpha_p) / scale)))
        if method == "byol":
            data.update(a4_t=t, a4_p=tr.p, a4_s=tr.s, a4_alpha_p=alpha_p, a4_eta=cfg.eta)

    # The aligned matrix model is exactly n2 independent scalar BYOL systems with their own tau_j.
    n1, n2 = cfg.n1, cfg.n2
    x, x_aug = nc.isotropic(n1, cfg.sigma2)
    u, _ = np.linalg.qr(rng.normal(size=(n2, n2)))
    v, _ = np.linalg.qr(rng.normal(size=(n1, n2)))
    # p_j > 0 keeps w_j = sqrt(s_j) > 0 (so tau_j = w_a,j / w_j is defined); small p_j and s_j collapse.
    pa = np.linspace(0.8, 0.02, n2)
    sa = np.geomspace(0.5, 1e-3, n2)
    hyper = nc.Hyper("byol", alpha_p=cfg.alpha_p, beta=cfg.beta, eta=cfg.eta, sigma2=cfg.sigma2)
    y0 = nc.Weights(u @ np.diag(np.sqrt(sa)) @ v.T, u @ np.diag(pa) @ u.T, np.zeros((n2, n1)))
    tl = _times(cfg.t_long, cfg.n_save, log=True)
    mat = _solve(cfg, y0, x, x_aug, tl, hyper)
    modes = _solve_modes(cfg, pa, sa, tl, hyper)
    core_w = u.T @ mat.w @ v  # (T, n2, n2), diagonal if the run stays aligned
    s_meas = np.diagonal(u.T @ _gram(mat.w) @ u, axis1=1, axis2=2)
    p_meas = np.diagonal(u.T @ mat.wp @ u, axis1=1, axis2=2)
    wa_meas = np.diagonal(u.T @ mat.wa @ v, axis1=1, axis2=2)
    wa_pred = modes.tau * np.sqrt(modes.s)
    rel = lambda m, p: float(np.max(np.max(np.abs(m - p), axis=0) / np.max(np.abs(p), axis=0)))
    reduction_err = max(rel(s_meas, modes.s), rel(p_meas, modes.p), rel(wa_meas, wa_pred))
    off = core_w * (1.0 - np.eye(n2))
    leak = float(np.max(_fro(off) / _fro(core_w)))
    data.update(a4m_t=tl, a4m_s_matrix=s_meas, a4m_p_matrix=p_meas, a4m_s_modes=modes.s, a4m_p_modes=modes.p,
                a4m_tau_modes=modes.tau)
    summary["a4"] = {"integral_error": errs, "aligned_reduction_error": reduction_err, "off_diagonal": leak,
                     "final_off_parabola": final_off}
    return [
        check(
            "a4_mode_integral_error", max(errs.values()), 1e-8, kind="theory",
            reason="Eqn 14 is exact along Eqns 11-12 for any tau(t); 1e-8 of the mode's scale is a numerical zero "
            "(100 x the solver's rtol 1e-10)",
            description=f"max over {k} modes (random p0, s0 above and below the parabola, alpha_p = {alpha_p:g}, "
            f"eta = {cfg.eta:g}) and t of |s - p^2/alpha_p - c e^(-2 eta t)| / max_t(s + p^2/alpha_p), BYOL and "
            "SimSiam",
            measured=errs,
        ),
        check(
            "a4_aligned_reduction_error", max(reduction_err, leak), 1e-7, kind="theory",
            reason="from an aligned start (W = U diag(sqrt s) V^T, W_p = U diag(p) U^T, W_a = 0) the matrix model is "
            "exactly Eqns 11-13 per mode with its own tau_j (the appendix's tau_j); 1e-7 = 1000 x rtol: two "
            "independent adaptive solves over the long horizon t_long, each with error of order rtol per unit time",
            description="max relative deviation of (s_j, p_j, w_a,j) of the matrix BYOL run from the per-mode "
            "system, and of the off-diagonal part of U^T W V",
        ),
        check(
            "a5_final_on_parabola", final_off, 1e-8, kind="theory",
            reason="theory note A5: with eta > 0 the final point lies on s = p^2/alpha_p (c e^{-2 eta t} -> 0, "
            "below 1e-100 at T here); 1e-8 is a numerical zero (100 x the solver's rtol 1e-10)",
            description=f"max over the A4 modes of |s(T) - p(T)^2/alpha_p| / scale at T = {cfg.t_modes:g}",
        ),
    ]


@float64
def a5_fixed_point_checks(cfg: Any, data: dict, summary: dict) -> list[Check]:
    table_err, grow_err, collapse_max, above_max = 0.0, 0.0, 0.0, 0.0
    t = _times(cfg.t_modes, cfg.n_save, log=True)
    rows = []
    for tau, sigma2, eta, pm_ref, pp_ref in FIXED_POINT_TABLE:
        pm, pp = nc.fixed_points(tau, sigma2, eta)
        table_err = max(table_err, abs(pm - pm_ref), abs(pp - pp_ref))
        hyper = nc.Hyper("fixed_tau", tau=tau, sigma2=sigma2, eta=eta)
        # Basin edges p0 = 0.9 p_- and 1.1 p_- (note A5); at eta = 0, p_- = 0 is a saddle: start above it.
        p0 = np.array([0.9 * pm, 1.1 * pm]) if eta > 0 else np.array([0.01, 0.3]) * pp
        tr = _solve_modes(cfg, p0, p0**2, t, hyper)
        limits = np.array([nc.parabola_limit(p, tau, sigma2, eta) for p in p0])
        grow = limits > 0
        grow_err = max(grow_err, float(np.max(np.abs(tr.p[-1, grow] - limits[grow]))))
        if (~grow).any():
            collapse_max = max(collapse_max, float(np.max(np.abs(tr.p[-1, ~grow]))))
        rows.append([tau, sigma2, eta, pm, pp, *tr.p[-1]])
    pairs = sorted({(tau, sigma2) for tau, sigma2, *_ in FIXED_POINT_TABLE})
    for tau, sigma2 in pairs:
        eta = 1.05 * nc.collapse_threshold(tau, sigma2)
        p0 = np.linspace(0.05, 2.0, 8) * tau / (1 + sigma2)
        tr = _solve_modes(cfg, p0, p0**2, t, nc.Hyper("fixed_tau", tau=tau, sigma2=sigma2, eta=eta))
        above_max = max(above_max, float(np.max(np.abs(tr.p[-1]))))
    # The saddle-node bifurcation of Eqn 16 for the figure: p_-(eta) and p_+(eta) up to the threshold.
    curves = []
    for tau in (1.0, 0.5):
        etas = np.linspace(0.0, nc.collapse_threshold(tau, cfg.sigma2), 200)
        curves.append(np.array([[e, *nc.fixed_points(tau, cfg.sigma2, e)] for e in etas]))
    data.update(a5_rows=np.array(rows), a5_bifurcation=np.stack(curves), a5_bifurcation_tau=np.array([1.0, 0.5]))
    summary["a5"] = {"rows (tau, sigma2, eta, p_-, p_+, p(T) from 0.9 p_-, p(T) from 1.1 p_-)": rows}
    return [
        check(
            "a5_fixed_point_table_error", table_err, 0.5e-5 + 1e-12, kind="consistency",
            reason="holds by construction (it tests the code, not the paper): the note's A5 table is the same "
            "closed form (the roots of Eqn 16) rounded to 5 decimals, so fixed_points must agree with it to half a "
            "unit of the 5th decimal (5e-6) plus float64 round-off",
            description="max |fixed_points(tau, sigma2, eta) - table| over the note's 6 rows",
        ),
        check(
            "a5_basin_grow_error", grow_err, 1e-4, kind="theory",
            reason="theory note A5: starting at 1.1 p_- (and any p0 > 0 at eta = 0) p -> p_+ within 1e-4",
            description=f"max |p(T) - p_+| at T = {cfg.t_modes:g}, per-mode system on the parabola, fixed tau, "
            "every table row",
        ),
        check(
            "a5_basin_collapse_max", collapse_max, 1e-4, kind="theory",
            reason="theory note A5: starting at 0.9 p_- p -> 0 (the note's A5 tolerance 1e-4)",
            description=f"max |p(T)| from p0 = 0.9 p_- at T = {cfg.t_modes:g}, every table row with eta > 0",
        ),
        check(
            "a5_above_threshold_collapse_max", above_max, 1e-4, kind="theory",
            reason="Eqn 16 / Obs#5, theory note A5: for eta > tau^2/(4(1+sigma2)) every p0 collapses (the note's "
            "A5 tolerance 1e-4)",
            description="max |p(T)| over 8 starts in (0, 2 tau/(1+sigma2)] at eta = 1.05 x threshold, for each "
            "(tau, sigma2) of the table",
        ),
    ]


@float64
def a6_no_decay_checks(cfg: Any, data: dict, summary: dict) -> list[Check]:
    rng = _cfg_rng(cfg, 6)
    k = 8  # the per-mode solver is compiled for 8 modes (k is padded to a power of two >= 8)
    p0 = rng.uniform(-0.5, 1.0, k)
    c0 = rng.uniform(1e-3, 0.5, k)  # above the parabola
    alpha_p = cfg.alpha_p
    s0 = p0**2 / alpha_p + c0
    hyper = nc.Hyper("byol", alpha_p=alpha_p, beta=cfg.beta, eta=0.0, sigma2=cfg.sigma2)
    t = _times(cfg.t_modes, cfg.n_save, log=True)
    tr = _solve_modes(cfg, p0, s0, t, hyper)
    min_ratio = float(np.min(tr.s.min(axis=0) / c0))
    p_star = 1.0 / (1.0 + cfg.sigma2)
    p_err = float(max(np.max(np.abs(tr.p[-1] - p_star)), np.max(np.abs(tr.tau[-1] - 1.0))))
    # Control (not gated): starting below the parabola is allowed to collapse; the condition is only sufficient.
    pb = rng.uniform(0.1, 1.0, k)
    below = _solve_modes(cfg, pb, pb**2 / alpha_p * rng.uniform(0.05, 0.95, k), t, hyper)
    summary["a6"] = {"modes": k, "below_parabola_collapsed": int(np.sum(below.s[-1] < 1e-6))}
    return [
        check(
            "a6_min_s_over_c", min_ratio, 1 - 1e-8, op=">=", kind="theory",
            reason="Eqn 14 at eta = 0: s = p^2/alpha_p + c >= c, so a mode starting above the parabola (c > 0) never "
            "reaches s = 0; the threshold allows solver error",
            description=f"min over {k} modes and t of s_j(t) / c_j, BYOL per-mode system, eta = 0",
        ),
        check(
            "a6_limit_error", p_err, 1e-4, kind="theory",
            reason="theory note A6: on the non-collapsed branch p -> tau/(1+sigma2), and tau -> 1 under the EMA "
            "(tolerance as A5)",
            description=f"max over modes of |p(T) - 1/(1+sigma2)| and |tau(T) - 1| at T = {cfg.t_modes:g}",
            predicted=p_star,
        ),
    ]


# ----------------------------------------------------------------------------------------------------------------
# A7 (full matrix model), A8 (Assumption 1), A9 (asymmetric part).


@float64
def a7_matrix_checks(cfg: Any, data: dict, summary: dict) -> list[Check]:
    n1, n2 = cfg.n1, cfg.n2
    x, x_aug = nc.isotropic(n1, cfg.sigma2)
    hyper = nc.Hyper("byol", alpha_p=cfg.alpha_p, beta=cfg.beta, eta=cfg.eta, sigma2=cfg.sigma2)
    p_minus, p_plus = nc.fixed_points(1.0, cfg.sigma2, cfg.eta)  # tau -> 1 at the end
    t = _times(cfg.t_long, cfg.n_save, log=True)
    comm, asym, tau_err, mode_err, para_err, survivors = [], [], [], [], [], []
    for seed in range(cfg.seeds):
        y0 = _random_weights(_cfg_rng(cfg, 7, seed), n2, n1, cfg.init_scale)
        tr = _solve(cfg, y0, x, x_aug, t, hyper)
        f = _gram(tr.w)
        s, p = (np.asarray(a) for a in jax.vmap(nc.aligned_spectrum)(f, tr.wp))
        lnorm = _fro(np.asarray(jax.vmap(nc.commutator)(f, tr.wp)))
        asym_t = np.asarray(nc.asymmetry(tr.wp))
        comm.append(float(lnorm[-1] / (_fro(f[-1]) * _fro(tr.wp[-1]))))
        asym.append(float(asym_t[-1]))
        tau_err.append(abs(float(np.sum(tr.wa[-1] * tr.w[-1]) / np.sum(tr.w[-1] ** 2)) - 1.0))
        alive = p[-1] > 0.5 * p_plus
        mode_err.append(float(np.max(np.where(alive, np.abs(p[-1] - p_plus), np.abs(p[-1])))))
        para_err.append(float(np.max(np.abs(s[-1] - p[-1] ** 2 / cfg.alpha_p))))
        survivors.append(int(alive.sum()))
        if seed == 0:
            data.update(a7_t=t, a7_s=s, a7_p=p, a7_commutator=lnorm / (_fro(f) * _fro(tr.wp)), a7_asymmetry=asym_t,
                        a7_p_plus=p_plus, a7_p_minus=p_minus)
    summary["a7"] = {"survivors_per_seed": survivors, "p_plus": p_plus, "s_plus": p_plus**2 / cfg.alpha_p}
    return [
        check(
            "a7_commutator_rel", max(comm), 1e-8, kind="theory",
            reason="theory note A7: the commutator vanishes (the note's Euler reference: 2e-14); 1e-8 relative is a "
            "numerical zero for the adaptive solver (100 x its rtol 1e-10)",
            description=f"max over {cfg.seeds} seeds of ||[F, W_p]||_F / (||F||_F ||W_p||_F) at T = {cfg.t_long:g}",
        ),
        check(
            "a7_asymmetry", max(asym), 1e-8, kind="theory",
            reason="theory note A7 / A9: W_p becomes symmetric (the note's Euler reference: 5e-14); 1e-8 is a "
            "numerical zero (100 x the solver's rtol 1e-10)",
            description="||W_p - W_p^T||_F / ||W_p||_F at the end, max over seeds",
        ),
        check(
            "a7_tau_error", max(tau_err), 1e-8, kind="theory",
            reason="theory note A7: tau -> 1 (W_a -> W, Eqn 4's fixed point); 1e-8 is a numerical zero (100 x the "
            "solver's rtol 1e-10)",
            description="|<W_a, W> / ||W||^2 - 1| at the end, max over seeds",
        ),
        check(
            "a7_mode_limit_error", max(mode_err), 1e-4, kind="theory",
            reason=f"theory note A7 / Eqn 16: every mode ends at p_+ = {p_plus:.4f} (tau = 1) or collapses to 0; "
            "1e-4 as A5",
            description="max over seeds and eigenmodes of F of |p_j - p_+| (surviving) or |p_j| (collapsed), "
            "p_j = u_j^T W_p u_j",
            predicted=p_plus,
        ),
        check(
            "a7_parabola_error", max(para_err), 1e-4, kind="theory",
            reason=f"theory note A7: surviving modes have s = p_+^2 = {p_plus**2:.4f}, collapsed ones 0: all on "
            "s = p^2/alpha_p",
            description="max over seeds and modes of |s_j - p_j^2/alpha_p| at the end",
        ),
        check(
            "a7_survivors_min", min(survivors), 1, op=">=", kind="theory",
            reason="the paper's central claim (Sections 3-4, Fig. 5): with a predictor, an EMA target and eta below "
            "tau^2/(4(1+sigma2)) linear BYOL does not collapse completely, so at least one mode reaches p_+ (how "
            "many depends on the initialisation and is not predicted); also keeps the two limit checks above from "
            "passing on an all-collapsed run",
            description="fewest modes ending at p_+ over seeds",
            measured=survivors,
        ),
    ]


@float64
def a8_ema_checks(cfg: Any, data: dict, summary: dict) -> list[Check]:
    n1, n2 = cfg.n1, cfg.n2
    x, x_aug = nc.isotropic(n1, cfg.ema.sigma**2)
    t = _times(cfg.ema.time, cfg.n_save)
    curves, labels, worst = [], [], {}
    for beta in cfg.ema.betas:
        for eta in cfg.ema.etas:
            hyper = nc.Hyper("byol", beta=beta, eta=eta, alpha_p=cfg.alpha_p)
            cos_runs = []
            for seed in range(cfg.ema.seeds):
                y0 = _random_weights(_cfg_rng(cfg, 8, seed), n2, n1, 1.0)
                tr = _solve(cfg, y0, x, x_aug, t, hyper)
                num = np.sum(tr.w[1:] * tr.wa[1:], axis=(1, 2))
                cos_runs.append(num / (_fro(tr.w[1:]) * _fro(tr.wa[1:])))  # t = 0 excluded: W_a(0) = 0
            lowest = np.min(cos_runs, axis=0)
            curves.append(lowest)
            labels.append(f"beta={beta:g}, eta={eta:g}")
            worst[labels[-1]] = float(lowest.min())
    data.update(a8_t=t[1:], a8_cos_min=np.stack(curves), a8_labels=np.array(labels))
    return [check(
        "a8_cos_wa_w_min", min(worst.values()), 0.9, op=">=", kind="theory",
        reason="theory note A8 / Fig. 7: the correlation of W_a and W stays high, about 0.9 even at gamma_a = 0.996 "
        "(beta = 0.4) with large eta; the paper's approximate value, used as the threshold",
        description=f"min over t in (0, {cfg.ema.time:g}], {cfg.ema.seeds} seeds, beta in {list(cfg.ema.betas)}, "
        f"eta in {list(cfg.ema.etas)} of <W_a, W>/(||W_a|| ||W||), sigma = {cfg.ema.sigma:g}, W_a(0) = 0",
        measured=worst,
    )]


@float64
def a9_asymmetry_checks(cfg: Any, data: dict, summary: dict) -> list[Check]:
    n1, n2 = cfg.n1, cfg.n2
    x, x_aug = nc.isotropic(n1, cfg.sigma2)
    rng = _cfg_rng(cfg, 9)
    wp0 = rng.normal(size=(n2, n2)) / np.sqrt(n2)
    # C = 0 (Fig. 8): W W^T = W_p^T W_p / alpha_p, i.e. W = (W_p^T W_p / alpha_p)^{1/2} [I 0].
    ev, q = np.linalg.eigh(wp0.T @ wp0 / cfg.alpha_p)
    w0 = np.hstack([q @ np.diag(np.sqrt(np.maximum(ev, 0))) @ q.T, np.zeros((n2, n1 - n2))])
    t = _times(cfg.t_long, cfg.n_save, log=True)
    b_end, a_end, curves = {}, {}, []
    for eta in cfg.asym.etas:
        hyper = nc.Hyper("fixed_tau", tau=cfg.asym.tau, alpha_p=cfg.alpha_p, eta=eta, sigma2=cfg.sigma2)
        tr = _solve(cfg, nc.Weights(w0, wp0, np.zeros_like(w0)), x, x_aug, t, hyper)
        b = _fro(tr.wp - np.swapaxes(tr.wp, 1, 2)) / 2
        curves.append(b / b[0])
        b_end[f"eta={eta:g}"] = float(b[-1] / b[0])
        a_end[f"eta={eta:g}"] = float(_fro(tr.wp[-1] + tr.wp[-1].T) / 2)
    data.update(a9_t=t, a9_b_rel=np.stack(curves), a9_etas=np.array(cfg.asym.etas))
    summary["a9"] = {"B_end_over_start": b_end, "A_end": a_end}
    return [check(
        "a9_asymmetric_part_rel", max(b_end.values()), 1e-8, kind="theory",
        reason="theory note A9 / Fig. 8: ||B||_F = ||(W_p - W_p^T)/2||_F always vanishes at constant tau; 1e-8 of "
        "its start is a numerical zero (100 x the solver's rtol 1e-10)",
        description=f"max over eta in {list(cfg.asym.etas)} of ||B(T)||_F / ||B(0)||_F at T = {cfg.t_long:g}, "
        f"tau = {cfg.asym.tau:g}, C = 0",
        measured=b_end,
    )]


# ----------------------------------------------------------------------------------------------------------------
# Fig. 9: the commutator when K is not positive definite.

COMMUTATOR_FLOOR = 1e-7  # ||L|| below 1e-7 ||F|| ||W_p|| (1000 x the solver's rtol) is a numerical zero


def _cumtrapz(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(t))])


def _fig9_random_start(cfg, y0, x, x_aug, hyper, t) -> dict:
    """One run of Eqn 7's setting: ||L||, lambda_min K, and the Gronwall form of Theorem 3's bound."""
    tr = _solve(cfg, y0, x, x_aug, t, hyper)
    f = _gram(tr.w)
    lnorm = _fro(np.asarray(jax.vmap(nc.commutator)(f, tr.wp)))
    k = np.asarray(jax.vmap(lambda f, wp: nc.alignment_operator(f, wp, hyper.tau, hyper))(f, tr.wp))
    lam = np.linalg.eigvalsh(k)[:, 0]
    integral = _cumtrapz(lam, t)
    # Trapezoid error estimate (Richardson): the same integral on every second point; |I_h - I_2h| ~ 3 x I_h's error.
    quad = float(np.max(np.abs(integral[::2] - _cumtrapz(lam[::2], t[::2]))))
    live = lnorm >= COMMUTATOR_FLOOR * _fro(f) * _fro(tr.wp)
    live[0] = False
    excess = np.log(lnorm / lnorm[0]) + 2.0 * integral
    return dict(t=t, commutator=lnorm / lnorm[0], lambda_min=lam, gronwall=np.exp(-2.0 * integral), live=live,
                excess=float(np.max(excess[live])) if live.any() else -np.inf, quad=quad,
                survivors=int(np.sum(np.linalg.eigvalsh(f[-1]) > ALIGN_FLOOR * max(np.linalg.eigvalsh(f[-1])[-1],
                                                                                     1e-300))))


def _fig9_fixed_point(cfg, s_surv, x, x_aug, hyper, t, rng) -> dict:
    """An aligned fixed point of the eta = 0 flow (surviving modes at p* = tau/(1+sigma2) with s_j > 0, collapsed
    modes s_j = 0 with p_j in (0, p*)), W_p perturbed by a random symmetric matrix of norm fig9.perturbation; the
    commutator against its linearisation L_ij(t) = L_ij(0) e^{-(k_i + k_j) t} in F's eigenbasis (Eqn 8 with K held
    at the fixed point's diagonal K)."""
    n1, n2 = cfg.n1, cfg.n2
    tau, s2, ap = hyper.tau, hyper.sigma2, hyper.alpha_p
    p_star = tau / (1.0 + s2)
    m = len(s_surv)
    p = np.concatenate([np.full(m, p_star), p_star * np.linspace(0.3, 0.7, n2 - m)])
    s = np.concatenate([s_surv, np.zeros(n2 - m)])
    u, _ = np.linalg.qr(rng.normal(size=(n2, n2)))
    v, _ = np.linalg.qr(rng.normal(size=(n1, n2)))
    sym = rng.normal(size=(n2, n2))
    sym = (sym + sym.T) / 2
    sym *= cfg.fig9.perturbation / np.linalg.norm(sym)
    y0 = nc.Weights(u @ np.diag(np.sqrt(s)) @ v.T, u @ np.diag(p) @ u.T + sym, np.zeros((n2, n1)))
    k = (1.0 + s2) * (ap * s / 2 + p**2) - tau * p + (hyper.eta + hyper.eta_pred / 2)  # K's diagonal, Eqn 9
    tr = _solve(cfg, y0, x, x_aug, t, hyper)
    lmat = np.asarray(jax.vmap(nc.commutator)(_gram(tr.w), tr.wp))
    lnorm = _fro(lmat)
    l0 = u.T @ lmat[0] @ u
    rates = k[:, None] + k[None, :]
    relevant = np.abs(l0) > 1e-8 * np.abs(l0).max()  # collapsed-collapsed entries are round-off: F is 0 there
    lin = np.sqrt(np.sum(np.where(relevant, l0**2, 0.0)[None] * np.exp(-2.0 * rates[None] * t[:, None, None]),
                         axis=(1, 2)))
    # The largest linear growth rate of any part of the perturbation: the commutator's -(k_i + k_j), or a collapsed
    # row of W (dw/dt = p (tau - (1+sigma2) p) w at s = 0, at most tau^2 / (4 (1+sigma2))).
    r_max = max(float(np.max(-rates[relevant])), tau**2 / (4.0 * (1.0 + s2)), 0.0)
    return dict(commutator=lnorm / lnorm[0], linear=lin / lin[0], k=k,
                rel_error=float(np.max(np.abs(lnorm / lnorm[0] / (lin / lin[0]) - 1.0))),
                growth=float(lnorm[-1] / lnorm[0]), growth_pred=float(lin[-1] / lin[0]),
                perturbation_bound=cfg.fig9.perturbation * float(np.exp(r_max * t[-1])))


@float64
def fig9_commutator_checks(cfg: Any, data: dict, summary: dict) -> list[Check]:
    n1, n2, tau, s2 = cfg.n1, cfg.n2, cfg.fig9.tau, cfg.sigma2
    x, x_aug = nc.isotropic(n1, s2)

    def hyper(eta):
        return nc.Hyper("fixed_tau", tau=tau, sigma2=s2, eta=eta, alpha_p=cfg.alpha_p, symmetric_predictor=True)

    rng = _cfg_rng(cfg, 10)
    y1 = _random_weights(rng, n2, n1, 1.0, symmetric=True)
    t = _times(cfg.fig9.time, cfg.n_save)
    runs = {
        "stable": _fig9_random_start(cfg, nc.Weights(*(cfg.fig9.stable_scale * a for a in y1)), x, x_aug,
                                     hyper(cfg.fig9.stable_eta), t),
        "unstable": _fig9_random_start(cfg, nc.Weights(*(cfg.fig9.unstable_scale * a for a in y1)), x, x_aug,
                                       hyper(0.0), t),
    }
    st, un = runs["stable"], runs["unstable"]
    lam0 = float(st["lambda_min"].min())
    bound_ratio = float(np.max((st["commutator"] / np.exp(-2 * lam0 * t))[st["live"]]))
    # Aligned fixed points at eta = 0: surviving modes with s_j below (unstable) or above (stable) the s at which
    # the most negative collapsed-mode k, -tau^2/(4(1+sigma2)), is outweighed: (1+sigma2) alpha_p s/2 equal to it.
    s_crit = tau**2 / (2.0 * cfg.alpha_p * (1.0 + s2) ** 2)
    m = max(n2 // 2, 1)
    tl = _times(cfg.fig9.linear_time, cfg.n_save)
    fixed = {
        "unstable": _fig9_fixed_point(cfg, s_crit * np.linspace(0.1, 0.5, m), x, x_aug, hyper(0.0), tl,
                                      _cfg_rng(cfg, 10, 1)),
        "stable": _fig9_fixed_point(cfg, s_crit * np.linspace(2.0, 4.0, m), x, x_aug, hyper(0.0), tl,
                                    _cfg_rng(cfg, 10, 1)),
    }
    fu, fs = fixed["unstable"], fixed["stable"]
    quad_tol = 2.0 * max(st["quad"], un["quad"])
    data.update(f9_t=t, f9_tau=tau, f9_stable_eta=cfg.fig9.stable_eta,
                f9_commutator=np.stack([st["commutator"], un["commutator"]]),
                f9_gronwall=np.stack([st["gronwall"], un["gronwall"]]),
                f9_lambda_min=np.stack([st["lambda_min"], un["lambda_min"]]),
                f9_live=np.stack([st["live"], un["live"]]), f9_stable_bound=np.exp(-2 * lam0 * t),
                f9_fixed_t=tl, f9_fixed_commutator=np.stack([fu["commutator"], fs["commutator"]]),
                f9_fixed_linear=np.stack([fu["linear"], fs["linear"]]))
    summary["fig9"] = {
        "tau": tau, "stable_eta": cfg.fig9.stable_eta, "lambda0_stable": lam0,
        "lambda_min_unstable": float(un["lambda_min"].min()),
        "unstable_time_fraction_negative_K": float(np.mean(un["lambda_min"] < 0)),
        "commutator_max_over_start": {k: float(r["commutator"].max()) for k, r in runs.items()},
        "commutator_end_over_start": {k: float(r["commutator"][-1]) for k, r in runs.items()},
        "survivors": {k: r["survivors"] for k, r in runs.items()},
        "gronwall_excess": {k: r["excess"] for k, r in runs.items()},
        "fixed_point_k": {k: r["k"].tolist() for k, r in fixed.items()},
        "fixed_point_growth": {k: [r["growth"], r["growth_pred"]] for k, r in fixed.items()},
        "fixed_point_rel_error": {k: r["rel_error"] for k, r in fixed.items()},
    }
    return [
        check(
            "fig9_stable_bound_ratio", bound_ratio, 1.0, kind="theory",
            reason="Theorem 3 in Fig. 9's stable setting: 1.5 eta > tau^2/(4(1+sigma2)) makes inf_t lambda_min K > 0, "
            "so ||[F(t), W_p(t)]||_F <= e^{-2 lambda0 t} ||[F(0), W_p(0)]||_F; above 1 contradicts it (times where "
            "||L|| is below its numerical zero, 1e-7 ||F|| ||W_p||, excluded)",
            description=f"max over 0 < t <= {cfg.fig9.time:g} of ||L(t)|| / (e^{{-2 lambda0 t}} ||L(0)||), tau = "
            f"{tau:g}, eta = {cfg.fig9.stable_eta:g}, symmetrised W_p flow, random start",
            predicted="<= 1", measured={"lambda0": lam0},
        ),
        check(
            "fig9_gronwall_log_excess", max(st["excess"], un["excess"]), quad_tol, kind="theory",
            reason="Theorem 3's proof (d||L||^2/dt = -4 tr(L^T L K) from Eqn 8) gives ||L(t)|| <= ||L(0)|| "
            "exp(-2 int_0^t lambda_min K) in any setting: the commutator can grow only while K has a negative "
            "eigenvalue, and no faster than -2 lambda_min K; the threshold is the trapezoid rule's error on the "
            "saved grid (2 |I_h - I_2h|, about 6x its Richardson estimate)",
            description="max over both random-start runs (stable and eta = 0) and live times of ln(||L(t)||/||L(0)||) "
            "+ 2 int_0^t lambda_min K(t') dt'",
            predicted="<= 0", measured={k: r["excess"] for k, r in runs.items()},
        ),
        check(
            "fig9_fixed_point_growth", fu["growth"], 1.0, op=">", kind="theory",
            reason="the remark to Theorem 3 (Fig. 9): where K has negative eigenvalues alignment is unstable; at an "
            "aligned fixed point of the eta = 0 flow whose surviving modes (p = tau/(1+sigma2), small s) and "
            "collapsed modes (s = 0, 0 < p < tau/(1+sigma2)) have k_i + k_j < 0, Eqn 8 linearised makes any "
            "misalignment in that block grow as e^{-(k_i+k_j) t}",
            description=f"||L(T)|| / ||L(0)|| at T = {cfg.fig9.linear_time:g} from the unstable fixed point, W_p "
            f"perturbed by {cfg.fig9.perturbation:g}",
            predicted=fu["growth_pred"], measured=fu["growth"],
        ),
        check(
            "fig9_fixed_point_linear_rel_error", fu["rel_error"], 10.0 * fu["perturbation_bound"], kind="theory",
            reason="Eqn 8 linearised at the fixed point: L_ij(t) = L_ij(0) e^{-(k_i+k_j) t} in F's eigenbasis; what "
            "it drops is second order in the perturbation, whose size stays below eps e^{r_max T} (eps = "
            "fig9.perturbation, r_max the fastest linear growth rate there: the commutator's -(k_i+k_j) or a "
            "collapsed row of W's tau^2/(4(1+sigma2))); 10x that bound allows O(1) coefficients",
            description="max over t <= T of | ||L(t)||/||L(0)|| / (linearised prediction) - 1 |, unstable fixed point",
            predicted=fu["growth_pred"], measured=fu["growth"],
        ),
        check(
            "fig9_stable_fixed_point_growth", fs["growth"], 1.0, op="<", kind="theory",
            reason="the same fixed point with larger surviving s_j, so that every k_i + k_j of a non-zero block is "
            "positive (K still has the collapsed modes' negative eigenvalues): Eqn 8 linearised makes the "
            "misalignment decay; the contrast to fig9_fixed_point_growth",
            description=f"||L(T)|| / ||L(0)|| at T = {cfg.fig9.linear_time:g} from the stable fixed point",
            predicted=fs["growth_pred"], measured={"growth": fs["growth"], "rel_error_vs_linear": fs["rel_error"]},
        ),
        check(
            "fig9_unstable_growth_max", float(un["commutator"].max()), 1.0, op=">", kind="reported",
            reason="the paper says the commutator 'can blow up' when eta is small and tau large (Fig. 9); that is not "
            "a strict prediction: from a random start the exact flow re-aligns once the surviving modes' s grows "
            "and K turns positive, so a transient growth (or none) is shown, reference > 1",
            description=f"max over t <= {cfg.fig9.time:g} of ||L(t)|| / ||L(0)||, eta = 0, tau = {tau:g}, start "
            f"scale {cfg.fig9.unstable_scale:g} (p_j small, K < 0 at first)",
            measured={"end_over_start": float(un["commutator"][-1]),
                      "lambda_min_K_min": float(un["lambda_min"].min()),
                      "time_fraction_negative_K": float(np.mean(un["lambda_min"] < 0))},
        ),
    ]


# ----------------------------------------------------------------------------------------------------------------
# Phase portrait data (Fig. 3 / Fig. 4 of the paper).


@float64
def phase_portrait_data(cfg: Any, data: dict) -> None:
    tau, alpha_p = 1.0, 1.0
    pp_grid = np.linspace(-0.25, 1.0, 41)
    ss_grid = np.linspace(0.0, 0.9, 37)
    pg, sg = np.meshgrid(pp_grid, ss_grid)
    t = _times(cfg.t_modes, cfg.n_save, log=True)
    fields, trajs, fixed, velocity = [], [], [], []
    p_line = np.linspace(-0.1, 0.8, 400)
    for eta in cfg.portrait_etas:
        hyper = nc.Hyper("fixed_tau", tau=tau, alpha_p=alpha_p, eta=eta, sigma2=cfg.sigma2)
        modes = nc.Modes(jax.numpy.asarray(pg), jax.numpy.asarray(sg), jax.numpy.full_like(pg, tau))
        d = nc.mode_field(modes, hyper)
        fields.append(np.stack([np.asarray(d.p), np.asarray(d.s)]))
        velocity.append(np.asarray(nc.parabola_velocity(p_line, tau=tau, sigma2=cfg.sigma2, eta=eta)))
        try:
            pm, pp = nc.fixed_points(tau, cfg.sigma2, eta)
        except ValueError:  # above the collapse threshold: 0 is the only fixed point
            pm = pp = np.nan
        fixed.append([pm, pp])
        base = pm if np.isfinite(pm) and pm > 0 else 0.05
        p0 = np.array([0.9 * base, 1.1 * base, 0.9, 0.9, 0.5, -0.2, 0.2, 0.05])
        s0 = np.array([(0.9 * base) ** 2, (1.1 * base) ** 2, 0.8, 0.3, 0.05, 0.5, 0.8, 0.5]) / alpha_p
        tr = _solve_modes(cfg, p0, s0, t, hyper)
        trajs.append(np.stack([tr.p, tr.s]))
    data.update(pp_p=pp_grid, pp_s=ss_grid, pp_field=np.stack(fields), pp_traj=np.stack(trajs),
                pp_fixed=np.array(fixed), pp_etas=np.array(cfg.portrait_etas), pp_t=t, pp_line=p_line,
                pp_velocity=np.stack(velocity), pp_tau=tau, pp_alpha_p=alpha_p, sigma2=cfg.sigma2,
                pp_threshold=nc.collapse_threshold(tau, cfg.sigma2))



# A1-A9 and Fig. 9 in the order of the experiment's results.json.
LINEAR_CHECKS = (a1_invariant_checks, a2_decay_checks, a3_alignment_checks, a4_mode_checks, a5_fixed_point_checks,
                 a6_no_decay_checks, a7_matrix_checks, a8_ema_checks, a9_asymmetry_checks, fig9_commutator_checks)
