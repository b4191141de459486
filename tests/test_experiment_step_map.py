"""The step map end to end (smoke grid): its files, every check's value recomputed from the saved npz, and its config
errors refused by the command line before any compute."""

import dataclasses
import json

import numpy as np
import pytest

import stepwise.cli as cli
from experiments.step_map import StepMapConfig, run
from experiments.step_map.config import STANDARD_HEAD_SCALE
from stepwise import compare, io
from stepwise.compare.step_map import STATISTICS, map_checks
from helpers import api_smoke_run

PER_LOSS_KINDS = {"max_separated_steps": "theory", "stepwise_region": "reported",
                  "best_cell_separated_fraction": "reported", "diverged_cells": "reported",
                  "e4_standard_init_steps": "reported", "e4_standard_init_flat_plateaus": "reported"}


smoke = api_smoke_run(StepMapConfig.smoke, run, with_config=True)


def test_smoke_writes_results_data_and_figure(smoke):
    cfg, res, out = smoke
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "step_map.npz", "step_map.png"]
    assert json.loads((out / "results.json").read_text()) == res
    assert res["figures"] == ["step_map.png"] and (out / "step_map.png").stat().st_size > 10_000
    kinds = {f"{name}_{loss}": kind for loss in cfg.losses for name, kind in PER_LOSS_KINDS.items()}
    assert {c["name"]: c["kind"] for c in res["checks"]} == {**kinds, "learned_modes_accounted": "consistency"}
    for c in res["checks"]:
        assert c["reason"], c
        if c["kind"] == "reported":
            assert c["passed"] is None, c
    theory = [c for c in res["checks"] if c["kind"] == "theory"]
    assert all(c["threshold"] == 4 and c["op"] == ">=" for c in theory)
    assert res["passed"] is all(c["passed"] for c in res["checks"] if c["kind"] != "reported")
    data = io.load_npz(out / "step_map.npz")
    shape = (len(cfg.losses), len(cfg.head_scales), len(cfg.lrs), len(cfg.widths))
    assert data["n_steps"].shape == shape == data["diverged"].shape
    assert data["eigenvalues"].shape == (*shape, cfg.track_points + 1, 16)
    assert [str(v) for v in data["losses"]] == list(cfg.losses)
    # every cell trained lr x steps equal to its loss's CPU default's (times duration), to a tracking interval
    for i, loss in enumerate(cfg.losses):
        for b, lr in enumerate(cfg.lrs):
            assert (data["steps"][i, :, b] == cfg.steps_for(loss, lr)).all()
    assert (data["default_cell"] == -1).all()  # the smoke grid holds no CPU default (width 32)


def test_every_check_value_recomputed_from_the_npz(smoke):
    cfg, res, out = smoke
    data = io.load_npz(out / "step_map.npz")
    checks = {c["name"]: c for c in res["checks"]}
    # the per-cell statistics are those of the step detection on the saved spectra and losses
    L, H, R, W = data["n_steps"].shape
    for index in np.ndindex(L, H, R, W):
        if data["diverged"][index]:
            assert all(np.isnan(data[k][index]) for k in STATISTICS)
            continue
        det = compare.detect_steps(data["step"][index], data["eigenvalues"][index], data["eval_loss"][index])
        assert data["n_steps"][index] == det.n_steps
        assert data["n_learned"][index] == det.n_learned
        assert data["separated_fraction"][index] == pytest.approx(det.separated_fraction)
        assert data["flat_plateaus"][index] == det.n_plateaus
        assert data["n_merged"][index] == len(det.merged)
        assert data["rank_max_increment"][index] == np.max(np.diff(det.rank))
    accounted_bad = 0
    for i, loss in enumerate(cfg.losses):
        n = data["n_steps"][i]
        ok = np.isfinite(n)
        assert checks[f"max_separated_steps_{loss}"]["value"] == (n[ok].max() if ok.any() else 0)
        assert checks[f"max_separated_steps_{loss}"]["passed"] == bool(ok.any() and n[ok].max() >= 4)
        assert checks[f"stepwise_region_{loss}"]["value"] == int(np.sum(n[ok] >= 4))
        assert checks[f"diverged_cells_{loss}"]["value"] == int(data["diverged"][i].sum())
        # best cell: most separated steps, then the highest separated fraction, then the most flat plateaus
        best = max((idx for idx in np.ndindex(n.shape) if ok[idx]),
                   key=lambda idx: (n[idx], data["separated_fraction"][i][idx], data["flat_plateaus"][i][idx]))
        assert checks[f"best_cell_separated_fraction_{loss}"]["value"] == pytest.approx(
            data["separated_fraction"][i][best])
        # E4: the standard-initialisation run, redetected from its saved spectra
        det = compare.detect_steps(data["standard_step"][i], data["standard_eigenvalues"][i],
                                   data["standard_eval_loss"][i])
        assert checks[f"e4_standard_init_steps_{loss}"]["value"] == det.n_steps == data["standard_n_steps"][i]
        assert checks[f"e4_standard_init_flat_plateaus_{loss}"]["value"] == det.n_plateaus
        # Barlow Twins and VICReg start from every kernel at scale 1: their standard run is the map's head-1 cell;
        # SimCLR's CPU default shrinks every kernel (0.3), so its standard run is one of its own
        assert bool(data["standard_from_map"][i]) == (loss != "simclr")
        if data["standard_from_map"][i]:
            a = cfg.head_scales.index(STANDARD_HEAD_SCALE)
            b, c = cfg.lrs.index(data["standard_lr"][i]), cfg.widths.index(data["standard_width"][i])
            np.testing.assert_array_equal(data["standard_eigenvalues"][i], data["eigenvalues"][i, a, b, c])
        for stats in ((data["n_steps"][i], data["n_merged"][i], data["n_learned"][i]),
                      (data["standard_n_steps"][i:i + 1], data["standard_n_merged"][i:i + 1],
                       data["standard_n_learned"][i:i + 1])):
            s, m, learned = (np.asarray(x)[np.isfinite(stats[0])] for x in stats)
            accounted_bad += int(np.sum(s + m != learned))
    assert checks["learned_modes_accounted"]["value"] == accounted_bad == 0
    again = {c.name: c for c in map_checks(data, min_steps=cfg.min_steps)}  # the runner's function on the npz
    assert again.keys() == checks.keys()
    for name, c in again.items():  # the same float64 numbers: exact up to JSON's float repr
        np.testing.assert_allclose(c.value, float(checks[name]["value"]), rtol=1e-12)
        assert c.passed == checks[name]["passed"]


def test_cells_are_stepwise_deep_runs():
    cfg = StepMapConfig()
    assert cfg.n_cells == 96
    cell = cfg.cell_config("vicreg", 1e-12, 0.02, 256)
    assert (cell.train.steps, cell.train.track_every, cell.net.hidden, cell.net.head_scale) == (1500, 25, (256, 256),
                                                                                                1e-12)
    assert cfg.cell_config("barlow_twins", 1e-12, 0.01, 64).train.steps == 6000  # lr x steps = 0.02 x 3000
    assert cfg.default_cell("vicreg") == (0, 1, 1) and cfg.default_cell("simclr") == (3, 1, 1)
    std = cfg.standard_config("simclr")
    assert (std.net.init_scale, std.net.head_scale, std.train.lr, std.net.hidden) == (1.0, 1.0, 0.02, (256, 256))


class ComputeStarted(BaseException):
    """Raised by the stand-in runner: validation let a bad value through to the compute."""


@pytest.mark.parametrize("flags, field", [
    (["--head-scales", "1e-12", "1e-6"], "head_scales must include 1"),
    (["--lrs", "0.04", "0.02"], "lrs must be strictly increasing"),
    (["--lrs", "0", "0.02"], "every value of lrs must be finite and > 0"),
    (["--widths", "0", "64"], "every value of widths must be finite and > 0"),
    (["--losses", "barlow_twinz"], "barlow_twinz"),
    (["--losses"], "losses must name at least one loss"),
    (["--duration", "nan"], "duration must be finite"),
    (["--track-points", "2"], "track_points must be >= 4"),
    (["--batch-size", "4000"], "batch_size 4000 exceeds n_train"),
])
def test_bad_grid_exits_2_before_compute(flags, field, monkeypatch, capsys, tmp_path):
    experiments = cli._experiments

    def blocked():
        def no_compute(*args, **kwargs):
            raise ComputeStarted("a run started although its config was invalid")
        return {name: dataclasses.replace(e, run=no_compute) for name, e in experiments().items()}

    monkeypatch.setattr(cli, "_experiments", blocked)
    out = tmp_path / "x"
    try:
        code = cli.main(["run", "step_map", "--smoke", *flags, "--out", str(out)])
    except SystemExit as exc:  # the config's ValueError raised inside tyro
        code = exc.code
    captured = capsys.readouterr()
    message = " ".join((captured.err + captured.out).replace("│", " ").split())
    assert code == 2, message
    assert field in message and "Traceback" not in message
    assert not out.exists()
