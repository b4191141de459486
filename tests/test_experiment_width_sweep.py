"""The width_sweep experiment end to end (smoke config), its monotonicity statistic and its config errors."""

import json

import numpy as np
import pytest

from experiments.width_sweep import WidthSweepConfig, run
from experiments.width_sweep.run import monotone_violation
from stepwise import io

KINDS = {"gram_error_monotone_in_width": "theory", "projector_distance_monotone_in_width": "theory",
         "widest_gram_vs_random_function": "baseline", "widest_gram_rel_error": "reported",
         "gram_error_loglog_slope": "reported", "kernel_limit_gram_rel_error": "theory", "final_loss_max": "theory"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("width_sweep")
    return WidthSweepConfig.smoke(), run(WidthSweepConfig.smoke(), out), out


def test_smoke_run_passes_and_distance_falls_with_width(smoke):
    cfg, res, out = smoke
    assert {c["name"]: c["kind"] for c in res["checks"]} == KINDS
    for c in res["checks"]:
        if c["kind"] == "reported":
            assert c["passed"] is None and c["reason"], c
        else:
            assert c["passed"], f"{c['name']} = {c['value']} (needs {c['op']} {c['threshold']})"
    assert res["passed"] is True and json.loads((out / "results.json").read_text()) == res
    assert res["figures"] == ["width_sweep.png"] and (out / "width_sweep.png").stat().st_size > 10_000
    data = io.load_npz(out / "width_sweep.npz")
    per = res["summary"]["per_width"]
    assert [p["width"] for p in per] == list(cfg.widths) == data["widths"].tolist()
    seeds = np.array([p["gram_inf_seeds"] for p in per]).T  # (n_seeds, widths)
    assert seeds.shape == (cfg.n_seeds, len(cfg.widths)) and cfg.n_seeds >= 3
    np.testing.assert_allclose(seeds, data["gram_inf_seeds"])  # the same float64 numbers via JSON and npz: exact
    gram = seeds.mean(axis=0)
    np.testing.assert_allclose(gram, data["gram_inf"])
    assert len({tuple(p["init_seeds"]) for p in per}) == len(per)  # every network has its own initialisation
    assert len(set(per[0]["init_seeds"])) == cfg.n_seeds
    # The checks' values are the statistics of the saved distances, recomputed here.
    check = {c["name"]: c for c in res["checks"]}
    assert check["gram_error_monotone_in_width"]["value"] == pytest.approx(monotone_violation(gram))
    assert check["widest_gram_rel_error"]["value"] == pytest.approx(gram[-1])
    null = data["random_gram"][-1]
    assert null.size == cfg.n_draws == 20
    base = check["widest_gram_vs_random_function"]
    assert base["threshold"] == pytest.approx(null.mean() - 2 * null.std())
    assert base["value"] == pytest.approx(seeds[:, -1].max())
    # Real separation, not noise: the widest nets are closer than the narrowest ones, far below random functions
    # of the same kernel, and closer still to their own NTK at initialisation.
    assert gram[-1] < 0.5 * gram[0] and seeds[:, -1].max() < 0.5 * null.mean()
    assert per[-1]["gram_emp"] < gram[-1]
    # Every network reached the loss plateau ~0, and the kernel machine itself matches the prediction tightly.
    assert max(max(p["final_loss_seeds"]) for p in per) < 1e-12
    assert check["kernel_limit_gram_rel_error"]["value"] == res["summary"]["kernel_limit"]["gram"] < 1e-2


def test_monotone_violation_against_a_loop():
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = rng.uniform(0.1, 1.0, size=5)
        ref = max((v[i + 1] - v[i]) / v[i] for i in range(4))
        assert monotone_violation(v) == pytest.approx(ref)
    assert monotone_violation([4.0, 2.0, 1.0]) == pytest.approx(-0.5)
    assert monotone_violation([1.0, 1.5]) == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs, match", [
    ({"widths": (64,)}, "widths"),
    ({"widths": (256, 64)}, "widths"),
    ({"d": 0}, "d must be"),
    ({"init_scale": 1.0}, "init_scale"),
    ({"lr_scale": 1.0}, "lr_scale"),
    ({"n_pairs": 1}, "n_pairs"),
    ({"n_seeds": 0}, "n_seeds"),
    ({"n_draws": 1}, "n_draws"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WidthSweepConfig(**kwargs)


def test_crop_too_large_fails_before_compute(tmp_path):
    with pytest.raises(ValueError, match="does not fit"):
        run(WidthSweepConfig(n_pairs=4, n_test=2, widths=(8, 16), crop=100), tmp_path)
    assert not (tmp_path / "results.json").exists()
