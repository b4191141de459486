"""Figures for the deep stepwise experiment, drawn from a run directory's ``spectrum.npz``.

Per run: the loss staircase, the output covariance eigenvalues on a log scale with the detected onsets, the
linear-probe accuracy, and the PCA picture (the embeddings of the fixed evaluation images in their top three
principal directions, at a common scale: a point, then a line, then a plane, ...). Side by side: the eigenvalue
panels of several runs (e.g. Barlow Twins, SimCLR, VICReg).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepwise.io import load_npz
from stepwise.plots._mpl import finish, pyplot

FIGURE = "stepwise_deep.png"


def _pca3(z: np.ndarray) -> np.ndarray:
    z = z - z.mean(axis=0)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    out = np.zeros((z.shape[0], 3))
    k = min(3, vt.shape[0])
    out[:, :k] = z @ vt[:k].T
    return out


def _pca_times(step: np.ndarray, onsets: np.ndarray) -> list[int]:
    """Tracking indices: the start, then midway between consecutive onsets (after 0, 1, 2 steps)."""
    on = onsets[np.isfinite(onsets)]
    picks = [0]
    for a, b in zip(on[:3], on[1:4]):
        picks.append(int(np.argmin(np.abs(step - 0.5 * (a + b)))))
    while len(picks) < 4:
        picks.append(len(step) - 1)
    return picks


def plot_stepwise_deep(run_dir: str | Path, title: str = "", out: str | Path | None = None) -> Path:
    """Draw the per-run figure (default ``run_dir/stepwise_deep.png``)."""
    run_dir = Path(run_dir)
    data = load_npz(run_dir / "spectrum.npz")
    plt = pyplot()
    step, eig, onsets = data["step"], data["eigenvalues"], data["onsets"]
    d = eig.shape[1]
    colors = plt.cm.viridis(np.linspace(0, 0.9, d))
    fig = plt.figure(figsize=(20, 8))
    grid = fig.add_gridspec(2, 4, height_ratios=[1, 1])

    ax = fig.add_subplot(grid[0, 0])
    tl = data["train_loss"]
    ax.plot(np.arange(1, tl.size + 1), tl, color="lightgrey", lw=0.8, label="training batches")
    ax.plot(step, data["eval_loss"], color="black", lw=2, label="fixed evaluation pairs")
    for j, t in enumerate(onsets):
        if np.isfinite(t):
            ax.axvline(t, color=colors[j], ls=":", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("A. loss (dotted: detected onsets)")
    ax.legend(frameon=False)

    ax = fig.add_subplot(grid[0, 1])
    for j in range(d):
        ax.plot(step, np.maximum(eig[:, j], 1e-30), color=colors[j], lw=1.8)
    sep = data["well_separated"].astype(bool)
    ax.scatter(onsets[sep], np.full(int(sep.sum()), 0.1 * eig[-1, 0]), marker="v",
               color="tab:red", zorder=3, label="onset of a well-separated step")
    ax.set_yscale("log")
    positive = eig[eig > 0]
    ax.set_ylim(max(float(positive.min()) if positive.size else 1e-30, eig.max() * 1e-12), eig.max() * 3)
    ax.set_xlabel("step")
    ax.set_ylabel("eigenvalue of the embedding covariance")
    ax.set_title(f"B. {int(sep.sum())} well-separated steps")
    ax.legend(frameon=False, loc="lower right")

    ax = fig.add_subplot(grid[0, 2])
    ax.plot(step, data["rank"], color="black", drawstyle="steps-post")
    ax.set_xlabel("step")
    ax.set_ylabel("rank (eigenvalues above the onset level)")
    ax.set_title("C. rank grows one at a time")

    ax = fig.add_subplot(grid[0, 3])
    ax.plot(step, data["probe_accuracy"], color="tab:purple", lw=2)
    ax.set_ylim(0, 1)
    ax.set_xlabel("step")
    ax.set_ylabel("linear-probe accuracy (held-out half)")
    ax.set_title("D. label information in the embedding")

    picks = _pca_times(step, onsets)
    pcs = [_pca3(data["snapshots"][i]) for i in picks]
    lim = max(float(np.abs(p).max()) for p in pcs) or 1.0
    for col, (i, p) in enumerate(zip(picks, pcs)):
        ax = fig.add_subplot(grid[1, col], projection="3d")
        ax.scatter(p[:, 0], p[:, 1], p[:, 2], s=4, color=colors[min(col, d - 1)])
        for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
            setter(-lim, lim)
        ax.set_title(f"E. PCA of embeddings at step {int(step[i])}")
    fig.suptitle(title)
    return finish(fig, out, run_dir / FIGURE)


def plot_side_by_side(run_dirs: list[Path], labels: list[str], out: str | Path) -> Path:
    """Output covariance eigenvalues of several runs side by side (the three-losses figure)."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(run_dirs), figsize=(5.5 * len(run_dirs), 7), squeeze=False)
    for col, (run_dir, label) in enumerate(zip(run_dirs, labels)):
        data = load_npz(Path(run_dir) / "spectrum.npz")
        step, eig = data["step"], data["eigenvalues"]
        colors = plt.cm.viridis(np.linspace(0, 0.9, eig.shape[1]))
        ax = axes[0, col]
        ax.plot(step, data["eval_loss"], color="black", lw=2)
        ax.set_title(f"{label}: loss")
        ax.set_xlabel("step")
        ax = axes[1, col]
        for j in range(eig.shape[1]):
            ax.plot(step, np.maximum(eig[:, j], 1e-30), color=colors[j], lw=1.5)
        ax.set_yscale("log")
        positive = eig[eig > 0]
        ax.set_ylim(max(float(positive.min()) if positive.size else 1e-30, eig.max() * 1e-12), eig.max() * 3)
        ax.set_title(f"{label}: {int(data['well_separated'].sum())} well-separated steps")
        ax.set_xlabel("step")
        ax.set_ylabel("embedding covariance eigenvalues")
    return finish(fig, out)
