"""Figure of the speed-up experiment, drawn from a run directory's ``speedup.npz``.

Panel A: linear model, loss of every variant against GD steps (solid: measured; dashed: exact per-mode GD map;
dotted: predicted last step). Panel B: the last mode's eigenvalue (the d-th largest of C), same styles.
Panel C: reduction of the last step time t_d per variant: measured, exact GD map, flow closed form (aligned init), and
measured from ``linear_bt``'s random initialisation.
Panel D: the MLP's held-out loss, plain vs boost, every seed, with the level that times the last step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepwise.io import load_npz
from stepwise.plots._mpl import finish, pyplot

FIGURE = "speedup.png"
_COLORS = {"plain": "black", "input": "tab:blue", "boost": "tab:red", "input_boost": "tab:purple"}


def plot_speedup(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the figure for ``run_dir`` and save it (default ``run_dir/speedup.png``). Returns its path."""
    run_dir = Path(run_dir)
    data = load_npz(run_dir / "speedup.npz")
    variants = [str(v) for v in data["variants"]]
    d = int(data["d"])
    plt = pyplot()
    deep = "deep_seeds" in data
    fig, axes = plt.subplots(1, 4 if deep else 3, figsize=(21 if deep else 16, 4.6))

    for v in variants:
        step = np.maximum(data[f"{v}_step"], 1.0)  # log axis: step 0 drawn at step 1
        color = _COLORS.get(v, "grey")
        last = float(np.max(data[f"{v}_predicted_steps"]))
        axes[0].plot(step, data[f"{v}_loss"], color=color, lw=2, label=v)
        axes[0].plot(step, data[f"{v}_predicted_loss"], color=color, ls="--", lw=1)
        axes[0].axvline(max(last, 1.0), color=color, ls=":", lw=1)
        axes[1].plot(step, data[f"{v}_eigenvalues"][:, d - 1], color=color, lw=2, label=v)
        axes[1].plot(step, data[f"{v}_predicted_eigenvalues"][:, d - 1], color=color, ls="--", lw=1)
        axes[1].axvline(max(last, 1.0), color=color, ls=":", lw=1)
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.set_xlabel("GD step (each variant at the same fraction of its stability limit)")
        ax.legend(loc="lower left", frameon=False, fontsize=8)
    axes[0].set_ylabel(r"loss $\|C - I\|_F^2$")
    axes[0].set_title("A. linear model: loss (dashed: exact GD map)")
    axes[1].set_yscale("log")
    axes[1].set_ylim(1e-14, 3.0)
    axes[1].set_ylabel(f"eigenvalue {d} of C (the last mode)")
    axes[1].set_title("B. the last step (dotted: predicted $t_d$)")

    ax = axes[2]
    others = [v for v in variants if v != "plain"]
    x = np.arange(len(others))
    t_plain = float(np.max(data["plain_measured_steps"]))
    measured = [t_plain / float(np.max(data[f"{v}_measured_steps"])) for v in others]
    t_map = float(np.max(data["plain_predicted_steps"]))
    mapped = [t_map / float(np.max(data[f"{v}_predicted_steps"])) for v in others]
    flow = [float(np.max(data["plain_flow_steps"])) / float(np.max(data[f"{v}_flow_steps"])) for v in others]
    ax.bar(x, measured, color=[_COLORS.get(v, "grey") for v in others], alpha=0.6, label="measured (GD)")
    ax.scatter(x, mapped, color="black", marker="_", s=600, zorder=3, label="exact GD map")
    ax.scatter(x, flow, color="tab:orange", marker="o", s=30, zorder=3, label="flow closed form")
    if "random_plain_measured_steps" in data:  # the same variants from linear_bt's random initialisation
        t_rand = float(np.max(data["random_plain_measured_steps"]))
        rand = [t_rand / float(np.max(data[f"random_{v}_measured_steps"])) for v in others]
        ax.scatter(x + 0.25, rand, color="grey", marker="x", s=40, zorder=3, label="measured, random init")
    for xi, m in zip(x, measured):
        ax.annotate(f"{m:.1f}x", (xi, m), ha="center", va="bottom", fontsize=9)
    ax.set_yscale("log")
    ax.set_ylim(1.0, 2.0 * max(max(measured), max(flow)))
    ax.set_xticks(x, others)
    ax.set_ylabel(r"$t_d$(plain) / $t_d$(variant)")
    ax.set_title("C. reduction of the last step time")
    ax.legend(loc="upper left", frameon=False, fontsize=8)

    if deep:
        ax = axes[3]
        level = float(data["deep_level"])
        for i, seed in enumerate(data["deep_seeds"]):
            step = data[f"deep_s{seed}_step"]
            for v, ls in (("plain", "-"), ("boost", "--")):
                ax.plot(step, data[f"deep_s{seed}_{v}_loss"], color=_COLORS[v], ls=ls, lw=1.5,
                        label=f"{v}" if i == 0 else None)
            ax.plot([data["deep_last_step_plain"][i]], [level], "o", color=_COLORS["plain"], ms=5)
            ax.plot([data["deep_last_step_boost"][i]], [level], "o", color=_COLORS["boost"], ms=5)
        ax.axhline(level, color="grey", ls=":", lw=1, label=f"level {level:g} (times the last step)")
        ratio = np.asarray(data["deep_last_step_plain"]) / np.asarray(data["deep_last_step_boost"])
        pred = np.asarray(data["deep_predicted_plain"]) / np.asarray(data["deep_predicted_boost"])
        ax.set_xlabel("SGD step (same learning rate)")
        ax.set_ylabel("held-out loss")
        ax.set_title(f"D. MLP on digits: speed-up {np.mean(ratio):.1f}x (head-kernel theory {np.mean(pred):.1f}x)")
        ax.legend(loc="upper right", frameon=False, fontsize=8)
    return finish(fig, out, run_dir / FIGURE)
