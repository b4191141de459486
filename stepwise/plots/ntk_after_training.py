"""Figure of the after-training NTK experiment, drawn from a run directory's ``ntk_after_training.npz``.

Top row. A: per method, the subspace similarity of the learned embedding with the after-training NTK's prediction
(and the NTK at initialisation's), against the same-kernel random baseline and the random-subspace value. B: the
cross-method similarity matrix over {networks} x {their NTK predictions}. C: onset time against the gamma of the
kernel mode each step was assigned to (log-log), with slope -1 for reference.
Bottom row: per method, the overlap of each step's new direction with the after-training NTK's eigenfunctions
(rows: steps in time order; columns: modes in decreasing gamma; the theory is the diagonal).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepwise.io import load_npz
from stepwise.plots._mpl import finish, pyplot
from stepwise.plots.verify import overlap_panel

FIGURE = "ntk_after_training.png"


def plot_ntk_after_training(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the figure (default ``run_dir/ntk_after_training.png``). Returns its path."""
    run_dir = Path(run_dir)
    data = load_npz(run_dir / "ntk_after_training.npz")
    plt = pyplot()
    losses = [str(s) for s in data["losses"]]
    m = len(losses)
    fig = plt.figure(figsize=(6 * max(m, 3), 10))
    grid = fig.add_gridspec(2, max(m, 3))

    ax = fig.add_subplot(grid[0, 0])
    x = np.arange(m)
    has_init = "similarity_init" in data
    width = 0.27 if has_init else 0.4
    ax.bar(x - width, data["similarity_final"], width, color="tab:blue", label="vs NTK after training")
    if has_init:
        ax.bar(x, data["similarity_init"], width, color="tab:cyan", label="vs NTK at init")
    ax.bar(x + width, data["baseline_mean_final"], width, color="tab:gray",
           label="random functions of the same kernel (mean)")
    ax.scatter(x + width, data["baseline_threshold_final"], marker="_", s=400, color="black", zorder=3,
               label="check threshold (mean + 2 std)")
    ax.scatter(x, data["baseline_random"], marker="x", color="tab:red", zorder=3, label="random subspace (k / n)")
    ax.set_xticks(x, [f"{loss}\n(k = {k})" for loss, k in zip(losses, data["ks"])])
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("subspace similarity (mean cos$^2$)")
    ax.set_title("A: learned embedding vs NTK prediction")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)

    ax = fig.add_subplot(grid[0, 1])
    names = [str(s) for s in data["names"]]
    mat = data["cross"]
    im = ax.imshow(mat, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if mat[i, j] > 0.6 else "white")
    m = len(losses)
    for i in range(m):
        for j in range(m):
            if i != j:
                ax.text(j, i + 0.3, f"base {data['cross_baseline'][i, j]:.2f}", ha="center", va="center", fontsize=5,
                        color="black" if mat[i, j] > 0.6 else "white")
    ax.set_title("B: cross-method similarity (each at its own k; base = random-kernel-function baseline)")
    fig.colorbar(im, ax=ax, fraction=0.046)

    ax = fig.add_subplot(grid[0, 2])
    colors = plt.cm.tab10(np.arange(m))
    for i, loss in enumerate(losses):
        if f"gamma_assigned_final_{i}" not in data:
            continue
        g, on = data[f"gamma_assigned_final_{i}"], data[f"onsets_{i}"]
        ok = (g > 0) & (on > 0)
        if ok.sum() >= 1:
            ax.loglog(g[ok], on[ok], "o", color=colors[i], label=loss)
            ref = on[ok][0] * (g[ok] / g[ok][0]) ** -1.0
            ax.loglog(g[ok], ref, "--", lw=0.8, color=colors[i])
    ax.set_xlabel("$\\gamma$ of the assigned after-training NTK mode")
    ax.set_ylabel("onset step")
    ax.set_title("C: step time vs $1/\\gamma$ (dashed: slope -1)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)

    for i, loss in enumerate(losses):
        if f"overlap_final_{i}" in data:
            overlap_panel(fig.add_subplot(grid[1, i]), data[f"overlap_final_{i}"],
                          f"{loss}: steps vs after-training NTK modes")
    return finish(fig, out or run_dir / FIGURE)
