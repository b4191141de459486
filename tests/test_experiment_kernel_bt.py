"""The kernel_bt experiment end to end (smoke configs for the RBF and NTK kernels), failure modes and the CLI."""

import dataclasses
import json

import numpy as np
import pytest

from experiments.kernel_bt import KernelBTConfig, run
from stepwise import cli, io
from helpers import assert_verdicts

CHECKS = {  # name -> kind of evidence
    "step_time_rel_error_median": "theory",
    "step_time_rel_error_max": "theory",
    "gated_modes": "consistency",
    "loss_plateau_max_abs_error": "theory",
    "final_whitening_error": "theory",
    "rank_max_increment": "theory",
    "train_gram_rel_error": "theory",
    "test_gram_rel_error": "theory",
}


@pytest.mark.parametrize(("kernel", "overrides"), [
    ("rbf", {}), ("linear", {}),
    # 50 pairs give a noisy NTK spectrum: seed 3 has the gap gamma_5/gamma_4 = 0.58 (seed 0's best is 0.83 at d = 3,
    # which leaks 1.6% of mode 4 into the subspace; the full default config uses 200 pairs).
    ("ntk", {"ntk_width": 64, "seed": 3}),
])
def test_smoke_run_passes_every_check(tmp_path, kernel, overrides):
    cfg = dataclasses.replace(KernelBTConfig.smoke(), kernel=kernel, **overrides)
    res = run(cfg, tmp_path)
    assert {c["name"]: c["kind"] for c in res["checks"]} == CHECKS
    assert_verdicts(res, allow_reported=False)
    assert res["passed"] is True and json.loads((tmp_path / "results.json").read_text()) == res
    assert res["figures"] == ["kernel_bt.png"] and (tmp_path / "kernel_bt.png").stat().st_size > 10_000
    data = io.load_npz(tmp_path / "trajectory.npz")
    steps = res["summary"]["steps"]
    d = res["config"]["d"]  # chosen at the gap gamma_(d+1)/gamma_d <= gap_ratio when not given
    assert 3 <= d <= cfg.d_max and (cfg.d is None or d == cfg.d)
    if cfg.d is None:
        assert res["summary"]["gamma_ratios"][d - 1] <= cfg.gap_ratio
        # the gap bounds the note-2.7 leakage estimate, computed before training and shown with the Gram checks
        leak = res["summary"]["leakage_estimate"]
        assert 0 < leak < 1e-2  # below the Gram checks' criterion (about init_scale^(1 - gap_ratio) = 4e-3)
        assert next(c for c in res["checks"] if c["name"] == "test_gram_rel_error")["predicted"] == leak
    assert data["eigenvalues"].shape == (steps + 1, d) and data["test_embeddings"].shape == (cfg.data.n_test, d)
    # The summary's numbers are the ones the checks were computed from.
    rel = np.abs(np.asarray(res["summary"]["rel_errors"], dtype=float))
    gated = np.asarray(res["summary"]["gated"], dtype=bool)
    step_max = next(c for c in res["checks"] if c["name"] == "step_time_rel_error_max")
    assert step_max["value"] == pytest.approx(rel[gated].max())


def test_large_initialisation_fails_the_kernel_pca_checks(tmp_path):
    # Theory note 2.7: from a large initialisation the modes are not learned one at a time and the final embedding
    # keeps a component of the initial function: the same checks must then fail.
    res = run(dataclasses.replace(KernelBTConfig.smoke(), init_scale=0.3), tmp_path)
    failed = {c["name"] for c in res["checks"] if c["passed"] is False}
    assert res["passed"] is False and "test_gram_rel_error" in failed


def smoke_with_crop(crop: int) -> KernelBTConfig:
    cfg = KernelBTConfig.smoke()
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, crop=crop))


def test_config_and_input_errors(tmp_path):
    with pytest.raises(ValueError, match="lr_scale"):
        KernelBTConfig(lr_scale=1.0)
    with pytest.raises(ValueError, match="bandwidth_scale"):
        KernelBTConfig(bandwidth_scale=0.0)
    with pytest.raises(ValueError, match="d_max"):
        KernelBTConfig(d_max=2)
    with pytest.raises(ValueError, match="does not fit"):
        run(smoke_with_crop(50), tmp_path / "a")
    # 2x2 crops: a rank-4 linear kernel. Mode 5 is round-off over the ridge: refused, as not positive or (when the
    # round-off happens to exceed the positivity tolerance) because its step would come after ~1e7 updates.
    with pytest.raises(ValueError, match="positive eigenvalues|max_steps"):
        run(dataclasses.replace(smoke_with_crop(2), kernel="linear", d=5), tmp_path / "b")
    with pytest.raises(ValueError, match="positive eigenvalues"):
        run(dataclasses.replace(smoke_with_crop(2), kernel="linear", d=60), tmp_path / "b")
    with pytest.raises(ValueError, match="pass --d explicitly"):
        run(dataclasses.replace(KernelBTConfig.smoke(), gap_ratio=1e-3), tmp_path / "c")
    assert not any((tmp_path / p).exists() for p in "abc")


def test_cli_lists_and_runs_it(tmp_path, capsys):
    assert cli.main(["list"]) == 0
    assert "kernel_bt" in capsys.readouterr().out
    assert cli.main(["run", "kernel_bt", "--smoke", "--out", str(tmp_path), "--kernel", "linear"]) == 0
    assert "kernel_bt: PASSED" in capsys.readouterr().out
    assert io.load_results(tmp_path)["config"]["kernel"] == "linear"
