"""Figures for the HLTM experiment, drawn from a run directory's ``curves.npz``.

``hltm_training.png``: best |corr| per level over training at the main setting, one panel per loss (seed mean,
band = min..max over seeds), and a panel of the training losses.
``hltm_sweep.png``: final best |corr| against the polarity range (one line per hid) and against hid (one line per
polarity range), for the root and for the mean over levels; initial values dotted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepwise.io import load_npz
from stepwise.plots._mpl import finish, pyplot

TRAINING = "hltm_training.png"
SWEEP = "hltm_sweep.png"


def _level_names(depth: int) -> list[str]:
    return [f"d{depth - t}" + (" (root)" if t == 0 else "") for t in range(depth)]


def plot_hltm_training(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Per-level correlation curves of the main setting; saved to ``run_dir/hltm_training.png`` by default."""
    run_dir = Path(run_dir)
    data = load_npz(run_dir / "curves.npz")
    plt = pyplot()
    step = data["step"]
    losses = [str(x) for x in data["main_losses"]]
    i_hid, i_low = (int(v) for v in data["main_index"])
    lo, hid = float(data["polarity_lows"][i_low]), int(data["hids"][i_hid])
    fig, axes = plt.subplots(1, len(losses) + 1, figsize=(5.2 * (len(losses) + 1), 4.2))
    for ax, loss in zip(axes, losses):
        corr = data[f"main_{loss}"]  # (E, S, depth)
        depth = corr.shape[-1]
        colors = plt.cm.viridis(np.linspace(0.0, 0.85, depth))
        for t, name in enumerate(_level_names(depth)):
            ax.plot(step, corr[:, :, t].mean(axis=1), color=colors[t], lw=2.4 if t == 0 else 1.6, label=name)
            ax.fill_between(step, corr[:, :, t].min(axis=1), corr[:, :, t].max(axis=1), color=colors[t], alpha=0.15)
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel("SGD step")
        ax.set_ylabel("best |corr(unit, latent)|, mean over level")
        ax.set_title(f"{loss}: |rho| ~ U[{lo:g}, 1], hid = {hid}, {corr.shape[1]} seeds")
        ax.legend(loc="lower right", frameon=False, fontsize=8)
    ax = axes[-1]
    curves = {str(data["sweep_loss"]): data["sweep_train_loss"][i_hid][:, i_low], losses[-1]: data["other_train_loss"]}
    for name, loss_curve in curves.items():
        ax.plot(np.arange(1, loss_curve.shape[0] + 1), loss_curve.mean(axis=1), lw=1.2, label=name)
    ax.set_xlabel("SGD step")
    ax.set_ylabel("training loss (seed mean)")
    ax.set_title("losses (on l2-normalised outputs)")
    ax.legend(frameon=False)
    return finish(fig, out, run_dir / TRAINING)


def plot_hltm_sweep(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Final correlation against polarity range and hid; saved to ``run_dir/hltm_sweep.png`` by default."""
    run_dir = Path(run_dir)
    data = load_npz(run_dir / "curves.npz")
    plt = pyplot()
    sweep = data["sweep"]  # (n_hid, n_low, E, S, depth)
    lows, hids = data["polarity_lows"], data["hids"]
    final, init = sweep[:, :, -1].mean(axis=2), sweep[:, :, 0].mean(axis=2)  # (n_hid, n_low, depth)
    views = {"root": lambda a: a[..., 0], "mean over levels": lambda a: a.mean(axis=-1)}
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    for col, (what, pick) in enumerate(views.items()):
        ax = axes[2 * col]
        colors = plt.cm.plasma(np.linspace(0.0, 0.8, len(hids)))
        for i, h in enumerate(hids):
            ax.plot(lows, pick(final[i]), "o-", color=colors[i], label=f"hid = {int(h)}")
            ax.plot(lows, pick(init[i]), "o:", color=colors[i], alpha=0.5)
        ax.set_xlabel("polarity range lower end lo (|rho| ~ U[lo, 1])")
        ax.set_ylabel(f"best |corr|, {what}")
        ax.set_title(f"{what} vs polarity (dotted: initialisation)")
        ax.legend(frameon=False, fontsize=8)
        ax = axes[2 * col + 1]
        colors = plt.cm.cividis(np.linspace(0.0, 0.8, len(lows)))
        for j, lo in enumerate(lows):
            ax.plot(hids, pick(final[:, j]), "s-", color=colors[j], label=f"lo = {float(lo):g}")
            ax.plot(hids, pick(init[:, j]), "s:", color=colors[j], alpha=0.5)
        ax.set_xticks(hids, [str(int(h)) for h in hids])
        ax.set_xlabel("units per latent node (hid)")
        ax.set_ylabel(f"best |corr|, {what}")
        ax.set_title(f"{what} vs over-parameterisation")
        ax.legend(frameon=False, fontsize=8)
    for ax in axes:
        ax.set_ylim(0.0, 1.02)
    fig.suptitle(f"final ({str(data['sweep_loss'])}, seed mean over {sweep.shape[3]} seeds) and initial correlation")
    return finish(fig, out, run_dir / SWEEP)
