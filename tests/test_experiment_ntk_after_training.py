"""The ntk_after_training experiment end to end (smoke config): files, statistics recomputed from saved data, errors."""

import json

import numpy as np
import pytest

from experiments.ntk_after_training import NtkAfterTrainingConfig, run
from stepwise import cli, compare, io
from helpers import api_smoke_run

LOSSES = ("barlow_twins", "simclr", "vicreg")


smoke = api_smoke_run(NtkAfterTrainingConfig.smoke, run, with_config=True)


def test_smoke_run_writes_results_and_figure(smoke):
    cfg, res, out = smoke
    assert json.loads((out / "results.json").read_text()) == res
    by_name = {c["name"]: c for c in res["checks"]}
    # A similarity check is gated against its random-function baseline unless that baseline reaches 1, the largest
    # possible similarity (few held-out points in the smoke run): then no run could pass and it is reported instead.
    for loss in LOSSES:
        c = by_name[f"ntk_similarity_{loss}"]
        assert c["kind"] == ("reported" if c["threshold"] >= 1.0 else "baseline"), c
    gated = [c for c in res["checks"] if c["kind"] != "reported"]
    similarity = [f"ntk_similarity_{loss}" for loss in LOSSES
                  if by_name[f"ntk_similarity_{loss}"]["kind"] != "reported"]
    assert [c["name"] for c in gated] == similarity + ["cross_method_margin_min"]
    assert all(c["kind"] == "baseline" for c in gated)  # each threshold is a null's mean + 2 std
    for c in gated:
        assert {"name", "value", "threshold", "passed", "reason", "kind"} <= set(c)
        assert c["passed"] == (c["value"] >= c["threshold"])
    assert res["passed"] == all(c["passed"] for c in gated)
    # Step order and onset slope per method are shown, not gated (theory note 6.11: report, do not gate).
    reported = {c["name"]: c for c in res["checks"]
                if c["kind"] == "reported" and not c["name"].startswith("ntk_similarity_")}
    for name, c in reported.items():
        assert c["passed"] is None and c["reason"], c
        loss = next(loss for loss in LOSSES if name.endswith(loss))
        order = res["summary"]["per_method"][loss]["order_final_ntk"]
        key = "kendall_tau" if name.startswith("step_order_kendall_tau_") else "loglog_slope"
        assert name in (f"step_order_kendall_tau_{loss}", f"onset_vs_gamma_loglog_slope_{loss}")
        assert c["value"] == order[key] or (c["value"] != c["value"] and order[key] != order[key])  # nan == nan
    assert res["figures"] == ["ntk_after_training.png"] and (out / "ntk_after_training.png").stat().st_size > 20_000
    assert set(res["config"]["networks"]) == set(LOSSES)


def test_saved_statistics_match_the_checks(smoke):
    cfg, res, out = smoke
    data = io.load_npz(out / "ntk_after_training.npz")
    value = {c["name"]: c for c in res["checks"]}
    for i, loss in enumerate(LOSSES):
        assert value[f"ntk_similarity_{loss}"]["value"] == pytest.approx(data["similarity_final"][i])
        assert value[f"ntk_similarity_{loss}"]["threshold"] == pytest.approx(data["baseline_threshold_final"][i])
        # similarities <= 1 up to ~n eps (n evaluation points, float64): 1e-9 is slack, not a tolerance on a result
        assert 0.0 <= data["similarity_final"][i] <= 1.0 + 1e-9 and 0.0 <= data["similarity_init"][i] <= 1.0 + 1e-9
        per = res["summary"]["per_method"][loss]
        assert per["k"] == data["ks"][i] >= 1
        assert data["baseline_random"][i] == pytest.approx(per["k"] / res["summary"]["n_eval"])
    cross = data["cross"]
    assert cross.shape == (6, 6)
    # symmetric by construction; self-similarity 1 up to ~2 n eps (default rtol 1e-7 is far above)
    np.testing.assert_allclose(cross, cross.T)
    np.testing.assert_allclose(np.diag(cross), 1.0)
    pairs = np.triu_indices(3, 1)
    margins = cross[:3, :3][pairs] - data["cross_baseline"][pairs]
    assert value["cross_method_margin_min"]["value"] == pytest.approx(margins.min())
    np.testing.assert_allclose(data["cross_baseline"], data["cross_baseline"].T)
    assert list(data["names"][:3]) == list(LOSSES)


def test_kernel_statistics_of_one_network_recomputed(smoke, tmp_path):
    """The after-training similarity of the first network, recomputed from scratch with the library."""
    from experiments.ntk_after_training.run import _one_network

    cfg, res, _ = smoke
    net = _one_network(cfg, "barlow_twins", progress=False)
    again = compare.ntk_agreement.kernel_agreement(net["kernels"]["final"], net["two_n"], net["z_eval"], net["k"],
                                         center=cfg.center, n_draws=cfg.n_draws, seed=cfg.seed)
    assert again.similarity == pytest.approx(
        res["summary"]["per_method"]["barlow_twins"]["agreement_final_ntk"]["similarity"], rel=1e-6)
    assert net["kernels"]["final"].shape == (2 * cfg.n_pairs + net["z_eval"].shape[0],) * 2


@pytest.mark.parametrize(
    "kwargs,match",
    [({"losses": ("barlow_twins",)}, "at least two distinct"), ({"losses": ("barlow_twins", "byol")}, "unknown loss"),
     ({"n_pairs": 1}, "n_pairs must be >= 2"), ({"n_pairs": 100_000}, "exceeds"), ({"steps": 1}, "steps must be")],
)
def test_bad_config_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NtkAfterTrainingConfig(**kwargs)


def test_cli_lists_the_experiment(capsys):
    assert cli.main(["list"]) == 0
    assert "ntk_after_training" in capsys.readouterr().out
