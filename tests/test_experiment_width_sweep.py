"""The width_sweep experiment end to end (smoke config), its monotonicity statistic and its config errors."""

import json

import numpy as np
import pytest

from experiments.width_sweep import WidthSweepConfig, run
from experiments.width_sweep.run import monotone_violation
from stepwise import io

CHECKS = {"gram_error_monotone_in_width", "projector_distance_monotone_in_width", "widest_gram_rel_error",
          "final_loss_max"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("width_sweep")
    return WidthSweepConfig.smoke(), run(WidthSweepConfig.smoke(), out), out


def test_smoke_run_passes_and_distance_falls_with_width(smoke):
    cfg, res, out = smoke
    assert {c["name"] for c in res["checks"]} == CHECKS
    for c in res["checks"]:
        assert c["passed"], f"{c['name']} = {c['value']} (needs {c['op']} {c['threshold']})"
    assert res["passed"] is True and json.loads((out / "results.json").read_text()) == res
    assert res["figures"] == ["width_sweep.png"] and (out / "width_sweep.png").stat().st_size > 10_000
    data = io.load_npz(out / "width_sweep.npz")
    per = res["summary"]["per_width"]
    assert [p["width"] for p in per] == list(cfg.widths) == data["widths"].tolist()
    gram = np.array([p["gram_inf"] for p in per])
    np.testing.assert_allclose(gram, data["gram_inf"])  # the same float64 numbers via JSON and npz: exact
    # The checks' values are the statistics of the saved distances, recomputed here.
    value = {c["name"]: c["value"] for c in res["checks"]}
    assert value["gram_error_monotone_in_width"] == pytest.approx(monotone_violation(gram))
    assert value["widest_gram_rel_error"] == pytest.approx(gram[-1])
    # Real separation, not noise: the widest net is several times closer than the narrowest, far below a random
    # function of the same kernel, and closer still to its own NTK at initialisation.
    assert gram[-1] < 0.5 * gram[0] and gram[-1] < 0.5 * per[-1]["random_gram_inf"]
    assert per[-1]["gram_emp"] < gram[-1]
    # Every width reached the loss plateau ~0, and the kernel machine itself matches the prediction tightly.
    assert max(p["final_loss"] for p in per) < 1e-12
    assert res["summary"]["kernel_limit"]["gram"] < 1e-2


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
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WidthSweepConfig(**kwargs)


def test_crop_too_large_fails_before_compute(tmp_path):
    with pytest.raises(ValueError, match="does not fit"):
        run(WidthSweepConfig(n_pairs=4, n_test=2, widths=(8, 16), crop=100), tmp_path)
    assert not (tmp_path / "results.json").exists()
