"""Figure of a ``stepwise verify`` run, drawn from its ``verify.npz``.

A: the output covariance eigenvalues (log scale) with the detected onsets (dotted), the half-rise steps the kernel
theory predicts with the NTK at initialisation held fixed (red dashed), and the evaluation loss.
B, C: overlap of each step's new direction with the contrastive eigenfunctions of the NTK at initialisation and after
training (rows: steps in the order they happened; columns: kernel modes in decreasing gamma; the theory is the
diagonal). D: onset time against the assigned mode's gamma (log-log), with the theory's slope -1 for reference.
E: subspace similarity of the learned embedding with the two NTK predictions, against the same-kernel random
baseline and the random-subspace value. F (with ``--features``): the backbone output's covariance eigenvalues.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from stepwise.io import load_npz
from stepwise.plots._mpl import finish, pyplot

FIGURE = "verify.png"


def overlap_panel(ax, overlap: np.ndarray, title: str) -> None:
    """Draw a (steps x kernel modes) overlap matrix on ``ax``, each step's largest overlap annotated."""
    im = ax.imshow(overlap, vmin=0.0, vmax=1.0, cmap="Blues", aspect="auto")
    k, big_k = overlap.shape
    ax.set_xticks(range(big_k), [str(i + 1) for i in range(big_k)], fontsize=7)
    ax.set_yticks(range(k), [str(j + 1) for j in range(k)], fontsize=7)
    for j in range(k):
        i = int(np.argmax(overlap[j]))
        ax.text(i, j, f"{overlap[j, i]:.2f}", ha="center", va="center", fontsize=6,
                color="white" if overlap[j, i] > 0.5 else "black")
    ax.set_xlabel("kernel mode (decreasing $\\gamma$)")
    ax.set_ylabel("step (in time order)")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, fraction=0.046)


def plot_verify(run_dir: str | Path, title: str = "", out: str | Path | None = None) -> Path:
    """Draw the figure (default ``run_dir/verify.png``). Returns its path."""
    run_dir = Path(run_dir)
    data = load_npz(run_dir / "verify.npz")
    plt = pyplot()
    has_kernel = "overlap_init" in data
    has_backbone = "backbone_eigenvalues" in data
    panels = (5 if has_kernel else 1) + has_backbone
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.8), squeeze=False)
    axes = axes[0]
    step, eig, onsets = data["step"], data["eigenvalues"], data["onsets"]
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, eig.shape[1]))
    ax = axes[0]
    floor = max(float(np.max(eig)) * 1e-30, np.finfo(np.float64).tiny)  # below: float32 round-off of zero modes
    for j in range(eig.shape[1]):
        ax.semilogy(step, np.maximum(eig[:, j], floor), color=colors[j], lw=1.2)
    for t in onsets:
        ax.axvline(t, color="gray", ls=":", lw=0.8)
    pred = data["predicted_half_steps"]
    for t in pred[np.isfinite(pred) & (pred <= step[-1])]:
        ax.axvline(t, color="tab:red", ls="--", lw=0.8, alpha=0.6)
    ax2 = ax.twinx()
    ax2.plot(step, data["eval_loss"], color="black", lw=1.5, alpha=0.6)
    ax2.set_ylabel("evaluation loss (black)")
    ax.set_xlabel("step")
    ax.set_ylabel("embedding covariance eigenvalues")
    ax.set_title(f"A: {int(data['well_separated'].sum())} well-separated steps (red: lazy-NTK prediction)")
    if has_kernel:
        overlap_panel(axes[1], data["overlap_init"], "B: steps vs modes of the NTK at init")
        overlap_panel(axes[2], data["overlap_final"], "C: steps vs modes of the NTK after training")
        ax = axes[3]
        pos = onsets > 0  # a mode above the onset level at the first tracking point has onset 0
        for key, marker, label in (("init", "o", "NTK at init"), ("final", "s", "NTK after training")):
            g = data[f"gammas_{key}"][data[f"assigned_{key}"]]
            ok = pos & (g > 0)
            if ok.any():
                ax.loglog(g[ok], onsets[ok], marker, label=label)
        g_all = data["gammas_final"][data["assigned_final"]]
        ok = pos & (g_all > 0)
        if ok.any():
            ref = onsets[ok][0] * (g_all[ok] / g_all[ok][0]) ** -1.0
            ax.loglog(g_all[ok], ref, "k--", lw=1, label="slope -1 (t ~ 1/$\\gamma$)")
        ax.set_xlabel("$\\gamma$ of the assigned kernel mode")
        ax.set_ylabel("onset step")
        ax.set_title("D: step time vs $1/\\gamma$")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax = axes[4]
        sim, base = data["similarity"], data["baseline_kernel"]
        x = np.arange(2)
        ax.bar(x - 0.2, sim, 0.4, color="tab:blue", label="learned vs NTK prediction")
        ax.bar(x + 0.2, base.mean(axis=1), 0.4, yerr=2 * base.std(axis=1), color="tab:gray",
               label="learned vs random functions of the same kernel (mean, 2 std)")
        ax.axhline(float(data["baseline_random"]), color="tab:red", ls="--", lw=1, label="random subspace (k / n)")
        ax.set_xticks(x, ["NTK at init", "NTK after training"])
        ax.set_ylim(0.0, 1.05)
        ax.set_ylabel("subspace similarity (mean cos$^2$)")
        ax.set_title("E: final embedding vs kernel prediction")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    if has_backbone:
        ax, feat = axes[-1], data["backbone_eigenvalues"]
        # clipped at 1e-8 of the top: below that a float32 backbone's null directions are round-off noise
        floor_f = max(float(np.max(feat)) * 1e-8, np.finfo(np.float64).tiny)
        shades = plt.cm.magma(np.linspace(0.0, 0.85, feat.shape[1]))
        for j in range(feat.shape[1]):
            ax.semilogy(step, np.maximum(feat[:, j], floor_f), color=shades[j], lw=1.0)
        ax.set_xlabel("step")
        ax.set_ylabel("backbone covariance eigenvalues (clipped at 1e-8 of the top)")
        ax.set_title("F: backbone output (--features; reported)")
    # wrapped to the figure's width (about 11 characters per inch at the default size): a one-panel figure of a
    # model whose long file path names the run would otherwise cut the title at both edges
    fig.suptitle(textwrap.fill(title, width=max(40, int(11 * 5.2 * panels))))
    return finish(fig, out or run_dir / FIGURE)
