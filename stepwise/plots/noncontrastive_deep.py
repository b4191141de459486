"""Figure of the deep non-contrastive experiment (Tian, Chen & Ganguli 2021, Fig. 2 at CPU scale), from ``alignment.npz``.

``noncontrastive_deep.png``, one row: F's eigenvalues over training (the spectrum split), the predictor's
eigenvalues p_j = u_j^T W_p u_j on F's eigenvectors, the alignment cosines of the non-null modes with the 0.9
threshold, W_p's asymmetry for every seed, and log p_j against log s_j at the end with the fitted slopes and the
theory's 0.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepwise.compare.tian2021 import loglog_slope
from stepwise.io import load_npz
from stepwise.plots._mpl import pyplot, save_atomic

DATA = "alignment.npz"
FIGURE = "noncontrastive_deep.png"


def plot_noncontrastive_deep(run_dir: str | Path, *, min_cos: float = 0.9) -> Path:
    """Draw the figure from ``run_dir/alignment.npz``; returns its path."""
    run_dir = Path(run_dir)
    d = load_npz(run_dir / DATA)
    plt = pyplot()
    t = d["step"] * float(d["lr"])
    s, p, cos, alive = d["s"][0], d["p"][0], d["cos"][0], d["alive"][0]
    live = alive[-1]
    colors = plt.cm.viridis(np.linspace(0, 0.9, s.shape[1]))
    fig, axes = plt.subplots(1, 5, figsize=(24, 4.6))

    ax = axes[0]
    rel = np.maximum(s / s[:, :1], 1e-12)
    for j in range(s.shape[1]):
        ax.plot(t, rel[:, j], color=colors[j], lw=1.4 if live[j] else 0.8, ls="-" if live[j] else ":")
    ax.axhline(float(d["floor"]), color="tab:red", ls="--", lw=1, label=f"floor {float(d['floor']):g} s_max")
    ax.set(yscale="log", xlabel="t = lr x step", ylabel="s_j / s_max", title="eigenvalues of F (seed 0)")
    ax.legend(fontsize=8)

    ax = axes[1]
    for j in range(p.shape[1]):
        ax.plot(t, p[:, j], color=colors[j], lw=1.4 if live[j] else 0.8, ls="-" if live[j] else ":")
    ax.plot(t, d["min_eig_ratio"][0], color="black", lw=1.5, label="lambda_min / max|lambda| of sym(W_p)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="t", ylabel="p_j = u_j^T W_p u_j", title="predictor eigenvalues on F's eigenvectors")
    ax.legend(fontsize=8)

    ax = axes[2]
    for j in np.flatnonzero(live):
        ax.plot(t, cos[:, j], color=colors[j], lw=1.2)
    ax.axhline(min_cos, color="tab:red", ls="--", lw=1, label=f"threshold {min_cos:g}")
    ax.set(xlabel="t", ylabel="cos(W_p u_j, u_j)", ylim=(-1.05, 1.05),
           title=f"alignment of the {int(live.sum())} non-null modes")
    ax.legend(fontsize=8, loc="lower right")

    ax = axes[3]
    for k, a in enumerate(d["asymmetry"]):
        ax.plot(t, a, lw=1.3, label=f"seed {k}: {a[0]:.2f} -> {a[-1]:.3f}")
    ax.axhline(0.1, color="grey", ls=":", lw=1, label="note's proposed 0.1")
    ax.set(yscale="log", xlabel="t", ylabel="||W_p - W_p^T|| / ||W_p||", title="asymmetry of W_p")
    ax.legend(fontsize=8)

    ax = axes[4]
    for k in range(d["s"].shape[0]):
        sk, pk, ak = d["s"][k][-1], d["p"][k][-1], d["alive"][k][-1]
        ok = ak & (pk > 0)
        slope = loglog_slope(sk, pk, ak)
        ax.plot(sk[ok], pk[ok], "o", ms=5, label=f"seed {k}: slope {slope:.2f}")
    s_all = d["s"][:, -1][d["alive"][:, -1]]
    grid = np.geomspace(s_all.min(), s_all.max(), 20)
    p_all = d["p"][:, -1][d["alive"][:, -1]]
    anchor = np.exp(np.median(np.log(np.maximum(p_all, 1e-12))) - 0.5 * np.median(np.log(s_all)))
    ax.plot(grid, anchor * np.sqrt(grid), "k--", lw=1, label="slope 0.5 (s ∝ p^2, linear theory)")
    ax.set(xscale="log", yscale="log", xlabel="s_j (end)", ylabel="p_j (end)", title="B3: p_j against s_j")
    ax.legend(fontsize=8)
    fig.suptitle("BYOL with a linear predictor: W_p aligns with F and becomes symmetric (Tian et al. 2021, Fig. 2)")
    fig.tight_layout()
    out = save_atomic(fig, run_dir / FIGURE)
    plt.close(fig)
    return out
