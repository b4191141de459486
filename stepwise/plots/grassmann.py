"""Figures for the Grassmannian SSL experiment (Esser et al. 2023), drawn from a run directory's data files.

``grassmann.png`` (from ``naive.npz`` and ``constrained.npz``):
  A. naive GD: sigma_k / sigma_1 of W over time (solid) and the closed form (dashed): collapse to rank one at rate
     2(lambda_1 - lambda_2) (dotted guide).
  B. constrained: ||P_ODE - P_closed||_F for each h and max|W^T W - I| of the ODE and of Riemannian GD.
  C. constrained: largest principal sine to the top-h eigenspace, Riemannian GD (solid) vs closed form (dashed),
     with the fit window and the predicted rate 2(lambda_h - lambda_(h+1)).
  D. first order: max projector error of Riemannian GD against the closed form vs the step lr (slope-1 guide).
``grassmann_width.png`` (from ``width.npz``): relative change of the trained layer and of the empirical NTK
  against the hidden width m, SSL with the constraint vs supervised, per seed (dots) and mean (lines), with the
  fit change^2 = alpha^2 + beta^2 / m behind the infinite-width check (dashed, extrapolated to 16 x m_max).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepwise.compare.esser2023 import infinite_width_fraction
from stepwise.io import load_npz
from stepwise.plots._mpl import finish, pyplot

FIGURE = "grassmann.png"
WIDTH_FIGURE = "grassmann_width.png"


def plot_grassmann(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw ``grassmann.png`` for ``run_dir`` (default output inside it). Returns its path."""
    run_dir = Path(run_dir)
    nv, cs = load_npz(run_dir / "naive.npz"), load_npz(run_dir / "constrained.npz")
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.6))

    ax = axes[0]
    t, sv = nv["t"], nv["sv"]
    ratios = sv / sv[:, :1]
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, sv.shape[1]))
    for k in range(1, sv.shape[1]):
        ax.plot(t, ratios[:, k], color=colors[k], lw=2, label=f"GD: sigma_{k + 1} / sigma_1")
        ax.plot(t, nv["sv_closed"][:, k], color="black", ls="--", lw=0.8)
    lam = nv["lam"]
    rate = 2 * (lam[0] - lam[1])
    i0 = np.argmax(ratios[:, 1] <= float(nv["window"][1]))
    ax.plot(t[i0:], ratios[i0, 1] * np.exp(-rate * (t[i0:] - t[i0])), color="tab:red", ls=":", lw=1.5,
            label=f"rate 2(l1 - l2) = {rate:.3g}")
    ax.plot([], [], color="black", ls="--", lw=0.8, label="closed form exp(2tC) W0")
    ax.set_yscale("log")
    ax.set_ylim(max(1e-17, float(np.nanmin(ratios[:, 1:][ratios[:, 1:] > 0]))), 2.0)
    ax.set_xlabel("t = lr x step (units of 1 / lambda_1)")
    ax.set_ylabel("singular-value ratio")
    ax.set_title("A. unconstrained GD collapses to rank one")
    ax.legend(loc="lower left", frameon=False, fontsize=8)

    ax = axes[1]
    for i, h in enumerate(cs["hs"]):
        ax.plot(cs["flow_t"][i], np.maximum(cs["flow_error"][i], 1e-18), lw=1.5, label=f"ODE vs closed form, h = {h}")
    ax.plot(cs["flow_t"][0], np.maximum(np.max(cs["flow_ortho"], axis=0), 1e-18), color="grey", ls="--",
            label="ODE max|W^T W - I| (all h)")
    ax.plot(cs["t"], np.maximum(cs["rgd_ortho"], 1e-18), color="black", ls=":", label="Riemannian GD max|W^T W - I|")
    ax.plot(cs["t"], np.maximum(cs["qr_polar"], 1e-18), color="tab:purple", ls="-.", label="||P_QR - P_polar||")
    ax.axhline(1e-6, color="tab:red", lw=0.8, label="tolerance 1e-6")
    ax.set_yscale("log")
    ax.set_ylim(1e-18, 1e-3)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0.0)
    ax.set_xlabel("t (linear below 1, log above)")
    ax.set_ylabel("error")
    ax.set_title("B. projector P(t) = Y (Y^T Y)^-1 Y^T is exact")
    ax.legend(loc="upper left", frameon=False, fontsize=7)

    ax = axes[2]
    lam, h = cs["lam"], int(cs["h"])
    rate = 2 * (lam[h - 1] - lam[h])
    lo, hi = (float(v) for v in cs["window"])
    ax.plot(cs["t"], cs["sines"], color="tab:blue", lw=2, label=f"Riemannian GD (h = {h})")
    ax.plot(cs["t"], cs["sines_closed"], color="black", ls="--", lw=0.8, label="closed form")
    ax.axhspan(lo, hi, color="tab:green", alpha=0.08, label="rate-fit window")
    i0 = np.argmax(cs["sines"] <= hi)
    ax.plot(cs["t"][i0:], cs["sines"][i0] * np.exp(-rate * (cs["t"][i0:] - cs["t"][i0])), color="tab:red", ls=":",
            lw=1.5, label=f"rate 2(l_h - l_h+1) = {rate:.3g}")
    ax.set_yscale("log")
    ax.set_ylim(1e-17, 2.0)
    ax.set_xlabel("t")
    ax.set_ylabel("largest principal sine to top-h eigenspace")
    ax.set_title("C. convergence to the top-h eigenspace")
    ax.legend(loc="lower left", frameon=False, fontsize=8)

    ax = axes[3]
    lrs, errs = cs["order_lrs"], cs["order_errors"]
    ax.loglog(lrs, errs, "o-", color="tab:blue", label="max_t ||P_GD - P_closed||_F")
    ax.loglog(lrs, errs[-1] * lrs / lrs[-1], color="black", ls=":", label="slope 1 (O(lr))")
    ax.set_xlabel("step lr")
    ax.set_ylabel("projector error")
    ax.set_title("D. Riemannian GD -> flow at first order")
    ax.legend(loc="upper left", frameon=False, fontsize=8)

    return finish(fig, out, run_dir / FIGURE)


def plot_width(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw ``grassmann_width.png`` for ``run_dir``. Returns its path."""
    run_dir = Path(run_dir)
    data = load_npz(run_dir / "width.npz")
    plt = pyplot()
    widths = data["widths"].astype(np.float64)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    panels = (("param", "relative change of the trained layer ||a_T - a_0|| / ||a_0||"),
              ("ntk", "relative change of the empirical NTK ||K_T - K_0||_F / ||K_0||_F"))
    for ax, (what, label) in zip(axes, panels):
        for kind, color, name in (("ssl", "tab:blue", "SSL, a^T a = m I (Riemannian GD)"),
                                  ("sup", "tab:orange", "supervised MSE (GD)")):
            vals = data[f"{kind}_{what}"]
            for row in vals:
                ax.scatter(widths, row, color=color, s=12, alpha=0.5)
            mean = vals.mean(axis=0)
            slope = np.polyfit(np.log(widths), np.log(mean), 1)[0]
            ax.plot(widths, mean, "o-", color=color, lw=2, label=f"{name}: slope {slope:.2f}")
        power = 0.5 if what == "param" else 1.0  # NTK theory: parameters O(m^-1/2); this NTK O(1/m)
        ref = data[f"sup_{what}"].mean(axis=0)[0]
        ax.plot(widths, ref * (widths / widths[0]) ** -power, color="grey", ls=":", lw=1, label=f"m^-{power:g}")
        if what == "ntk":  # the fit behind the infinite-width check: change^2 = alpha^2 + beta^2 / m
            _, alpha2, beta2 = infinite_width_fraction(widths, data["ssl_ntk"].mean(axis=0))
            grid = np.geomspace(widths[0], 16 * widths[-1], 50)
            ax.plot(grid, np.sqrt(np.maximum(alpha2 + beta2 / grid, 1e-30)), color="tab:blue", ls="--", lw=1,
                    label="SSL fit sqrt(alpha^2 + beta^2/m), m -> inf: alpha = " f"{np.sqrt(max(alpha2, 0)):.3g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("hidden width m")
        ax.set_ylabel(label)
        ax.legend(loc="lower left" if what == "param" else "upper right", frameon=False, fontsize=8)
    axes[0].set_title("parameters: SSL moves O(1) at every width")
    axes[1].set_title("NTK: supervised becomes lazy, SSL keeps moving")
    return finish(fig, out, run_dir / WIDTH_FIGURE)
