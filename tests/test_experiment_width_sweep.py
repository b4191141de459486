"""The width_sweep experiment end to end (smoke config), its monotonicity statistic and its config errors."""

import json

import numpy as np
import pytest

from experiments.width_sweep import WidthSweepConfig, run
from stepwise import compare, io
from stepwise.compare.width_sweep import STEP_ERROR_TARGET, monotone_violation, step_time_statistics
from stepwise.data import KernelPairData
from stepwise.theory import linear
from helpers import api_smoke_run, assert_verdicts

KINDS = {"gram_error_monotone_in_width": "theory", "projector_distance_monotone_in_width": "theory",
         "widest_gram_vs_random_function": "baseline", "widest_gram_rel_error": "reported",
         "gram_error_loglog_slope": "reported", "kernel_limit_gram_rel_error": "theory", "final_loss_max": "theory",
         "step_time_error_monotone_in_width": "theory", "step_time_rel_error_widest": "theory",
         "step_time_rel_error_max": "reported", "first_step_rel_error_widest": "reported",
         "linearised_vs_net_step_rel_diff": "reported", "linearised_step_time_rel_error": "reported"}
# Gated, but not expected to pass at the smoke's widths (<= 512): the README's width_sweep section says why (the
# output blocks of a finite net's NTK reseed every later mode far above the initial scale). Asserted below for its
# structure and its value, not its verdict.
TARGET_CHECK = "step_time_rel_error_widest"


smoke = api_smoke_run(WidthSweepConfig.smoke, run, with_config=True)


def test_smoke_run_passes_and_distance_falls_with_width(smoke):
    cfg, res, out = smoke
    assert {c["name"]: c["kind"] for c in res["checks"]} == KINDS
    assert_verdicts(res, skip={TARGET_CHECK})
    target = {c["name"]: c for c in res["checks"]}[TARGET_CHECK]
    assert res["passed"] is target["passed"] and json.loads((out / "results.json").read_text()) == res
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


def test_step_time_checks_are_recomputed_from_the_saved_arrays(smoke):
    cfg, res, out = smoke
    data = io.load_npz(out / "width_sweep.npz")
    check = {c["name"]: c for c in res["checks"]}
    n_w, d = len(cfg.widths), res["summary"]["d"]
    pred, meas = data["pred_steps"], data["meas_steps"]
    assert pred.shape == meas.shape == (cfg.n_seeds, n_w, d) and np.all(np.isfinite(meas))
    # Predicted: the exact per-mode GD map of each net's own NTK eigenvalues and Gram-Schmidt amplitudes at its lr,
    # sorted (the j-th step event).
    for s in range(cfg.n_seeds):
        for i in range(n_w):
            steps = linear.map_crossing_steps(data["pred_gammas"][s, i], data["pred_amplitudes"][s, i],
                                              float(data["lr_seeds"][s, i]))
            np.testing.assert_allclose(np.sort(steps), pred[s, i], rtol=1e-12)
    # Measured: the j-th largest eigenvalue of C reaching 1/2 (logit-interpolated), from the first seed's curves.
    for i in range(n_w):
        eig = data["eig_curves"][i]
        eig = eig[np.isfinite(eig[:, 0])]
        t = np.arange(eig.shape[0], dtype=np.float64)
        np.testing.assert_allclose(compare.crossing_times(t, eig, 0.5, interp="logit"), meas[0, i], rtol=1e-12)
        # The recorded eigenvalues are those of the C the loss compares with I: ||C - I||_F^2 = sum_j (1 - l_j)^2
        # (float64 round-off of an O(d) sum: 1e-12 leaves a factor 1e3 over d eps).
        loss = data["loss_curves"][i][: eig.shape[0]]
        np.testing.assert_allclose(np.sum((1.0 - eig) ** 2, axis=1), loss, rtol=1e-9, atol=1e-12)
    stats = step_time_statistics(pred, meas)
    median = np.array([[np.median(np.abs(pred[s, i] - meas[s, i]) / meas[s, i]) for i in range(n_w)]
                       for s in range(cfg.n_seeds)])
    np.testing.assert_allclose(stats["median"], median, rtol=1e-12)
    assert check["step_time_error_monotone_in_width"]["value"] == pytest.approx(monotone_violation(median.mean(0)))
    assert check["step_time_error_monotone_in_width"]["threshold"] == cfg.monotone_tolerance
    target = check[TARGET_CHECK]
    assert target["value"] == pytest.approx(median[:, -1].mean()) and target["threshold"] == STEP_ERROR_TARGET == 0.1
    assert target["passed"] is (target["value"] <= 0.1)
    assert check["step_time_rel_error_max"]["value"] == pytest.approx((np.abs(pred - meas) / meas)[:, -1].max())
    per = res["summary"]["per_width"]
    np.testing.assert_allclose([p["step_err_max"] for p in per], (np.abs(pred - meas) / meas).max(axis=(0, 2)))
    # The first step grows before any mode is learned: there the kernel theory on the own NTK is as exact as for a
    # kernel machine, within theory note 6.3's per-mode criterion of 5% at the widest width.
    first = check["first_step_rel_error_widest"]["value"]
    assert first == pytest.approx((np.abs(pred - meas) / meas)[:, -1, 0].max()) and first < 0.05
    # The first widest net's linearisation at theta_0: its steps, its distance to the net and to the prediction.
    lin = data["meas_steps_linearised"]
    assert lin.shape == (d,) and np.all(np.isfinite(lin))
    lin_vs_net = check["linearised_vs_net_step_rel_diff"]["value"]
    assert lin_vs_net == pytest.approx(np.max(np.abs(lin - meas[0, -1]) / meas[0, -1]))
    assert check["linearised_step_time_rel_error"]["value"] == pytest.approx(
        np.median(np.abs(pred[0, -1] - lin) / lin))
    # A model with the net's exact NTK at initialisation is at least as close to the net as the output-averaged
    # kernel theory is: the net is in the kernel regime, whatever the theory misses.
    assert lin_vs_net <= np.max(np.abs(pred[0, -1] - meas[0, -1]) / meas[0, -1])


def test_step_time_statistics_by_hand():
    pred = np.array([[[110.0, 200.0], [99.0, 330.0]]])  # (1 seed, 2 widths, d = 2)
    meas = np.array([[[100.0, 400.0], [100.0, 300.0]]])
    stats = step_time_statistics(pred, meas)
    np.testing.assert_allclose(stats["rel"], [[[0.1, -0.5], [-0.01, 0.1]]])
    np.testing.assert_allclose(stats["median"], [[0.3, 0.055]])
    np.testing.assert_allclose(stats["mean_median"], [0.3, 0.055])
    np.testing.assert_allclose(stats["max"], [0.5, 0.1])
    meas[0, 1, 1] = np.nan  # a mode that never reached 1/2 poisons its width's statistics (and fails the checks)
    assert np.isnan(step_time_statistics(pred, meas)["mean_median"][1])


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
    ({"data": {"n_pairs": 1}}, "n_pairs"),
    ({"data": {"n_test": 0}}, "n_test must be >= 2"),  # the held-out Gram checks need held-out images
    ({"n_seeds": 0}, "n_seeds"),
    ({"n_draws": 1}, "n_draws"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WidthSweepConfig(**{k: KernelPairData(**v) if k == "data" else v for k, v in kwargs.items()})


def test_crop_too_large_fails_before_compute(tmp_path):
    with pytest.raises(ValueError, match="does not fit"):
        run(WidthSweepConfig(data=KernelPairData(n_pairs=4, n_test=2, crop=100), widths=(8, 16)), tmp_path)
    assert not (tmp_path / "results.json").exists()
