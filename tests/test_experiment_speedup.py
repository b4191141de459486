"""The speed-up experiment end to end (smoke config), its pieces against references, and its CLI."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.speedup import SpeedupConfig, run
from experiments.speedup.config import SpeedupDeep
from experiments.speedup.deep import boosted_bt_loss, head_inputs, run_deep_pair
from experiments.speedup.linear import train_variant
from experiments.speedup.run import aligned_init
from stepwise import cli, compare, io
from stepwise.compare.speedup import deep_checks
from stepwise.data import PairData
from stepwise.losses import get_loss
from stepwise.models import build_model, pure_model
from stepwise.theory import linear
from stepwise.theory import speedup as sp
from stepwise.verify import output_layer
from helpers import api_smoke_run

VARIANTS = sp.VARIANTS
GATED = {
    *(f"step_time_rel_error_max_{v}" for v in VARIANTS),
    *(f"last_step_speedup_{v}" for v in VARIANTS[1:]),
    *(f"last_step_speedup_flow_{v}" for v in VARIANTS[1:]),
    "final_whitening_error_max", "plain_matches_train_linear_bt",
    "random_init_step_time_rel_error_max_plain", "random_init_step_time_rel_error_max_boost",
    "random_init_last_step_speedup_boost",
    "deep_last_step_gain_min", "deep_final_loss_excess_max",
}
REPORTED = {"random_init_last_step_speedup_input", "random_init_last_step_speedup_input_boost",
            "random_init_rowspace_angle_input", "deep_last_step_speedup", "deep_plain_last_step_rel_error_lazy",
            "deep_representation_similarity_min"}


smoke_run = api_smoke_run(SpeedupConfig.smoke, run)


def test_smoke_run_passes_its_gated_checks(smoke_run):
    _, res = smoke_run
    by_name = {c["name"]: c for c in res["checks"]}
    assert set(by_name) == GATED | REPORTED
    for name in GATED:
        c = by_name[name]
        assert c["kind"] in ("theory", "consistency") and c["passed"] is True, (name, c["value"], c["threshold"])
    for name in REPORTED:
        assert by_name[name]["kind"] == "reported" and by_name[name]["passed"] is None
        assert math.isfinite(by_name[name]["value"]), name
    assert res["passed"] is True


def test_real_values_and_predicted_factors(smoke_run):
    """The reductions are real measurements (not copies of the prediction) and sit where the theory puts them."""
    _, res = smoke_run
    lin = res["summary"]["linear"]
    g = np.asarray(lin["gammas"])
    d = res["config"]["d"]
    v = lin["variants"]
    assert v["plain"]["last_step_measured"] > v["boost"]["last_step_measured"] > v["input_boost"]["last_step_measured"]
    for name in VARIANTS[1:]:
        assert v[name]["speedup_measured"] > 1.5
        assert v[name]["speedup_measured"] != v[name]["speedup_map"]  # measured, not copied (agree to ~1e-10)
    # the flow closed form of the input preconditioner is gamma_1 / gamma_d
    np.testing.assert_allclose(v["input"]["speedup_flow"], g[0] / g[d - 1], rtol=1e-12)
    deep = res["summary"]["deep"]
    assert np.all(np.asarray(deep["speedup"]) > 1.5)
    assert np.all(np.isfinite(deep["last_step_plain"])) and np.all(np.isfinite(deep["last_step_boost"]))


def test_results_json_and_files(smoke_run):
    out, res = smoke_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == res
    assert on_disk["experiment"] == "speedup" and on_disk["config"]["effective_rank"] == on_disk["config"]["d"]
    assert on_disk["versions"]["jax"] and on_disk["wall_time_s"] > 0
    for c in on_disk["checks"]:
        assert {"name", "value", "threshold", "passed", "op", "reason", "description", "kind"} <= set(c)
        assert c["reason"].strip()
    assert (out / "speedup.png").stat().st_size > 10_000
    data = io.load_npz(out / "speedup.npz")
    for v in VARIANTS:
        assert data[f"{v}_eigenvalues"].shape == data[f"{v}_predicted_eigenvalues"].shape
        assert data[f"{v}_loss"].shape == data[f"{v}_step"].shape
    assert "deep_s0_plain_loss" in data and "deep_s0_boost_loss" in data
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "speedup.npz", "speedup.png"]


def test_the_plot_reads_only_the_data(smoke_run, tmp_path):
    from stepwise.plots.speedup import plot_speedup

    out, _ = smoke_run
    path = plot_speedup(out, tmp_path / "again.png")
    assert path.stat().st_size > 10_000


def test_boosted_loss_value_and_gradient_for_linear_embeddings(rng):
    """Value = the theory-form BT loss; gradient = the boost update 4 K(C)(C - I) W Gamma of the linear theory."""
    n, m, d = 40, 6, 3
    x1 = rng.normal(size=(n, m)) * np.array([2.0, 1.5, 1.0, 0.7, 0.5, 0.3])
    x2 = x1 + 0.3 * rng.normal(size=(n, m))
    w = 0.3 * rng.normal(size=(d, m))
    for center in (False, True):
        plain = get_loss("barlow_twins_theory", center=center)
        loss = lambda w_: boosted_bt_loss(jnp.asarray(x1) @ w_.T, jnp.asarray(x2) @ w_.T, eps=0.2, center=center)
        value, grad = jax.value_and_grad(loss)(jnp.asarray(w))
        np.testing.assert_allclose(value, plain(jnp.asarray(x1 @ w.T), jnp.asarray(x2 @ w.T)), rtol=1e-14)
        xc1, xc2 = (x1 - x1.mean(0), x2 - x2.mean(0)) if center else (x1, x2)
        gamma = linear.cross_correlation(xc1, xc2)
        np.testing.assert_allclose(grad, sp.update_direction(w, gamma, eps=0.2), rtol=1e-10, atol=1e-13)


def test_head_inputs_are_the_output_layers_inputs(key):
    model = pure_model(build_model("mlp", (4, 4, 1), hidden=(8,), embed_dim=3, seed=1))
    x = jax.random.normal(key, (5, 4, 4, 1), jnp.float32)
    path = output_layer(model.apply, model.params, x)
    h, kernel = head_inputs(model.apply, model.params, path, x)
    assert h.shape == (5, 8) and kernel.shape == (8, 3)
    bias = np.asarray(model.apply(model.params, x)) - h @ kernel  # f = h W + b with b the same for every input
    np.testing.assert_allclose(bias, np.broadcast_to(bias[:1], bias.shape), atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_jax_trainer_matches_numpy_gd(rng, variant):
    """The jitted eigenbasis trainer against W <- W - lr update_direction(W) in the pixel basis, from a random init."""
    m, d = 6, 3
    q, _ = np.linalg.qr(rng.normal(size=(m, m)))
    g_true = np.array([2.0, 1.2, 0.7, 0.3, 0.1, -0.2])
    gamma = (q * g_true) @ q.T
    g, v = linear.eigh_desc(gamma)
    w0 = 1e-3 * rng.normal(size=(d, m))
    eps = 0.3 if "boost" in variant else None
    precond = sp.input_preconditioner(g, v, d) if "input" in variant else None
    rates = sp.mode_rates(g, variant, d)
    lr = 0.3 / (4 * rates.max())
    steps = 200
    res = train_variant(g, rates, w0 @ v, lr, steps, eps=eps, chunk=64)
    w, eigs = w0.copy(), []
    for _ in range(steps):
        eigs.append(np.sort(np.linalg.eigvalsh(w @ gamma @ w.T))[::-1])
        w = w - lr * sp.update_direction(w, gamma, precond=precond, eps=eps)
    eigs.append(np.sort(np.linalg.eigvalsh(w @ gamma @ w.T))[::-1])
    np.testing.assert_allclose(res.eigenvalues, np.array(eigs), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.w_final @ v.T, w, rtol=1e-9, atol=1e-12)


def test_aligned_init(key):
    g = np.array([3.0, 2.0, 1.0, 0.5])
    w0, a0 = aligned_init(g, 3, 1e-3, key)
    c = (w0 * g) @ w0.T
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(c))[::-1], a0, rtol=1e-10)
    np.testing.assert_allclose(a0, 1e-6 * g[:3] / g[0], rtol=1e-12)
    assert np.all(w0[:, 3:] == 0)


def test_no_speedup_fails_the_deep_check():
    """With eps huge the 'boost' is plain BT: no gain, so the gated deep check fails (the verdict says so)."""
    smoke = SpeedupConfig.smoke()
    cfg = dataclasses.replace(smoke, deep=dataclasses.replace(smoke.deep, eps=1e6))
    pair = run_deep_pair(cfg, 0)
    checks, summary = deep_checks([pair], track_every=cfg.deep.track_every, loss_level=cfg.deep.loss_level,
                                  n_eval=cfg.deep.n_eval, d=cfg.deep.d)
    by_name = {c.name: c for c in checks}
    assert by_name["deep_last_step_gain_min"].passed is False
    assert abs(summary["speedup"][0] - 1.0) < 0.05
    assert not compare.all_passed(checks)


def test_config_validation():
    for bad in (dict(lr_scale=1.0), dict(eps=0.0), dict(d=0), dict(init_scale=1.0), dict(rank=2, d=3),
                dict(eps=float("nan"))):
        with pytest.raises(ValueError, match="invalid speedup config"):
            SpeedupConfig(**bad)
    for bad in (dict(d=1), dict(loss_level=1.0), dict(batch_size=4000)):  # the deep part, named by its prefix
        with pytest.raises(ValueError, match=r"invalid speedup config: deep\."):
            SpeedupDeep(**bad)


def test_input_errors_come_before_compute(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="does not fit"):
        run(SpeedupConfig(data=PairData(n_pairs=500, crop=9, n_test=0), deep=SpeedupDeep(run=False)), out)
    with pytest.raises(ValueError, match="positive eigenvalues"):
        run(SpeedupConfig(data=PairData(n_pairs=2, crop=2, n_test=0), d=2, rank=4, deep=SpeedupDeep(run=False)), out)
    assert not out.exists()


def test_cli(tmp_path, capsys):
    out = tmp_path / "runs" / "speedup"
    argv = ["run", "speedup", "--smoke", "--deep.no-run", "--no-random-init", "--out", str(out)]
    assert cli.main(argv) == 0
    res = io.load_results(out)
    assert res["passed"] and res["config"]["deep"]["run"] is False
    printed = capsys.readouterr().out
    assert "speedup: PASSED" in printed and "last_step_speedup_input" in printed
    assert cli.main(argv) == 2  # a finished run is not overwritten without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["list"]) == 0 and "speedup" in capsys.readouterr().out


@pytest.mark.slow
def test_full_default_config_passes(tmp_path):
    res = run(SpeedupConfig(), tmp_path)
    assert res["passed"], [c for c in res["checks"] if c["passed"] is False]
