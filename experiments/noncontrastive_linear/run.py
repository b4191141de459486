"""Runner for the linear non-contrastive experiment (Tian, Chen & Ganguli 2021; theory note tian2021, checklist A).

Integrates the linear BYOL / SimSiam model (Lemma 1) and its per-mode reduction (Eqns 11-13) with diffrax in float64
and checks the paper's results A1-A9 and Fig. 9 with :data:`stepwise.compare.tian2021.LINEAR_CHECKS` (public
functions, one per item of the note's checklist A; the tests call the same functions). Writes to ``out_dir``, each
atomically: ``noncontrastive_linear.npz`` (every trajectory and grid the figures use), then the figures drawn from
it (``phase_portrait.png``, ``eigenvalues.png``, ``theorems.png``), then ``results.json`` last.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from stepwise._compat import enable_x64
from experiments.noncontrastive_linear.config import NoncontrastiveLinearConfig
from stepwise import compare, io
from stepwise.compare.tian2021 import LINEAR_CHECKS, phase_portrait_data

EXPERIMENT = "noncontrastive_linear"
DATA = "noncontrastive_linear.npz"


def run(cfg: NoncontrastiveLinearConfig, out_dir: str | Path, *, progress: bool = False) -> dict:
    """Run the experiment and write its files to ``out_dir``. Returns the results dictionary."""
    from stepwise.plots.noncontrastive import plot_noncontrastive_linear

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    data: dict = {}
    summary: dict = {}
    checks: list[compare.Check] = []
    with enable_x64(True):
        for i, part in enumerate(LINEAR_CHECKS, start=1):
            if progress:
                print(f"[{EXPERIMENT}] {part.__name__} ({i}/{len(LINEAR_CHECKS)}, "
                      f"{time.perf_counter() - t0:.1f} s)", flush=True)
            checks += part(cfg, data, summary)
        phase_portrait_data(cfg, data)
    out_dir.mkdir(parents=True, exist_ok=True)
    io.save_npz_atomic(out_dir / DATA, **data)
    figures = plot_noncontrastive_linear(out_dir)
    return io.write_results(
        out_dir,
        experiment=EXPERIMENT,
        config=dataclasses.asdict(cfg),
        checks=checks,
        wall_time_s=time.perf_counter() - t0,
        extra={"summary": summary, "figures": [f.name for f in figures], "data": [DATA]},
    )
