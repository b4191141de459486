"""Figure for the width-sweep experiment, drawn from a run directory's ``width_sweep.npz``.

Panel A: held-out Gram relative error and projector distance to the infinite-width (stax) NTK prediction against
the hidden width (log-log): the mean over the network seeds (lines) and each seed (dots), with the infinite-width
point (the kernel machine on the stax NTK trained by GD), the same distances to each net's own empirical NTK at
initialisation, and the baseline of random functions of the stax kernel (mean - 2 std). Panel B: the training loss
of every width (first seed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepwise.io import load_npz
from stepwise.plots._mpl import pyplot, save_atomic

FIGURE = "width_sweep.png"


def plot_width_sweep(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the figure for ``run_dir`` and save it (default ``run_dir/width_sweep.png``). Returns its path."""
    run_dir = Path(run_dir)
    data = load_npz(run_dir / "width_sweep.npz")
    plt = pyplot()
    w = data["widths"].astype(float)
    w_inf = w[-1] * 4.0  # where the infinite-width point is drawn
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    ax = axes[0]
    seeds = data["gram_inf_seeds"].shape[0]
    ax.loglog(w, data["gram_inf"], "o-", color="tab:blue", label=f"Gram rel. error vs stax NTK (mean of {seeds} seeds)")
    ax.loglog(w, data["proj_inf"], "s-", color="tab:orange", label="projector distance vs stax NTK")
    for key, color in (("gram_inf_seeds", "tab:blue"), ("proj_inf_seeds", "tab:orange")):
        for row in data[key]:
            ax.loglog(w, row, ".", color=color, alpha=0.4, ms=5)
    ax.loglog(w, data["gram_emp"], "o:", color="tab:blue", alpha=0.5, label="Gram rel. error vs own NTK at init")
    ax.loglog(w, data["proj_emp"], "s:", color="tab:orange", alpha=0.5, label="projector dist. vs own NTK at init")
    floor = np.finfo(np.float64).tiny
    ax.loglog([w_inf], [max(float(data["limit_gram"]), floor)], "*", ms=14, color="tab:blue",
              label="infinite width (kernel GD on stax NTK)")
    ax.loglog([w_inf], [max(float(data["limit_proj"]), floor)], "*", ms=14, color="tab:orange")
    ax.loglog(w, data["random_gram"].mean(axis=1), "x--", color="gray", lw=1,
              label="random function of the stax kernel (Gram, mean)")
    ax.axhline(float(data["random_gram_threshold"]), color="gray", ls=":", lw=1,
               label="baseline: widest width's random functions, mean - 2 std")
    ax.set_xticks([*w, w_inf], [*(str(int(x)) for x in w), r"$\infty$"])
    ax.set_xlabel("hidden width")
    ax.set_ylabel("held-out distance to the kernel prediction")
    ax.set_title("A: learned embedding vs NTK kernel PCA")
    ax.legend(fontsize=7)
    ax = axes[1]
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, w.size))
    for i, c in enumerate(colors):
        curve = data["loss_curves"][i]
        curve = curve[np.isfinite(curve)]
        t = data["lr"][i] * np.arange(1, curve.size + 1)
        ax.loglog(t, np.maximum(curve, floor), color=c, label=f"width {int(w[i])}")
    ax.set_xlabel("time (lr x step)")
    ax.set_ylabel(r"$\|C - I\|_F^2$")
    ax.set_title("B: training loss (first seed)")
    ax.legend(fontsize=7)
    fig.suptitle("width sweep: one-hidden-layer ReLU MLPs (centred, small init) vs the NTK prediction")
    fig.tight_layout()
    out = run_dir / FIGURE if out is None else Path(out)
    return save_atomic(fig, out)
