"""The grassmann experiment (Esser et al. 2023) end to end on its smoke config: every check on real values, the
results.json contract, checks recomputed from the saved data, checks that fail when the physics is wrong."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.grassmann import GrassmannConfig, run
from stepwise import cli, io
from stepwise.compare import esser2023
from stepwise.models.two_layer import hidden_features, two_layer, two_layer_mse
from stepwise.plots.report import build_report
from stepwise.theory import grassmann as theory
from stepwise.training.riemannian import random_orthonormal
from helpers import api_smoke_run, assert_verdicts


# The kind of evidence of each check (issue 14); every other check is a theory check.
CONSISTENCY = {"flow_orthonormality_max", "rgd_orthonormality_max", "rgd_qr_polar_projector_max",
               "network_vs_grassmann_model_max"}
BASELINE = {"ssl_vs_sup_ntk_change_ratio"}
REPORTED = {"ssl_ntk_change_infinite_width_fraction"}
# The note's criterion for the SSL NTK change (log-log slope > -0.1) is gated and fails at CPU widths (smoke -0.15,
# default -0.28): its verdict is asserted from its value.
NOTE_CRITERION = "ssl_ntk_change_slope"

REQUIRED_CHECKS = {
    "naive_collapse_rate_rel_error",
    "naive_final_sv_ratio",
    "naive_top_direction_cosine",
    "naive_norm_growth_rate_rel_error",
    "flow_projector_max_error",
    "flow_orthonormality_max",
    "rgd_orthonormality_max",
    "rgd_qr_polar_projector_max",
    "rgd_first_order_error",
    "principal_angle_rate_rel_error",
    "final_loss_error",
    "ssl_param_change_slope",
    "ssl_ntk_change_slope",
    "sup_param_change_slope",
    "sup_ntk_change_slope",
    "ssl_ntk_change_infinite_width_fraction",
    "ssl_vs_sup_ntk_change_ratio",
    "network_vs_grassmann_model_max",
}


smoke_run = api_smoke_run(GrassmannConfig.smoke, run)


def by_name(results):
    return {c["name"]: c for c in results["checks"]}


def test_smoke_run_verdicts(smoke_run):
    _, res = smoke_run
    assert {c["name"] for c in res["checks"]} == REQUIRED_CHECKS
    checks = by_name(res)
    for name, c in checks.items():
        want = ("consistency" if name in CONSISTENCY else "baseline" if name in BASELINE
                else "reported" if name in REPORTED else "theory")
        assert c["kind"] == want, name
    assert_verdicts(res, skip={NOTE_CRITERION}, reported_reason="not gated")  # reported: shown, not gated
    c = checks[NOTE_CRITERION]
    assert c["threshold"] == -0.1 and c["op"] == ">=" and c["passed"] is (c["value"] >= -0.1)
    assert res["passed"] is checks[NOTE_CRITERION]["passed"]
    # The baseline's threshold is the null's exact value (supervised = SSL movement), not a multiple of it.
    assert checks["ssl_vs_sup_ntk_change_ratio"]["threshold"] == 1.0
    # The acceptance numbers, on the real run: closed form vs ODE far below 1e-6, rates within 5%.
    assert checks["flow_projector_max_error"]["value"] < 1e-9
    assert checks["naive_collapse_rate_rel_error"]["value"] < 0.05
    assert checks["principal_angle_rate_rel_error"]["value"] < 0.05
    # Every reason keeps the note's provenance labels visible.
    for c in res["checks"]:
        assert any(tag in c["reason"] for tag in ("[D]", "[V-abs]", "[R?]", "NTK theory")), c["name"]


def test_results_json_contract_and_figures(smoke_run):
    out, res = smoke_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == res
    for c in on_disk["checks"]:
        assert {"name", "value", "threshold", "passed", "op", "reason", "description"} <= set(c)
        assert c["kind"] in {"theory", "baseline", "consistency", "reported"}
        if c["kind"] == "reported":
            assert c["passed"] is None
        elif isinstance(c["value"], float) and math.isfinite(c["value"]):
            ok = {"<=": c["value"] <= c["threshold"], ">=": c["value"] >= c["threshold"],
                  ">": c["value"] > c["threshold"]}[c["op"]]
            assert ok == c["passed"]
    assert on_disk["config"]["width"]["widths"] == list(GrassmannConfig.smoke().width.widths)
    assert on_disk["versions"]["jax"] and on_disk["device"]["platform"] == "cpu" and on_disk["wall_time_s"] > 0
    assert on_disk["figures"] == ["grassmann.png", "grassmann_width.png"]
    for name in on_disk["figures"]:
        assert (out / name).stat().st_size > 10_000
    assert sorted(on_disk["data"]) == ["constrained.npz", "naive.npz", "width.npz"]
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


def test_checks_recomputed_from_saved_data(smoke_run):
    """The verdict in results.json is exactly what the compare functions give on the saved arrays."""
    out, res = smoke_run
    saved = by_name(res)
    for name, fn in (("naive", esser2023.naive_checks), ("constrained", esser2023.constrained_checks),
                     ("width", esser2023.width_checks)):
        for c in fn(io.load_npz(out / f"{name}.npz"))[0]:
            assert saved[c.name]["value"] == pytest.approx(c.value, rel=1e-12, abs=1e-300)
            assert saved[c.name]["passed"] == c.passed


def test_measured_trajectories_follow_the_closed_forms(smoke_run):
    """Beyond the gated statistics: GD's singular-value ratio and principal sines track the closed forms."""
    out, _ = smoke_run
    nv, cs = io.load_npz(out / "naive.npz"), io.load_npz(out / "constrained.npz")
    ratio = nv["sv"][:, 1] / nv["sv"][:, 0]
    inside = (ratio > 1e-10) & (nv["t"] > 0)
    # the O(lr) GD bias accumulates along t: log-ratio error grows linearly, << 1 over the run
    assert np.max(np.abs(np.log(ratio[inside] / nv["sv_closed"][inside, 1]))) < 0.5
    inside = cs["sines_closed"] > 1e-10
    assert np.max(np.abs(np.log(cs["sines"][inside] / cs["sines_closed"][inside]))) < 0.2
    assert float(cs["projected_gd_drift"]) > 1e3 * np.max(cs["rgd_ortho"])  # no retraction -> drift


def test_checks_fail_when_the_physics_is_wrong(smoke_run):
    out, _ = smoke_run
    # Swap SSL and supervised: a lazy "SSL" must fail the SSL checks, a moving "supervised" the NTK-theory ones.
    width = io.load_npz(out / "width.npz")
    swapped = dict(width, ssl_param=width["sup_param"], sup_param=width["ssl_param"], ssl_ntk=width["sup_ntk"],
                   sup_ntk=width["ssl_ntk"])
    failed = {c.name for c in esser2023.width_checks(swapped)[0] if c.passed is False}
    assert {"ssl_param_change_slope", "ssl_ntk_change_slope", "sup_param_change_slope", "sup_ntk_change_slope",
            "ssl_vs_sup_ntk_change_ratio"} <= failed
    # The constrained run's W keeps all singular values at 1: fed to the collapse checks, they fail.
    naive = io.load_npz(out / "naive.npz")
    flat = dict(naive, sv=np.ones_like(naive["sv"]), top_cos=np.full_like(naive["top_cos"], 0.5))
    failed = {c.name for c in esser2023.naive_checks(flat)[0] if c.passed is False}
    assert {"naive_collapse_rate_rel_error", "naive_final_sv_ratio", "naive_top_direction_cosine"} <= failed
    # A wrong spectrum (lambda_h and lambda_h+1 moved apart) must fail the rate check.
    cons = io.load_npz(out / "constrained.npz")
    lam = cons["lam"].copy()
    h = int(cons["h"])
    lam[h:] -= 0.5 * (lam[h - 1] - lam[h])
    failed = {c.name for c in esser2023.constrained_checks(dict(cons, lam=lam))[0] if c.passed is False}
    assert "principal_angle_rate_rel_error" in failed


def test_the_network_is_the_linear_model_on_its_frozen_features():
    """Training W = a / sqrt(m) on cached features is training the network: same outputs, same loss, same grad."""
    rng = np.random.default_rng(0)
    m, d, h, n = 32, 6, 2, 5
    b = jnp.asarray(rng.normal(size=(m, d)))
    w = random_orthonormal(rng, m, h)
    x1, x2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    params = {"a": jnp.asarray(math.sqrt(m) * w), "b": b}
    f1, f2 = hidden_features(b, x1), hidden_features(b, x2)
    # Sums over the m = 32 hidden units, in two orders: within 2 m eps of sum |f| |a| (absolute: outputs may cancel)
    eps = np.finfo(np.float64).eps
    scale = float(np.max(np.abs(np.asarray(f1)) @ np.abs(np.asarray(params["a"]))))
    np.testing.assert_allclose(two_layer(params, x1), f1 @ params["a"], rtol=0, atol=2 * m * eps * scale)

    def net_loss(a):
        p = {"a": a, "b": b}
        return -jnp.mean(jnp.sum(two_layer(p, x1) * two_layer(p, x2), axis=-1))

    # The loss and its gradient: the same sums over n = 5 samples and m units in other orders, ~(n + m) eps of the
    # sums of |terms| (measured ~1e-16); 1e-12 relative for the (non-cancelling, here) loss, absolute for the gradient.
    assert float(net_loss(params["a"])) == pytest.approx(m * float(theory.ssl_loss(w, f1, f2)), rel=1e-12)
    # A step lr on a moves W = a / sqrt(m) by -lr grad_a / sqrt(m) = -lr grad_W L_lin: the runner's update.
    af1, af2, aa = (np.abs(np.asarray(v)) for v in (f1, f2, params["a"]))
    gscale = float(np.max((af1.T @ af2 + af2.T @ af1) @ aa)) / n / math.sqrt(m)
    np.testing.assert_allclose(jax.grad(net_loss)(params["a"]) / math.sqrt(m), jax.grad(theory.ssl_loss)(
        jnp.asarray(w), f1, f2), rtol=0, atol=4 * (n + m) * eps * gscale)
    # and the network's MSE is two_layer_mse on the features
    y = rng.normal(size=(n, h))
    mse = 0.5 * jnp.mean(jnp.sum((two_layer(params, x1) - y) ** 2, axis=-1))
    assert float(two_layer_mse(params["a"], f1, y)) == pytest.approx(float(mse), rel=1e-12)


def test_statistics_on_known_inputs():
    t = np.linspace(0, 10, 21)
    rate, n = esser2023.decay_rate(t, 3 * np.exp(-0.7 * t), lo=1e-3, hi=1.0)
    # log of an exact exponential is linear: the slope fit loses ~eps |log y| / (t span) ~ 1e-15 relative
    assert rate == pytest.approx(0.7, rel=1e-12) and n > 3
    assert math.isnan(esser2023.decay_rate(t, np.ones_like(t), lo=1e-3, hi=0.5)[0])
    assert esser2023.loglog_slope([1, 10, 100], [2, 0.2, 0.02]) == pytest.approx(-1.0)
    m = np.array([64.0, 256, 1024, 4096])
    frac, a2, b2 = esser2023.infinite_width_fraction(m, np.sqrt(0.01 + 0.5 / m))
    # exact data, a 4 x 2 least-squares fit in (1, 1 / m): cond = 160, so ~eps x 160 x the rounding of the data,
    # 1e-13 relative; 1e-8 leaves room for a different solver
    assert a2 == pytest.approx(0.01, rel=1e-8) and b2 == pytest.approx(0.5, rel=1e-8)
    assert frac == pytest.approx(0.01 / (0.01 + 0.5 / 4096))
    assert esser2023.infinite_width_fraction(m, 1.0 / m)[0] < 0.1  # lazy: nothing survives
    assert esser2023.discrete_rate(1.0, 0.5, 1e-6) == pytest.approx(1.0, rel=1e-5)


def test_config_validation():
    for bad in (dict(lr=0.5), dict(width=dict(widths=(64, 32, 128))), dict(width=dict(widths=(64, 128))),
                dict(window=(1e-3, 1e-6)),
                dict(ssl=dict(lr=1.5)), dict(ssl=dict(steps=150, record=100)),
                dict(width=dict(h=100, widths=(64, 128, 256))), dict(order=dict(lrs=(0.01,))), dict(h=0)):
        with pytest.raises(ValueError, match="invalid grassmann config"):
            io.replace_config(GrassmannConfig(), **bad)


def test_input_errors_come_before_compute_and_write_nothing(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="must be < m"):
        run(io.replace_config(GrassmannConfig(), dataset="gaussian", gaussian=dict(dim=4), ode_hs=(1, 8)), out)
    assert not out.exists()


def test_registered_in_cli_and_report(smoke_run, tmp_path, capsys):
    assert "grassmann" in cli._experiments()
    assert cli.main(["list"]) == 0 and "grassmann" in capsys.readouterr().out
    out, _ = smoke_run
    html, n, n_pass, _ = build_report(out.parent, tmp_path / "index.html")
    text = html.read_text()
    assert n == 1 and n_pass == int(by_name(smoke_run[1])[NOTE_CRITERION]["passed"])
    assert text.count("data:image/png;base64,") >= 2 and "principal_angle_rate_rel_error" in text


@pytest.mark.slow
def test_full_default_config_verdicts(tmp_path):
    """Default config: every gated check passes except the note's SSL NTK slope criterion (measured -0.28)."""
    res = run(GrassmannConfig(), tmp_path)
    failed = {c["name"] for c in res["checks"] if c["passed"] is False}
    assert failed <= {NOTE_CRITERION}, failed


def test_library_pieces_the_runner_uses():
    """euclidean_gd is plain GD recorded like riemannian_gd; record_schedule covers t_end; positive_pairs is seeded
    and normalised (views centred, E||x||^2 = d); bad arguments are refused before compute."""
    from stepwise.data.pairs import positive_pairs
    from stepwise.training.riemannian import euclidean_gd, record_schedule

    c = np.diag([3.0, 1.0, 0.5])
    w0 = np.ones((3, 2))
    ws = np.asarray(euclidean_gd(theory.loss, w0, 0.01, 6, args=(jnp.asarray(c),), record_every=3))
    # -tr(W^T C W) has gradient -2 C W, so each step multiplies W by I + 2 lr C exactly (diagonal C)
    step = np.diag(1 + 2 * 0.01 * np.diag(c))
    expected = [w0, np.linalg.matrix_power(step, 3) @ w0, np.linalg.matrix_power(step, 6) @ w0]
    np.testing.assert_allclose(ws, np.stack(expected), rtol=1e-14)
    with pytest.raises(ValueError, match="multiple of record_every"):
        euclidean_gd(theory.loss, w0, 0.01, 5, args=(jnp.asarray(c),), record_every=3)
    every, n = record_schedule(10.0, 0.01, 400)
    assert every * n * 0.01 >= 10.0 and (every - 1) * n * 0.01 < 10.0 and n <= 400
    w = random_orthonormal(np.random.default_rng(0), 5, 2)
    np.testing.assert_allclose(w.T @ w, np.eye(2), atol=1e-14)

    a = positive_pairs("gaussian", 50, seed=3, targets=2, gaussian_dim=4)
    b = positive_pairs("gaussian", 50, seed=3, targets=2, gaussian_dim=4)
    assert all(np.array_equal(a[k], b[k]) for k in a) and a["y"].shape == (50, 2)
    views = np.concatenate([a["x1"], a["x2"]])
    np.testing.assert_allclose(views.mean(axis=0), 0, atol=1e-14)
    assert np.mean(np.sum(views**2, axis=1)) == pytest.approx(4, rel=1e-12)
    with pytest.raises(ValueError, match="dataset"):
        positive_pairs("mnist", 50, seed=0, targets=2)
