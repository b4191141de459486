"""Figure of the step map, drawn from a run directory's ``step_map.npz``.

One row per loss. Per hidden width, a heat map over the output layer's initial scale (rows) and the learning rate
(columns), coloured and annotated by the number of well-separated steps of that cell (small print: learned modes and
flat loss plateaus); cells with at least the map's ``min_steps`` separated steps are outlined in white, diverged
cells are grey, and the loss's CPU default (``stepwise_deep``) is framed in red. The last panel of each row is the
standard-initialisation run of theory note E4: its embedding eigenvalues on a log scale (the separated steps marked
at their onsets) and its evaluation loss on the right axis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepwise.io import load_npz
from stepwise.plots._mpl import finish, pyplot

FIGURE = "step_map.png"


def _heat(ax, data: dict, i: int, c: int, vmax: float, plt):
    """The heat map of loss ``i`` at width index ``c``; returns the image (for the colour bar)."""
    n = data["n_steps"][i, :, :, c]
    H, R = n.shape
    m = int(data["min_steps"])
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    im = ax.imshow(np.ma.masked_invalid(n), origin="lower", cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    for a in range(H):
        for b in range(R):
            if data["diverged"][i, a, b, c]:
                ax.text(b, a, "diverged", ha="center", va="center", fontsize=7, color="black")
                continue
            dark = n[a, b] < 0.6 * vmax
            color = "white" if dark else "black"
            ax.text(b, a + 0.1, f"{n[a, b]:.0f}", ha="center", va="center", fontsize=13, weight="bold", color=color)
            ax.text(b, a - 0.27,
                    f"of {data['n_learned'][i, a, b, c]:.0f}, {data['flat_plateaus'][i, a, b, c]:.0f} flat",
                    ha="center", va="center", fontsize=6.5, color=color)
            if n[a, b] >= m:
                ax.add_patch(plt.Rectangle((b - 0.46, a - 0.46), 0.92, 0.92, fill=False, ec="white", lw=1.5, ls="--"))
    h, r, w = (int(v) for v in data["default_cell"][i])
    if h >= 0 and w == c:
        ax.add_patch(plt.Rectangle((r - 0.5, h - 0.5), 1, 1, fill=False, ec="red", lw=3))
    ax.set_xticks(range(R), [f"{v:g}" for v in data["lrs"]])
    ax.set_yticks(range(H), [f"{v:g}" for v in data["head_scales"]])
    ax.set_xlabel("learning rate (SGD)")
    ax.set_ylabel("output layer's initial scale")
    return im


def _standard(ax, data: dict, i: int, plt):
    """The E4 panel: eigenvalues (log) and loss of the standard-initialisation run of loss ``i``."""
    step, eig, loss = data["standard_step"][i], data["standard_eigenvalues"][i], data["standard_eval_loss"][i]
    ok = np.isfinite(step)
    if data["standard_diverged"][i] or not ok.any():
        ax.text(0.5, 0.5, "diverged", ha="center", va="center", transform=ax.transAxes)
        return
    colors = plt.cm.viridis(np.linspace(0, 0.9, eig.shape[1]))
    floor = max(float(np.nanmax(eig)) * 1e-8, np.finfo(np.float64).tiny)
    for j in range(eig.shape[1]):
        if np.all(np.isnan(eig[ok, j])):
            continue
        ax.semilogy(step[ok], np.maximum(eig[ok, j], floor), color=colors[j], lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("embedding covariance eigenvalues")
    twin = ax.twinx()
    twin.plot(step[ok], loss[ok], color="black", lw=1.5, ls="--")
    twin.set_ylabel("evaluation loss (dashed)")
    ax.set_title(f"E4, standard init (lr {data['standard_lr'][i]:g}, width {int(data['standard_width'][i])}): "
                 f"{data['standard_n_steps'][i]:.0f} separated steps, {data['standard_flat_plateaus'][i]:.0f} flat "
                 "plateaus", fontsize=9)


def plot_step_map(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the figure for ``run_dir`` and save it (default ``run_dir/step_map.png``). Returns its path."""
    run_dir = Path(run_dir)
    data = load_npz(run_dir / "step_map.npz")
    plt = pyplot()
    losses = [str(v) for v in data["losses"]]
    widths = data["widths"]
    L, W = len(losses), widths.size
    finite = data["n_steps"][np.isfinite(data["n_steps"])]
    vmax = float(max(int(data["min_steps"]) + 2, finite.max() if finite.size else 0))
    fig, axes = plt.subplots(L, W + 1, figsize=(5.4 * (W + 1) + 1.0, 4.3 * L + 0.6), squeeze=False,
                             layout="constrained")
    for i, loss in enumerate(losses):
        for c in range(W):
            ax = axes[i, c]
            im = _heat(ax, data, i, c, vmax, plt)
            ax.set_title(f"{loss}: hidden width {int(widths[c])}", fontsize=10)
        fig.colorbar(im, ax=axes[i, W - 1], label="separated steps", fraction=0.06, pad=0.02)
        _standard(axes[i, W], data, i, plt)
    fig.suptitle(f"Where steps appear: separated steps per cell (dashed white: >= {int(data['min_steps'])}; red frame: "
                 "the stepwise_deep CPU default; grey: diverged)\nsmall print: of how many learned modes, and the "
                 "flat loss plateaus; right: standard initialisation (theory note E4)", fontsize=11)
    return finish(fig, out, run_dir / FIGURE)
