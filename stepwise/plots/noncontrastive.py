"""Figures of the linear non-contrastive experiment (Tian, Chen & Ganguli 2021), drawn from its saved ``.npz``.

``phase_portrait.png``: the per-mode flow (Eqns 11-12, fixed tau) in the (p, s) plane for several eta, with the
invariant parabola, the fixed points and the collapse basin, and Eqn 16 on the parabola (the paper's Figs. 3-4).
``eigenvalues.png``: eigenvalue trajectories: the aligned matrix model against the per-mode theory, the full
BYOL run from a random start (A7), and the per-mode constants of Eqn 14.
``theorems.png``: Theorems 1-3, the EMA correlation of Fig. 7 and the asymmetric part of Fig. 8, with thresholds;
a third row (Fig. 9) when the data has it: the commutator in a stable and an unstable (eta = 0) setting with the
Gronwall form of Theorem 3's bound, lambda_min K along both, and aligned fixed points against Eqn 8 linearised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepwise.io import load_npz
from stepwise.plots._mpl import finish, pyplot

DATA = "noncontrastive_linear.npz"
FIGURES = ("phase_portrait.png", "eigenvalues.png", "theorems.png")


def _positive(t: np.ndarray) -> np.ndarray:
    """Times for a log axis: t = 0 drawn at the first positive time."""
    return np.maximum(t, t[t > 0].min())


def _phase_portrait(d: dict, plt, out: Path) -> Path:
    etas, fixed = d["pp_etas"], d["pp_fixed"]
    p_grid, s_grid, alpha_p = d["pp_p"], d["pp_s"], float(d["pp_alpha_p"])
    n = len(etas)
    fig, axes = plt.subplots(2, n, figsize=(4.6 * n, 8.4), gridspec_kw={"height_ratios": [1.5, 1]}, squeeze=False)
    p_par = np.linspace(p_grid[0], p_grid[-1], 300)
    for i, eta in enumerate(etas):
        ax = axes[0, i]
        dp, ds = d["pp_field"][i]
        speed = np.hypot(dp, ds)
        ax.streamplot(p_grid, s_grid, dp, ds, color=np.log10(speed + 1e-12), cmap="Greys", density=1.1,
                      linewidth=0.7, arrowsize=0.8)
        ax.plot(p_par, p_par**2 / alpha_p, color="black", ls="--", lw=1.2, label="parabola s = p^2/alpha_p")
        pm, pp = fixed[i]
        if np.isfinite(pm):
            on = np.linspace(min(pm, 0.0), pm, 50)
            ax.plot(on, on**2 / alpha_p, color="tab:red", lw=4, alpha=0.6, label="collapse basin (p < p_-)")
            ax.plot([pm], [pm**2 / alpha_p], "o", mfc="white", mec="tab:red", ms=8, mew=2, label=f"p_- = {pm:.4f}")
            ax.plot([pp], [pp**2 / alpha_p], "o", color="tab:green", ms=8, label=f"p_+ = {pp:.4f}")
        if eta == 0:
            ax.axvline(float(d["pp_tau"]) / (1 + float(d["sigma2"])), color="tab:green", lw=1, ls=":",
                       label="eta = 0: fixed line p = tau/(1+sigma2)")
        ax.plot([0], [0], "s", color="tab:red", ms=6, label="collapsed (0, 0)")
        traj_p, traj_s = d["pp_traj"][i]
        for j in range(traj_p.shape[1]):
            grows = abs(traj_p[-1, j]) > 1e-3
            ax.plot(traj_p[:, j], traj_s[:, j], color="tab:blue" if grows else "tab:orange", lw=1.6)
            ax.plot(traj_p[0, j], traj_s[0, j], ".", color="black", ms=6)
        ax.set_xlim(p_grid[0], p_grid[-1])
        ax.set_ylim(s_grid[0], s_grid[-1])
        ax.set_xlabel("p (predictor eigenvalue)")
        ax.set_ylabel("s (eigenvalue of F)")
        above = not np.isfinite(pm)
        ax.set_title(f"eta = {eta:g}" + (" > threshold: all collapse" if above else ""))
        ax.plot([], [], color="tab:blue", label="trajectory -> p_+")
        ax.plot([], [], color="tab:orange", label="trajectory -> collapse")
        ax.legend(loc="upper left", fontsize=7, frameon=True, framealpha=0.85)

        ax = axes[1, i]
        line, vel = d["pp_line"], d["pp_velocity"][i]
        ax.axhline(0, color="grey", lw=0.8)
        ax.plot(line, vel, color="black", lw=1.5)
        if np.isfinite(pm):
            ax.axvspan(line[0], pm, color="tab:red", alpha=0.12, label="collapse basin")
            ax.axvspan(pm, line[-1], color="tab:green", alpha=0.08, label="basin of p_+")
            ax.plot([pm], [0], "o", mfc="white", mec="tab:red", ms=7, mew=2)
            ax.plot([pp], [0], "o", color="tab:green", ms=7)
        else:
            ax.axvspan(line[0], line[-1], color="tab:red", alpha=0.12, label="collapse basin (everything)")
        ax.plot([0], [0], "s", color="tab:red", ms=5)
        ax.set_xlabel("p on the parabola")
        ax.set_ylabel("dp/dt (Eqn 16)")
        ax.set_title(f"threshold tau^2/(4(1+sigma2)) = {float(d['pp_threshold']):.4g}", fontsize=9)
        ax.legend(loc="lower left", fontsize=7, frameon=False)
    fig.suptitle(f"Per-mode dynamics (Eqns 11-12, 16): tau = {float(d['pp_tau']):g}, alpha_p = {alpha_p:g}, "
                 f"sigma2 = {float(d['sigma2']):g}", y=0.995)
    return finish(fig, out)


def _eigenvalues(d: dict, plt, out: Path) -> Path:
    fig, axes = plt.subplots(2, 3, figsize=(17, 9))
    t = _positive(d["a4m_t"])
    n2 = d["a4m_s_matrix"].shape[1]
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, n2))
    for ax, key, label in ((axes[0, 0], "s", "s_j = u_j^T F u_j"), (axes[0, 1], "p", "p_j = u_j^T W_p u_j")):
        for j in range(n2):
            ax.plot(t, d[f"a4m_{key}_matrix"][:, j], color=colors[j], lw=2.2)
            ax.plot(t, d[f"a4m_{key}_modes"][:, j], color="black", ls="--", lw=0.9)
        ax.plot([], [], color="grey", lw=2.2, label="matrix model (Lemma 1)")
        ax.plot([], [], color="black", ls="--", lw=0.9, label="per-mode theory (Eqns 11-13)")
        ax.set_xscale("log")
        ax.set_xlabel("t")
        ax.set_ylabel(label)
        ax.set_title(f"A4: aligned BYOL start, {label.split(' =')[0]}")
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_ylim(max(float(np.min(d["a4m_s_modes"][d["a4m_s_modes"] > 0])), 1e-14), None)
    axes[0, 1].axhline(float(d["a7_p_plus"]), color="tab:green", ls=":", label="p_+ (tau = 1)")
    axes[0, 1].axhline(float(d["a7_p_minus"]), color="tab:red", ls=":", label="p_- (tau = 1)")
    for ax in axes[0, :2]:
        ax.legend(loc="best", fontsize=8, frameon=False)

    ax = axes[0, 2]
    alpha_p = float(d["a4_alpha_p"])
    eta = float(d["a4_eta"])
    # e^{2 eta t} magnifies round-off without bound: show t <= 12/eta, where it is below e^24 ~ 3e10.
    keep = d["a4_t"] <= min(d["a4_t"][-1], 12.0 / max(eta, 1e-3))
    tm = d["a4_t"][keep]
    c = (d["a4_s"][keep] - d["a4_p"][keep] ** 2 / alpha_p) * np.exp(2 * eta * tm)[:, None]
    k = c.shape[1]
    for j, col in enumerate(plt.cm.plasma(np.linspace(0, 0.9, k))):
        ax.plot(_positive(tm), c[:, j], color=col, lw=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("c_j = e^{2 eta t}(s_j - p_j^2/alpha_p)")
    ax.set_title(f"A4: Eqn 14, per-mode constants (flat lines), eta = {eta:g}")

    t7 = _positive(d["a7_t"])
    s7, p7 = d["a7_s"], d["a7_p"]
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, s7.shape[1]))
    ax = axes[1, 0]
    for j in range(s7.shape[1]):
        ax.plot(t7, np.maximum(s7[:, j], 1e-18), color=colors[j], lw=1.8)
    ax.axhline(float(d["a7_p_plus"]) ** 2, color="tab:green", ls=":", label="s = p_+^2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-18, 2.0)
    ax.set_xlabel("t")
    ax.set_ylabel("eigenvalues s_j of F = W W^T")
    ax.set_title("A7: full BYOL matrix model, random start")
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    ax = axes[1, 1]
    for j in range(p7.shape[1]):
        ax.plot(t7, p7[:, j], color=colors[j], lw=1.8)
    ax.axhline(float(d["a7_p_plus"]), color="tab:green", ls=":", label="p_+ (tau = 1)")
    ax.axhline(0.0, color="tab:red", ls=":", label="collapse")
    ax.set_xscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("p_j = u_j^T W_p u_j")
    ax.set_title("A7: predictor eigenvalues on F's eigenvectors")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax = axes[1, 2]
    ax.plot(t7, d["a7_commutator"], label="||[F, W_p]|| / (||F|| ||W_p||)")
    ax.plot(t7, np.maximum(d["a7_asymmetry"], 1e-18), label="||W_p - W_p^T|| / ||W_p||")
    ax.axhline(1e-8, color="tab:red", ls="--", lw=1, label="threshold 1e-8")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_title("A7: alignment and symmetry")
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    return finish(fig, out)


def _theorems(d: dict, plt, out: Path) -> Path:
    fig9 = "f9_t" in d  # data written before Fig. 9 was added has two rows
    fig, axes = plt.subplots(3 if fig9 else 2, 3, figsize=(17, 13.5 if fig9 else 9))
    ax = axes[0, 0]
    for name, err in zip(d["a1_names"], d["a1_rel_error"]):
        control = str(name).startswith("control")
        ax.plot(_positive(d["a1_t"]), np.maximum(err, 1e-17), ls="--" if control else "-", lw=1.5, label=str(name))
    ax.axhline(1e-6, color="tab:red", ls=":", label="threshold 1e-6")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("||C(t) - C(0)|| / ||C(0)||")
    ax.set_title("A1: Theorem 1 invariant (dashed: controls)")
    ax.legend(fontsize=7, frameon=False, loc="center right")

    ax = axes[0, 1]
    ax.plot(d["a2_t"], d["a2_bound"], color="black", ls="--", label="bound e^{-(sigma2+eta) t}")
    ax.plot(d["a2_t"], d["a2_norm_fixed"], label="||W(t)||/||W(0)||, W_p fixed")
    ax.plot(d["a2_t"], d["a2_norm_trained"], label="||W(t)||/||W(0)||, W_p trained")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_title("A2: Theorem 2, no stop-gradient")
    ax.legend(fontsize=8, frameon=False)

    ax = axes[0, 2]
    ax.plot(d["a3_t"], d["a3_commutator"], label="||[F, W_p]||_F")
    ax.plot(d["a3_t"], d["a3_bound"], color="black", ls="--", label="e^{-2 lambda0 t} ||[F(0), W_p(0)]||")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_title(f"A3: Theorem 3 (lambda0 = {float(d['a3_lambda_min_k'].min()):.3g})")
    ax.legend(fontsize=8, frameon=False)

    ax = axes[1, 0]
    for label, cos in zip(d["a8_labels"], d["a8_cos_min"]):
        ax.plot(d["a8_t"], cos, lw=1.5, label=str(label))
    ax.axhline(0.9, color="tab:red", ls=":", label="0.9 (Fig. 7)")
    ax.set_xlabel("t")
    ax.set_ylabel("min over seeds of cos(W_a, W)")
    ax.set_title("A8: Assumption 1 (W_a proportional to W)")
    ax.set_ylim(0.85, 1.005)
    ax.legend(fontsize=7, frameon=False, loc="lower right")

    ax = axes[1, 1]
    for eta, b in zip(d["a9_etas"], d["a9_b_rel"]):
        ax.plot(_positive(d["a9_t"]), np.maximum(b, 1e-18), lw=1.5, label=f"eta = {eta:g}")
    ax.axhline(1e-8, color="tab:red", ls=":", label="threshold 1e-8")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("||B(t)|| / ||B(0)||, B = (W_p - W_p^T)/2")
    ax.set_title("A9: asymmetric part of W_p (constant tau, C = 0)")
    ax.legend(fontsize=8, frameon=False)

    ax = axes[1, 2]
    for tau, curve, col in zip(d["a5_bifurcation_tau"], d["a5_bifurcation"], ("tab:blue", "tab:purple")):
        ax.plot(curve[:, 0], curve[:, 2], color=col, lw=2, label=f"p_+ (tau = {tau:g})")
        ax.plot(curve[:, 0], curve[:, 1], color=col, lw=2, ls="--", label=f"p_- (tau = {tau:g})")
    rows = d["a5_rows"]
    rows = rows[(rows[:, 1] == float(d["sigma2"])) & (rows[:, 2] > 0)]  # rows on these curves, basin starts
    ax.plot(rows[:, 2], rows[:, 4], "o", mfc="none", mec="black", ms=8, label="table rows: p_+")
    ax.plot(rows[:, 2], rows[:, 6], "x", color="tab:green", ms=7, label="p(T) from 1.1 p_- (ODE)")
    ax.plot(rows[:, 2], rows[:, 5], "x", color="tab:red", ms=7, label="p(T) from 0.9 p_- (ODE)")
    ax.set_xlabel("eta")
    ax.set_ylabel("fixed points of Eqn 16")
    ax.set_title(f"A5: saddle-node bifurcation (sigma2 = {float(d['sigma2']):g})")
    ax.legend(fontsize=7, frameon=False)
    if fig9:
        _fig9(d, axes[2])
    return finish(fig, out)


def _fig9(d: dict, axes) -> None:
    t, tau = d["f9_t"], float(d["f9_tau"])
    labels = (f"stable: eta = {float(d['f9_stable_eta']):g}", "unstable: eta = 0")
    floor = 1e-17
    ax = axes[0]
    for comm, gron, live, label, col in zip(d["f9_commutator"], d["f9_gronwall"], d["f9_live"], labels,
                                            ("tab:blue", "tab:red")):
        ax.plot(t, np.maximum(comm, floor), color=col, lw=1.8, label=f"||L(t)||/||L(0)||, {label}")
        ax.plot(t, np.maximum(gron, floor), color=col, ls="--", lw=1,
                label="bound exp(-2 int lambda_min K)" if col == "tab:red" else None)
    ax.plot(t, np.maximum(d["f9_stable_bound"], floor), color="black", ls=":", lw=1,
            label="Theorem 3: e^{-2 lambda0 t} (stable)")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_yscale("log")
    ax.set_ylim(1e-16, 1e3)
    ax.set_xlabel("t")
    ax.set_title(f"Fig. 9: ||[F, W_p]|| from random starts (tau = {tau:g})")
    ax.legend(fontsize=7, frameon=False, loc="lower left")

    ax = axes[1]
    for lam, label, col in zip(d["f9_lambda_min"], labels, ("tab:blue", "tab:red")):
        ax.plot(t, lam, color=col, lw=1.5, label=label)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel("t")
    ax.set_ylabel("lambda_min K(t) (Eqn 9)")
    ax.set_title("Fig. 9: the hypothesis of Theorem 3")
    ax.legend(fontsize=8, frameon=False)

    ax = axes[2]
    for comm, lin, label, col in zip(d["f9_fixed_commutator"], d["f9_fixed_linear"], ("unstable", "stable"),
                                     ("tab:red", "tab:blue")):
        ax.plot(d["f9_fixed_t"], comm, color=col, lw=2.5, alpha=0.6, label=f"{label} fixed point (ODE)")
        ax.plot(d["f9_fixed_t"], lin, color="black", ls="--", lw=1, label="Eqn 8 linearised" if col == "tab:blue"
                else None)
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("||L(t)|| / ||L(0)||")
    ax.set_title("Fig. 9: aligned fixed points at eta = 0, W_p perturbed")
    ax.legend(fontsize=8, frameon=False)


def plot_noncontrastive_linear(run_dir: str | Path) -> list[Path]:
    """Draw the three figures of ``run_dir`` from its ``noncontrastive_linear.npz``. Returns their paths."""
    run_dir = Path(run_dir)
    d = load_npz(run_dir / DATA)
    plt = pyplot()
    return [
        _phase_portrait(d, plt, run_dir / FIGURES[0]),
        _eigenvalues(d, plt, run_dir / FIGURES[1]),
        _theorems(d, plt, run_dir / FIGURES[2]),
    ]
