"""Figure of the deep non-contrastive experiment (Tian, Chen & Ganguli 2021, Fig. 2 at CPU scale), from
``alignment.npz``.

``noncontrastive_deep.png``, two rows: F's eigenvalues over training (the spectrum split), the predictor's
eigenvalues p_j = u_j^T W_p u_j on F's eigenvectors, the alignment cosines of the non-null modes with the 0.9
threshold, W_p's asymmetry for every seed, log p_j against log s_j at the end with the fitted slopes and the
theory's 0.5, and the runs without EMA: per seed, F's spectrum at the end with a symmetric W_p at B4's alpha_p
(Table 3) and at Fig. 6's larger alpha_p, the regular W_p of B4 for reference, with the B4 and Fig. 6 checks'
verdicts (recomputed from the saved arrays by :func:`stepwise.compare.tian2021.no_ema_checks`: B4 and Fig. 6, as
the runner does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepwise.compare.checks import Check
from stepwise.compare.tian2021 import ALIGN_FLOOR, loglog_slope, no_ema_checks, non_null_modes
from stepwise.io import load_npz
from stepwise.plots._mpl import finish, pyplot

DATA = "alignment.npz"
FIGURE = "noncontrastive_deep.png"


def check_title(c: Check) -> str:
    """A check's name and verdict for a panel title: ``name: PASS (theory)``, or ``name: reported, not gated``."""
    if c.passed is None:
        return f"{c.name}: reported, not gated"
    return f"{c.name}: {'PASS' if c.passed else 'FAIL'} ({c.kind})"


def not_run(ax, what: str, why: str) -> None:
    """An axis left empty on purpose: says what was not run and why, no frame."""
    ax.text(0.5, 0.5, f"{what}:\nnot run ({why})", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def plot_noncontrastive_deep(run_dir: str | Path, *, min_cos: float = 0.9) -> Path:
    """Draw the figure from ``run_dir/alignment.npz``; returns its path."""
    run_dir = Path(run_dir)
    d = load_npz(run_dir / DATA)
    plt = pyplot()
    t = d["step"] * float(d["lr"])
    s, p, cos, alive = d["s"][0], d["p"][0], d["cos"][0], d["alive"][0]
    live = alive[-1]
    colors = plt.cm.viridis(np.linspace(0, 0.9, s.shape[1]))
    fig, grid = plt.subplots(2, 3, figsize=(19, 10.5))
    axes = grid.ravel()

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

    if d["fig6_spectrum_symmetric"].shape[0]:
        _no_ema_panel(d, axes[5])
    else:
        not_run(axes[5], "B4 and Fig. 6 (no EMA)", "no_ema.seeds = 0")
    fig.suptitle("BYOL with a linear predictor: W_p aligns with F and becomes symmetric (Tian et al. 2021, Fig. 2)")
    return finish(fig, run_dir / FIGURE)


def figure_no_ema_checks(d: dict) -> tuple[dict[str, list[int]], list[Check]]:
    """The no-EMA panel's per-seed non-null mode counts (``regular`` and ``base``: B4 at ``no_ema.alpha_p``;
    ``rescue``: the symmetric W_p at ``no_ema.rescue_alpha_p``) and the B4 and Fig. 6 checks whose verdicts its title
    shows, recomputed from ``alignment.npz``'s arrays as the runner computes them."""
    modes = {"regular": [non_null_modes(s) for s in d["b4_spectrum_regular"]],
             "base": [non_null_modes(s) for s in d["b4_spectrum_symmetric"]],
             "rescue": [non_null_modes(s) for s in d["fig6_spectrum_symmetric"]]}
    return modes, no_ema_checks(modes, b4_alpha_p=float(d["b4_alpha_p"]), fig6_alpha_p=float(d["fig6_alpha_p"]),
                                min_modes=int(d["min_modes"]))


def _no_ema_panel(d: dict, ax) -> None:
    """B4 and Fig. 6, per seed: F's spectrum at the end without EMA, symmetric W_p at B4's alpha_p and at Fig. 6's,
    and the regular W_p at B4's alpha_p (thin, grey) for reference."""
    base_a, rescue_a = float(d["b4_alpha_p"]), float(d["fig6_alpha_p"])
    runs = {"regular": (d["b4_spectrum_regular"], f"regular W_p, alpha_p = {base_a:g} (B4)", "grey", ":"),
            "base": (d["b4_spectrum_symmetric"], f"symmetric, alpha_p = {base_a:g} (B4)", "C0", "-"),
            "rescue": (d["fig6_spectrum_symmetric"], f"symmetric, alpha_p = {rescue_a:g} (Fig. 6)", "C3", "--")}
    modes, (b4, fig6) = figure_no_ema_checks(d)
    markers = "osD^v<>p"
    j = np.arange(1, d["fig6_spectrum_symmetric"].shape[1] + 1)
    for key, (spec, name, color, ls) in runs.items():
        for k, s in enumerate(spec):
            ax.plot(j, np.maximum(s / s[0], 1e-12), ls=ls, marker=markers[k % len(markers)], color=color,
                    lw=1.0 if key == "regular" else 1.4, ms=5, alpha=0.85,
                    label=f"seed {k}, {name}: {modes[key][k]} non-null")
    ax.axhline(ALIGN_FLOOR, color="tab:red", ls="--", lw=1, label=f"non-null floor {ALIGN_FLOOR:g} s_max")
    n = d["fig6_spectrum_symmetric"].shape[0]
    ax.set(yscale="log", xlabel="mode j", ylabel="s_j / s_max at the end",
           title=f"no EMA ({n} seed{'s' if n > 1 else ''}, B4's): spectrum of F at the end,\nsymmetric W_p at "
           f"alpha_p = {base_a:g} vs {rescue_a:g} (regular at {base_a:g}: grey)\n{check_title(fig6)}\n"
           f"{check_title(b4)}")
    ax.legend(fontsize=7)
