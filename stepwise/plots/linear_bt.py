"""Figure for the linear Barlow Twins experiment, drawn from a run directory's ``trajectory.npz``.

Panel A: the loss staircase (measured) with the predicted loss (dashed) and predicted step times (dotted).
Panel B: eigenvalues of C over time (solid) with the predicted curves (dashed); panel C: the same on a log scale.
Panel D: |relative error| of each predicted step time against the 2% (median) and 5% (max) thresholds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepwise.io import load_npz
from stepwise.plots._mpl import finish, pyplot

FIGURE = "linear_bt.png"


def plot_linear_bt(run_dir: str | Path, out: str | Path | None = None, *, title: str | None = None) -> Path:
    """Draw the figure for ``run_dir`` and save it (default ``run_dir/linear_bt.png``). Returns its path.

    Any run directory whose ``trajectory.npz`` has these arrays can use it (the kernel experiment does), with
    ``title`` over the panels.
    """
    run_dir = Path(run_dir)
    data = load_npz(run_dir / "trajectory.npz")
    plt = pyplot()
    t = data["time"]
    eigs, loss = data["eigenvalues"], data["loss"]
    d = eigs.shape[1]
    lr = float(data["lr"])
    t_pred, t_meas = lr * data["predicted_steps"], lr * data["measured_steps"]
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, d))
    tt = np.maximum(t, t[1] if t.size > 1 else 1.0)  # log axis: step 0 drawn at step 1

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.4), gridspec_kw={"width_ratios": [1.1, 1.1, 1.1, 0.8]})
    ax = axes[0]
    ax.plot(tt, loss, color="black", lw=2, label="experiment (GD)")
    ax.plot(tt, data["predicted_loss"], color="tab:red", ls="--", lw=1.2, label="theory")
    for j, tp in enumerate(t_pred):
        ax.axvline(tp, color=colors[j], ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("effective time t = lr x step")
    ax.set_ylabel(r"loss $\|C - I\|_F^2$")
    ax.set_title("A. loss staircase (dotted: predicted step times)")
    ax.set_yticks(range(0, d + 1, max(1, d // 5)))
    ax.legend(loc="lower left", frameon=False)

    for ax, log in ((axes[1], False), (axes[2], True)):
        for j in range(d):
            ax.plot(tt, eigs[:, j], color=colors[j], lw=2)
            ax.plot(tt, data["predicted_eigenvalues"][:, j], color="black", ls="--", lw=0.8)
        ax.plot([], [], color="grey", lw=2, label="experiment: eigenvalues of C")
        ax.plot([], [], color="black", ls="--", lw=0.8, label="theory")
        ax.set_xscale("log")
        ax.set_xlabel("effective time t = lr x step")
        ax.set_ylabel("embedding eigenvalue")
        if log:
            ax.set_yscale("log")
            # A float64 eigensolver resolves eigenvalues of C only down to ~1e-16 x lambda_max; below that the
            # measured values are round-off, so the panel shows the resolvable range.
            ax.set_ylim(1e-14, 3.0)
            ax.set_title("C. log scale (float64 resolves >= 1e-14): growth at rate 8 gamma_j")
            ax.legend(loc="upper left", frameon=False)
        else:
            ax.set_ylim(-0.03, 1.08)
            ax.set_title("B. modes learned one at a time")
            ax.legend(loc="upper left", frameon=False)

    ax = axes[3]
    with np.errstate(divide="ignore", invalid="ignore"):  # a mode above 1/2 from the start has t_meas = 0
        rel = np.abs(t_pred - t_meas) / t_meas
    gated = data["gated"].astype(bool)
    idx = np.arange(1, d + 1)
    ax.axhline(0.05, color="tab:orange", ls="--", label="max threshold 5%")
    ax.axhline(0.02, color="tab:green", ls="--", label="median threshold 2%")
    ax.scatter(idx[gated], np.maximum(rel[gated], 1e-16), color=colors[gated], s=40, zorder=3, label="gated modes")
    if (~gated).any():
        ax.scatter(idx[~gated], np.maximum(rel[~gated], 1e-16), facecolors="none", edgecolors="grey", s=40,
                   zorder=3, label="near-degenerate (not gated)")
    ax.set_yscale("log")
    ax.set_ylim(min(1e-4, float(np.nanmin(np.maximum(rel, 1e-16)))) / 10, 30.0)
    ax.set_xticks(idx)
    ax.set_xlabel("step j")
    ax.set_ylabel("|predicted - measured| / measured")
    ax.set_title("D. step-time error")
    ax.legend(loc="upper right", frameon=False, fontsize=8, ncol=2)
    if title:
        fig.suptitle(title)
    return finish(fig, out, run_dir / FIGURE)
