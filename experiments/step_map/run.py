"""Runner of the step map: train every cell (a ``stepwise_deep`` CPU run), detect its steps, write the map.

Writes to ``out_dir`` (each file atomically, results.json last): ``step_map.npz`` (the axes; per cell (L, H, R, W) =
(loss, head scale, learning rate, width) the step statistics of :func:`stepwise.compare.detect_steps` and the tracked
spectra and losses they were computed from; the standard-initialisation runs of theory note E4), ``step_map.png``
(drawn from the npz) and ``results.json``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from experiments.step_map.config import STANDARD_HEAD_SCALE, StepMapConfig
from experiments.stepwise_deep.config import DeepConfig
from experiments.stepwise_deep.run import train_network
from stepwise import compare, io
from stepwise.compare.step_map import STATISTICS, best_cell, cell_statistics, map_checks
from stepwise.errors import DivergenceError
from stepwise.training import compilation_cache

EXPERIMENT = "step_map"
DATA = "step_map.npz"


@dataclasses.dataclass(frozen=True)
class Cell:
    """What one trained cell gave: its statistics (NaN when diverged) and tracked series (NaN-padded)."""

    stats: dict[str, float]
    diverged: bool
    step: np.ndarray
    eigenvalues: np.ndarray
    eval_loss: np.ndarray
    train_time_s: float


def train_cell(dcfg: DeepConfig, points: int) -> Cell:
    """Train one ``stepwise_deep`` run and detect its steps; a run that diverges (NaN/inf) is a cell marked so."""
    d = dcfg.d
    try:
        res = train_network(dcfg).result
    except DivergenceError:
        nan = np.full(points, np.nan)
        return Cell({k: np.nan for k in STATISTICS}, True, nan, np.full((points, d), np.nan), nan, np.nan)
    t = res.step.astype(np.float64)
    det = compare.detect_steps(t, res.cov_out, res.eval_loss)
    return Cell(cell_statistics(det), False, t, np.asarray(res.cov_out, np.float64),
                np.asarray(res.eval_loss, np.float64), float(res.train_time_s))


def run(cfg: StepMapConfig, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Train every cell, write ``step_map.npz``, the figure and results.json. Returns the results dictionary."""
    from stepwise.plots.step_map import FIGURE, plot_step_map

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    L, H, R, W = len(cfg.losses), len(cfg.head_scales), len(cfg.lrs), len(cfg.widths)
    P = cfg.track_points + 1
    d = max(DeepConfig.for_loss(loss).d for loss in cfg.losses)
    stats = {k: np.full((L, H, R, W), np.nan) for k in STATISTICS}
    diverged = np.zeros((L, H, R, W), dtype=bool)
    steps = np.zeros((L, H, R, W), dtype=np.int64)
    train_time = np.full((L, H, R, W), np.nan)
    step_t = np.full((L, H, R, W, P), np.nan)
    eig = np.full((L, H, R, W, P, d), np.nan)
    loss_t = np.full((L, H, R, W, P), np.nan)
    std = {k: np.full(L, np.nan) for k in STATISTICS}
    std_diverged = np.zeros(L, dtype=bool)
    std_from_map = np.zeros(L, dtype=bool)
    std_lr, std_width = np.zeros(L), np.zeros(L, dtype=np.int64)
    std_step, std_eig, std_loss = np.full((L, P), np.nan), np.full((L, P, d), np.nan), np.full((L, P), np.nan)
    default = np.full((L, 3), -1, dtype=np.int64)

    def put(cell: Cell, index):
        k = cell.eigenvalues.shape[1]
        for name in STATISTICS:
            stats[name][index] = cell.stats[name]
        diverged[index], train_time[index] = cell.diverged, cell.train_time_s
        step_t[index], loss_t[index], eig[index][:, :k] = cell.step, cell.eval_loss, cell.eigenvalues

    done = 0
    with compilation_cache():
        for i, loss in enumerate(cfg.losses):
            default[i] = cfg.default_cell(loss) or (-1, -1, -1)
            for a, h in enumerate(cfg.head_scales):
                for b, lr in enumerate(cfg.lrs):
                    for c, w in enumerate(cfg.widths):
                        dcfg = cfg.cell_config(loss, h, lr, w)
                        steps[i, a, b, c] = dcfg.train.steps
                        cell = train_cell(dcfg, P)
                        put(cell, (i, a, b, c))
                        done += 1
                        if progress:
                            found = ("diverged" if cell.diverged else
                                     "%d separated of %d learned" % (cell.stats["n_steps"], cell.stats["n_learned"]))
                            print(f"step_map {done}/{cfg.n_cells} {loss} head {h:g} lr {lr:g} width {w}: {found}"
                                  f" ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
            scfg = cfg.standard_config(loss)
            std_lr[i], std_width[i] = scfg.train.lr, scfg.net.hidden[0]
            b, c = cfg.lrs.index(scfg.train.lr), cfg.widths.index(scfg.net.hidden[0])
            a = cfg.head_scales.index(STANDARD_HEAD_SCALE)
            if cfg.cell_config(loss, STANDARD_HEAD_SCALE, scfg.train.lr, scfg.net.hidden[0]) == scfg:
                std_from_map[i] = True
                for name in STATISTICS:
                    std[name][i] = stats[name][i, a, b, c]
                std_diverged[i] = diverged[i, a, b, c]
                std_step[i], std_loss[i], std_eig[i] = step_t[i, a, b, c], loss_t[i, a, b, c], eig[i, a, b, c]
            else:
                cell = train_cell(scfg, P)
                for name in STATISTICS:
                    std[name][i] = cell.stats[name]
                std_diverged[i] = cell.diverged
                k = cell.eigenvalues.shape[1]
                std_step[i], std_loss[i], std_eig[i][:, :k] = cell.step, cell.eval_loss, cell.eigenvalues

    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "losses": np.array(cfg.losses), "head_scales": np.array(cfg.head_scales, dtype=np.float64),
        "lrs": np.array(cfg.lrs, dtype=np.float64), "widths": np.array(cfg.widths, dtype=np.int64),
        **stats, "diverged": diverged, "steps": steps, "train_time_s": train_time, "step": step_t,
        "eigenvalues": eig, "eval_loss": loss_t, "default_cell": default, "min_steps": np.int64(cfg.min_steps),
        **{f"standard_{k}": v for k, v in std.items()}, "standard_diverged": std_diverged,
        "standard_from_map": std_from_map, "standard_lr": std_lr, "standard_width": std_width,
        "standard_step": std_step, "standard_eigenvalues": std_eig, "standard_eval_loss": std_loss,
    }
    io.save_npz_atomic(out_dir / DATA, **data)
    checks = map_checks(io.load_npz(out_dir / DATA), min_steps=cfg.min_steps)
    figure = plot_step_map(out_dir)
    per_loss = {}
    for i, loss in enumerate(cfg.losses):
        s = {k: data[k][i] for k in STATISTICS}
        best = best_cell(s)
        per_loss[loss] = {
            "best_cell": None if best is None else {
                "head_scale": cfg.head_scales[best[0]], "lr": cfg.lrs[best[1]], "width": cfg.widths[best[2]],
                **{k: float(v[best]) for k, v in s.items()}},
            "default_cell": None if default[i][0] < 0 else {
                "head_scale": cfg.head_scales[default[i][0]], "lr": cfg.lrs[default[i][1]],
                "width": cfg.widths[default[i][2]], **{k: float(v[tuple(default[i])]) for k, v in s.items()}},
            "standard_init": {"lr": float(std_lr[i]), "width": int(std_width[i]), "from_map": bool(std_from_map[i]),
                              "diverged": bool(std_diverged[i]), **{k: float(std[k][i]) for k in STATISTICS}},
            "n_steps_grid": s["n_steps"], "separated_fraction_grid": s["separated_fraction"],
            "train_time_s": float(np.nansum(train_time[i])),
        }
    summary = {"axes": ["head_scale", "lr", "width"], "cells": cfg.n_cells, "per_loss": per_loss,
               "steps_per_lr": {loss: [cfg.steps_for(loss, lr) for lr in cfg.lrs] for loss in cfg.losses}}
    return io.write_results(
        out_dir, experiment=EXPERIMENT, config=dataclasses.asdict(cfg), checks=checks,
        wall_time_s=time.perf_counter() - t0,
        extra={"summary": summary, "figures": [FIGURE], "data": [DATA]},
    )
