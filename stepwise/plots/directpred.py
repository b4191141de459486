"""Figure of the DirectPred experiment (Tian, Chen & Ganguli 2021, Section 6), drawn from ``directpred.npz``.

``directpred.png``, two rows. Top: linear-probe accuracy over training for DirectPred, the trained linear and the
two-layer predictor and the least-squares "optimal" W_p of Table 1 (mean and standard deviation over seeds), the
final accuracies per seed, and DirectPred's eps sweep (Table 6). Bottom: the end-of-training spectrum of F per
method (which modes survive), and note B7 (Table 7): per seed, the probe accuracy over training and F's spectrum at
the end of the default DirectPred against the runs with a positive constant c, with the checks' verdicts
(recomputed from the saved arrays by :func:`stepwise.compare.tian2021.b7_checks`, as the runner does).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from stepwise.compare.tian2021 import ALIGN_FLOOR, b7_checks, mean_spread, non_null_modes
from stepwise.io import load_npz
from stepwise.plots._mpl import finish, pyplot
from stepwise.plots.noncontrastive_deep import check_title, not_run

DATA = "directpred.npz"
FIGURE = "directpred.png"
_LABELS = {"directpred": "DirectPred", "linear": "linear W_p (SGD)", "mlp": "two-layer predictor (SGD)",
           "lstsq": "least-squares W_p (Table 1)"}


def plot_directpred(run_dir: str | Path) -> Path:
    """Draw the figure from ``run_dir/directpred.npz``; returns its path."""
    run_dir = Path(run_dir)
    d = load_npz(run_dir / DATA)
    plt = pyplot()
    t = d["step"] * float(d["lr"])
    methods = [str(m) for m in d["methods"]]
    fig, grid = plt.subplots(2, 3, figsize=(19, 10.5))
    axes = grid.ravel()
    for k, m in enumerate(methods):
        acc = d[f"probe_{m}"]
        mean, std = mean_spread(acc)
        color = f"C{k}"
        axes[0].plot(t, mean, color=color, lw=1.6, label=f"{_LABELS[m]} ({acc.shape[0]} seeds)")
        axes[0].fill_between(t, mean - std, mean + std, color=color, alpha=0.2)
        final = acc[:, -1]
        axes[1].errorbar([k], [final.mean()], yerr=[mean_spread(final)[1]], fmt="s", color=color, capsize=5, ms=8)
        axes[1].plot(np.full(final.shape, k) + np.linspace(-0.12, 0.12, final.size), final, "o", color=color,
                     alpha=0.6)
        s = d[f"spectrum_{m}"]
        rel = np.maximum(s / s[:, :1], 1e-12)
        axes[3].plot(np.arange(1, rel.shape[1] + 1), np.exp(np.log(rel).mean(axis=0)), "o-", color=color,
                     label=_LABELS[m])
    initial = d["probe_linear"][:, 0]
    axes[1].axhline(initial.mean(), color="grey", ls=":", label="untrained network")
    axes[0].set(xlabel="t = lr x step", ylabel="linear-probe accuracy", title="probe accuracy (mean ± std)")
    axes[0].legend(fontsize=8)
    axes[1].set(xticks=range(len(methods)), xticklabels=[textwrap.fill(_LABELS[m], 14) for m in methods],
                ylabel="final accuracy", title="final probe accuracy per seed")
    axes[1].tick_params(axis="x", labelsize=8)
    axes[1].legend(fontsize=8)
    eps, sweep = d["sweep_eps"], d["sweep_final"]
    x = np.arange(eps.size)
    for i in range(sweep.shape[1]):
        axes[2].plot(x, sweep[:, i], "o", color="C0", alpha=0.5)
    axes[2].errorbar(x, sweep.mean(axis=1), yerr=mean_spread(sweep.T)[1], fmt="s-", color="C0", capsize=5,
                     label=f"DirectPred, rho = {float(d['rho']):g}")
    axes[2].set(xticks=x, xticklabels=[f"{e:g}" for e in eps], xlabel="eps", ylabel="final accuracy",
                title="eps sweep (paper Table 6: 0.1 best)")
    axes[2].legend(fontsize=8)
    axes[3].axhline(ALIGN_FLOOR, color="tab:red", ls="--", lw=1, label=f"{ALIGN_FLOOR:g} s_max")
    axes[3].set(yscale="log", xlabel="mode j", ylabel="s_j / s_max (geometric mean over seeds)",
                title="spectrum of F at the end")
    axes[3].legend(fontsize=8)
    if "probe_b7" in d:
        _b7_panels(d, t, axes[4], axes[5])
    else:
        for ax in axes[4:]:
            not_run(ax, "note B7 (Table 7, positive c)", "b7.seeds = 0")
    fig.suptitle("DirectPred vs trained predictors (BYOL, Tian et al. 2021 Section 6)")
    return finish(fig, run_dir / FIGURE)


def figure_b7_checks(d: dict) -> tuple[dict[str, list[int]], list]:
    """The B7 panels' per-seed non-null mode counts (``default``, ``positive_c``) and the checks whose verdicts
    their titles show, recomputed from ``directpred.npz``'s arrays as the runner computes them."""
    n = d["probe_b7"].shape[0]
    modes = {"default": [non_null_modes(s) for s in d["spectrum_directpred"][:n]],
             "positive_c": [non_null_modes(s) for s in d["spectrum_b7"]]}
    final = {"default": d["probe_directpred"][:n, -1], "positive_c": d["probe_b7"][:, -1]}
    return modes, b7_checks(final, modes, c=float(d["b7_c"]), eps=float(d["eps"]))


def _b7_panels(d: dict, t: np.ndarray, ax_probe, ax_spec) -> None:
    """Note B7, per seed: probe accuracy over training and F's spectrum at the end, default DirectPred (solid)
    against positive c (dashed); the titles carry the checks' verdicts."""
    c, eps = float(d["b7_c"]), float(d["eps"])
    pos_probe, pos_spec = d["probe_b7"], d["spectrum_b7"]
    n = pos_probe.shape[0]
    dflt_probe, dflt_spec = d["probe_directpred"][:n], d["spectrum_directpred"][:n]
    modes, (worse, spread, fewer) = figure_b7_checks(d)
    names = {"default": f"default (eps {eps:g})", "positive_c": f"c = {c:g} (eps 0)"}
    markers = "osD^v<>p"
    for k in range(n):
        for key, probe, color, ls in (("default", dflt_probe, "C0", "-"), ("positive_c", pos_probe, "C3", "--")):
            ax_probe.plot(t, probe[k], ls=ls, marker=markers[k % len(markers)], color=color, lw=1.4, ms=5,
                          alpha=0.85, label=f"seed {k}, {names[key]}: final {probe[k, -1]:.3f}")
    ax_probe.set(xlabel="t = lr x step", ylabel="linear-probe accuracy",
                 title=f"B7: probe accuracy per seed, DirectPred default vs c = {c:g}\n"
                 f"{check_title(worse)}\n{check_title(spread)}")
    ax_probe.legend(fontsize=7, ncol=2 if n > 3 else 1)
    j = np.arange(1, pos_spec.shape[1] + 1)
    for k in range(n):
        for key, spec, color, ls in (("default", dflt_spec, "C0", "-"), ("positive_c", pos_spec, "C3", "--")):
            ax_spec.plot(j, np.maximum(spec[k] / spec[k, 0], 1e-12), ls=ls, marker=markers[k % len(markers)],
                         color=color, lw=1.2, ms=5, alpha=0.85,
                         label=f"seed {k}, {names[key]}: {modes[key][k]} non-null")
    ax_spec.axhline(ALIGN_FLOOR, color="tab:red", ls="--", lw=1, label=f"non-null floor {ALIGN_FLOOR:g} s_max")
    ax_spec.axhline(c, color="grey", ls=":", lw=1, label=f"c = {c:g}: p_j ~ 0 where s_j < c s_max (of F_hat)")
    ax_spec.set(yscale="log", xlabel="mode j", ylabel="s_j / s_max at the end",
                title=f"B7: spectrum of F at the end per seed, default vs c = {c:g}\n{check_title(fewer)}")
    ax_spec.legend(fontsize=7, ncol=2 if n > 3 else 1)
