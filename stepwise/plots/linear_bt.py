"""Figure for the linear Barlow Twins experiment, drawn from a run directory's ``trajectory.npz``.

Panel A: the loss staircase (measured) with the predicted loss (dashed) and predicted step times (dotted).
Panel B: eigenvalues of C over time (solid) with the predicted curves (dashed).
Panel C: relative error of each predicted step time, with the +-2% and +-5% bands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepwise.plots._mpl import pyplot, save_atomic

FIGURE = "linear_bt.png"


def plot_linear_bt(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the figure for ``run_dir`` and save it (default ``run_dir/linear_bt.png``). Returns its path."""
    run_dir = Path(run_dir)
    data = np.load(run_dir / "trajectory.npz")
    plt = pyplot()
    t = data["time"]
    eigs, loss = data["eigenvalues"], data["loss"]
    d = eigs.shape[1]
    lr = float(data["lr"])
    t_pred, t_meas = lr * data["predicted_steps"], lr * data["measured_steps"]
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, d))
    tt = np.maximum(t, t[1] if t.size > 1 else 1.0)  # log axis: step 0 drawn at step 1

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1.1, 1.1, 0.8]})
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

    ax = axes[1]
    for j in range(d):
        ax.plot(tt, eigs[:, j], color=colors[j], lw=2)
        ax.plot(tt, data["predicted_eigenvalues"][:, j], color="black", ls="--", lw=0.8)
    ax.plot([], [], color="grey", lw=2, label="experiment: eigenvalues of C")
    ax.plot([], [], color="black", ls="--", lw=0.8, label="theory")
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.08)
    ax.set_xlabel("effective time t = lr x step")
    ax.set_ylabel("embedding eigenvalue")
    ax.set_title("B. modes learned one at a time")
    ax.legend(loc="upper left", frameon=False)

    ax = axes[2]
    rel = 100 * (t_pred - t_meas) / t_meas
    gated = data["gated"].astype(bool)
    idx = np.arange(1, d + 1)
    ax.axhspan(-5, 5, color="tab:orange", alpha=0.12, label="+-5%")
    ax.axhspan(-2, 2, color="tab:green", alpha=0.15, label="+-2%")
    ax.bar(idx[gated], rel[gated], color=colors[gated], label="gated modes")
    if (~gated).any():
        ax.bar(idx[~gated], rel[~gated], color="lightgrey", hatch="//", label="near-degenerate (not gated)")
    ax.axhline(0, color="black", lw=0.8)
    lim = max(6.0, float(np.nanmax(np.abs(rel))) * 1.2) if np.isfinite(rel).any() else 6.0
    ax.set_ylim(-lim, lim)
    ax.set_xticks(idx)
    ax.set_xlabel("step j")
    ax.set_ylabel("step time error (%)")
    ax.set_title("C. predicted vs measured step times")
    ax.legend(loc="upper right", frameon=False, fontsize=8)
    fig.tight_layout()

    out = Path(out) if out is not None else run_dir / FIGURE
    save_atomic(fig, out)
    plt.close(fig)
    return out
