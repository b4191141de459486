"""Figure of the DirectPred experiment (Tian, Chen & Ganguli 2021, Section 6), drawn from ``directpred.npz``.

``directpred.png``: linear-probe accuracy over training for DirectPred, the trained linear and the two-layer
predictor and the least-squares "optimal" W_p of Table 1 (mean and standard deviation over seeds), the final
accuracies per seed, DirectPred's eps sweep (Table 6), and the end-of-training spectrum of F per method (which modes
survive).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepwise.compare.tian2021 import ALIGN_FLOOR, mean_spread
from stepwise.io import load_npz
from stepwise.plots._mpl import pyplot, save_atomic

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
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
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
    axes[1].set(xticks=range(len(methods)), xticklabels=[_LABELS[m] for m in methods], ylabel="final accuracy",
                title="final probe accuracy per seed")
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
    fig.suptitle("DirectPred vs trained predictors (BYOL, Tian et al. 2021 Section 6)")
    fig.tight_layout()
    out = save_atomic(fig, run_dir / FIGURE)
    plt.close(fig)
    return out
