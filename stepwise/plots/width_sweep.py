"""Figure for the width-sweep experiment, drawn from a run directory's ``width_sweep.npz``.

Panel A: held-out Gram relative error and projector distance to the infinite-width (stax) NTK prediction against
the hidden width (log-log): the mean over the network seeds (lines) and each seed (dots), with the infinite-width
point (the kernel machine on the stax NTK trained by GD), the same distances to each net's own empirical NTK at
initialisation, and the baseline of random functions of the stax kernel (mean - 2 std). Panel B: the training loss
of every width (first seed). Panel C: every net's half-rise steps (the j-th largest eigenvalue of C reaching 1/2),
predicted by the kernel theory from the net's own empirical NTK at initialisation against measured, per mode
(marker) and width (colour), every seed, with the diagonal and the +-10% band of the gated target.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepwise.io import load_npz
from stepwise.plots._mpl import finish, pyplot

FIGURE = "width_sweep.png"


def plot_width_sweep(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the figure for ``run_dir`` and save it (default ``run_dir/width_sweep.png``). Returns its path."""
    run_dir = Path(run_dir)
    data = load_npz(run_dir / "width_sweep.npz")
    plt = pyplot()
    w = data["widths"].astype(float)
    w_inf = w[-1] * 4.0  # where the infinite-width point is drawn
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.2))
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
    _step_time_panel(axes[2], data, w, colors)
    fig.suptitle("width sweep: one-hidden-layer ReLU MLPs (centred, small init) vs the NTK prediction")
    return finish(fig, out, run_dir / FIGURE)


MARKERS = "osD^v<>p*h"


def _step_time_panel(ax, data, w: np.ndarray, colors) -> None:
    """Panel C: predicted against measured half-rise steps, (n_seeds, W, d) arrays ``pred_steps``/``meas_steps``."""
    pred, meas = data["pred_steps"], data["meas_steps"]
    n_seeds, _, d = pred.shape
    ok = np.isfinite(pred) & np.isfinite(meas) & (pred > 0) & (meas > 0)
    lo, hi = float(np.min(np.minimum(pred, meas)[ok])) / 1.5, float(np.max(np.maximum(pred, meas)[ok])) * 1.5
    line = np.array([lo, hi])
    ax.fill_between(line, line / 1.1, line * 1.1, color="gray", alpha=0.15, lw=0, label=r"$\pm$10% (gated target)")
    ax.loglog(line, line, "k-", lw=0.8, label="predicted = measured")
    for i, c in enumerate(colors):
        err = np.median(np.abs(pred[:, i] - meas[:, i]) / meas[:, i], axis=-1).mean()
        ax.plot([], [], "s", color=c, label=f"width {int(w[i])}: median error {100 * err:.1f}% (seed mean)")
        for j in range(d):
            ax.plot(meas[:, i, j], pred[:, i, j], MARKERS[j % len(MARKERS)], color=c, ms=6, alpha=0.8,
                    mfc="none" if j % 2 else c)
    for j in range(d):
        ax.plot([], [], MARKERS[j % len(MARKERS)], color="k", mfc="none" if j % 2 else "k", label=f"step {j + 1}")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    from matplotlib import ticker  # pyplot() has set the backend

    for axis in (ax.xaxis, ax.yaxis):  # plain step counts at 1, 2, 5 x 10^k; no crowded minor labels
        axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("measured half-rise step (net)")
    ax.set_ylabel("predicted half-rise step (kernel theory, own NTK at init)")
    ax.set_title(f"C: step times, {n_seeds} seed{'s' if n_seeds > 1 else ''} per width")
    ax.legend(fontsize=7, loc="lower right")
