"""The hltm experiment end to end (smoke config through the CLI), its network, trainer and correlation metric."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.hltm import HLTMConfig
from stepwise import cli, io
from stepwise.compare.checks import all_passed
from stepwise.compare.tian2020 import best_unit_correlation, hltm_learning_checks, linear_alignment_checks
from stepwise.data import hltm as H
from stepwise.models.tree import init_tree_net, tree_net
from stepwise.training.hltm import contrastive_loss, train_runs
from helpers import assert_verdicts, cli_smoke_run

LEARNING = {"root_rise_min_over_seeds", "training_gain_vs_polarity", "training_gain_vs_hid",
            "corr_vs_polarity_min_step", "corr_vs_polarity_total_gain", "corr_vs_hid_min_step",
            "corr_vs_hid_total_gain", "root_lowest_initial", "root_final_gap_to_hardest"}
SAMPLER = {"hltm_corr_root_max_error", "hltm_edge_agreement_max_error", "hltm_positive_corr_max_error",
           "hltm_root_balance_error", "hltm_negative_root_agreement_error"}
# The kind of evidence of each check (issue 14): paper predictions, identities that hold by construction (they
# test the code: the sampler against the exact model, the algebra of OP), and trends shown but not gated.
KINDS = {
    "theory": {"root_rise_min_over_seeds", "training_gain_vs_polarity", "training_gain_vs_hid", "root_lowest_initial",
               "root_final_gap_to_hardest", "op_identity_rel_error", "weighted_identity_rel_error",
               "aug_weight_residue", "loss_weight_formula_rel_error", "linear_alignment_final_sin2_max"},
    "consistency": {"op_min_eigenvalue_rel", "op_rank_excess", "variance_decomposition_rel_error",
                    "binary_root_outer_product_rel_error", "hltm_corr_root_max_error", "hltm_edge_agreement_max_error",
                    "hltm_positive_corr_max_error", "hltm_root_balance_error", "hltm_negative_root_agreement_error"},
    "reported": {"corr_vs_polarity_min_step", "corr_vs_polarity_total_gain", "corr_vs_hid_min_step",
                 "corr_vs_hid_total_gain", "linear_alignment_rate_rel_error", "linear_alignment_min_cos"},
}
# Trends of what training adds: gated on the seeds' paired differences, and at smoke (and default) scale they do not
# hold (training adds less where the network starts nearer the cap of 1); their verdict is asserted from the value.
TRAINING_TRENDS = {"training_gain_vs_polarity", "training_gain_vs_hid"}
LINEAR = {"linear_alignment_final_sin2_max", "linear_alignment_rate_rel_error", "linear_alignment_min_cos"}
COVARIANCE = {"op_identity_rel_error", "weighted_identity_rel_error", "aug_weight_residue", "op_min_eigenvalue_rel",
              "op_rank_excess", "variance_decomposition_rel_error", "loss_weight_formula_rel_error",
              "binary_root_outer_product_rel_error"}


smoke_run = cli_smoke_run("hltm", "--no-progress")


def test_smoke_checks_verdicts_with_real_values(smoke_run):
    _, res = smoke_run
    checks = {c["name"]: c for c in res["checks"]}
    assert set(checks) == LEARNING | SAMPLER | COVARIANCE | LINEAR  # depth 3: no [R] reference comparison
    assert {name: c["kind"] for name, c in checks.items()} == {n: k for k, names in KINDS.items() for n in names}
    # reported: shown, not gated: no verdict, and a reason that says why
    assert_verdicts(res, skip=TRAINING_TRENDS, reported_reason="not gated")
    for name in TRAINING_TRENDS:  # gated on the lower confidence bound of the paired seed mean
        c = checks[name]
        assert np.isfinite(c["value"]) and c["threshold"] == 0.0 and c["op"] == ">"
        assert c["passed"] is (c["value"] > 0.0)
    assert res["passed"] is all_passed(res["checks"])
    assert res["passed"] is all(checks[n]["passed"] for n in TRAINING_TRENDS)
    # No allowance on the paper's criteria: the root ends lowest (<= 0) and rises in every seed beyond eval noise.
    assert checks["root_final_gap_to_hardest"]["threshold"] == 0.0
    assert checks["root_lowest_initial"]["threshold"] == 0.0
    # identities in float64: relative round-off of gradients over the views and parameters, ~1e3 eps = 2e-13
    assert checks["op_identity_rel_error"]["value"] < 1e-12
    assert checks["weighted_identity_rel_error"]["value"] < 1e-12
    assert checks["aug_weight_residue"]["value"] > 0.1
    assert checks["root_rise_min_over_seeds"]["value"] >= 0.02
    # Every seed of both losses is recorded, and the per-depth correlations are real numbers in [0, 1].
    rise = res["summary"]["root_rise_per_seed"]
    assert set(rise) == {"infonce", "simple"} and all(len(v) == 3 for v in rise.values())
    final = np.array(res["summary"]["main_final_per_level"]["infonce"])
    assert final.shape == (3,) and np.all((final > 0.3) & (final <= 1.0))
    # The raw trends (reported) are what training adds on top of the trend at initialisation.
    trends = res["summary"]["raw_trends"]
    gain = np.array(res["summary"]["sweep_overall_gain"])
    init = np.array(res["summary"]["sweep_overall_initial"])
    # float32 correlations in [0, 1]: the mean over seeds of (final - initial) re-added to the mean initial is the
    # mean final up to a few float32 roundings (exact on jax 0.10.2; 7e-8 apart on jax 0.7.2's XLA)
    np.testing.assert_allclose(np.array(res["summary"]["sweep_overall_final"]), init + gain, rtol=0,
                               atol=8 * np.finfo(np.float32).eps)
    assert trends["initial"]["polarity_total"] == pytest.approx(float(np.min(init[:, -1] - init[:, 0])))


def test_results_contract_figures_and_data(smoke_run):
    out, res = smoke_run
    assert json.loads((out / "results.json").read_text()) == res
    assert res["figures"] == ["hltm_training.png", "hltm_sweep.png"]
    for name in res["figures"]:
        assert (out / name).stat().st_size > 10_000
    data = io.load_npz(out / "curves.npz")
    cfg = HLTMConfig.smoke()
    n_eval = cfg.train.steps // cfg.train.eval_every + 1
    assert data["sweep"].shape == (2, 2, n_eval, 3, 3)  # (hid, polarity, evaluations, seeds, depth)
    assert data["main_simple"].shape == data["main_infonce"].shape == (n_eval, 3, 3)
    np.testing.assert_array_equal(data["step"], np.arange(0, cfg.train.steps + 1, cfg.train.eval_every))
    # The figure's verdict and the test's come from the same numbers: recompute the learning checks from disk.
    checks, _ = hltm_learning_checks({"infonce": data["main_infonce"], "simple": data["main_simple"]},
                                     data["sweep"], cfg.polarity_lows, cfg.hids, rise_min=cfg.thresholds.rise_min,
                                     trend_tol=cfg.thresholds.trend_tol, trend_min=cfg.thresholds.trend_min,
                                     hardest_tol=cfg.thresholds.hardest_tol)
    stored = {c["name"]: c["value"] for c in res["checks"]}
    for c in checks:  # the same function on the saved float64 arrays: identical (JSON keeps floats exactly)
        assert c.value == pytest.approx(stored[c.name], abs=1e-12)
    assert res["summary"]["reference_differences"] and res["config"]["depth"] == 3
    assert not list(out.glob(".*tmp*"))


def _sweep(init, gain, seeds=3, depth=4, noise=0.0, seed=0):
    """A (n_hid, n_low, E = 2, S, depth) sweep from (n_hid, n_low) initial levels and gains, plus seed noise."""
    rng = np.random.default_rng(seed)
    init, gain = np.asarray(init, float), np.asarray(gain, float)
    start = np.broadcast_to(init[:, :, None, None], (*init.shape, seeds, depth))
    end = start + gain[:, :, None, None] + noise * rng.normal(size=(*init.shape, seeds, depth))
    return np.stack([start, end], axis=2)


def test_learning_checks_can_fail():
    """Flat, untrained curves fail the rise and the training-trend checks; a root above the other levels fails
    'hardest'; the raw trends are reported, never a verdict."""
    flat = np.full((3, 3, 4), 0.5)  # (E, S, depth)
    sweep = np.full((2, 2, 3, 3, 4), 0.5)
    checks, _ = hltm_learning_checks({"infonce": flat}, sweep, (0.7, 0.9), (2, 10), rise_min=0.02,
                                     trend_tol=0.02, trend_min=0.02, hardest_tol=0.0)
    failed = {c.name for c in checks if c.passed is False}
    assert {"root_rise_min_over_seeds", "training_gain_vs_polarity", "training_gain_vs_hid"} <= failed
    assert all(c.passed is None for c in checks if c.kind == "reported")
    high_root = flat.copy()
    high_root[..., 0] = 0.9
    checks, _ = hltm_learning_checks({"infonce": high_root}, sweep, (0.7, 0.9), (2, 10), rise_min=0.02)
    assert {"root_lowest_initial", "root_final_gap_to_hardest"} <= {c.name for c in checks if c.passed is False}
    # No allowance by default: a root 0.001 above the lowest other level after training fails.
    near = np.stack([np.tile([0.3, 0.5, 0.6, 0.7], (3, 1)), np.tile([0.801, 0.8, 0.85, 0.9], (3, 1))])
    checks = {c.name: c for c in hltm_learning_checks({"infonce": near}, sweep, (0.7, 0.9), (2, 10),
                                                      rise_min=0.02)[0]}
    assert checks["root_final_gap_to_hardest"].passed is False and checks["root_lowest_initial"].passed is True
    assert checks["root_final_gap_to_hardest"].threshold == 0.0


def test_trends_present_at_initialisation_are_not_credited_to_training():
    """Issue 14 item 3: a sweep whose trend with polarity and hid is all in the initial network (training adds the
    same everywhere) has strong raw final trends, which are only reported, and fails the gated training trends;
    training that adds more at larger polarity and hid passes them, seed noise included."""
    rows = np.array([[0.5, 0.6, 0.7], [0.6, 0.7, 0.8]])  # (n_hid, n_low) initial correlation
    main = {"infonce": np.stack([np.full((3, 4), 0.5), np.full((3, 4), 0.6)])}
    lows, hids = (0.7, 0.8, 0.9), (2, 10)
    inherited = {c.name: c for c in hltm_learning_checks(main, _sweep(rows, np.full((2, 3), 0.05), noise=0.002),
                                                          lows, hids, rise_min=0.02)[0]}
    assert inherited["corr_vs_polarity_total_gain"].value == pytest.approx(0.2, abs=0.01)
    assert inherited["corr_vs_hid_total_gain"].value == pytest.approx(0.1, abs=0.01)
    assert inherited["corr_vs_polarity_total_gain"].passed is None
    assert inherited["corr_vs_hid_total_gain"].passed is None
    assert inherited["training_gain_vs_polarity"].passed is False
    assert inherited["training_gain_vs_hid"].passed is False
    learned = np.array([[0.02, 0.05, 0.08], [0.06, 0.09, 0.12]])  # grows with polarity and with hid
    trained = {c.name: c for c in hltm_learning_checks(main, _sweep(rows, learned, noise=0.002), lows, hids,
                                                        rise_min=0.02)[0]}
    assert trained["training_gain_vs_polarity"].passed is True and trained["training_gain_vs_hid"].passed is True
    assert trained["training_gain_vs_polarity"].kind == trained["training_gain_vs_hid"].kind == "theory"
    # The same mean gain with seed noise as large as the effect: the lower confidence bound does not clear 0.
    noisy = {c.name: c for c in hltm_learning_checks(main, _sweep(rows, learned, noise=0.2, seed=1), lows, hids,
                                                      rise_min=0.02)[0]}
    assert noisy["training_gain_vs_polarity"].passed is False
    # One seed: no spread to estimate, the statistic is nan and the gated check fails rather than pass unseen.
    one = {c.name: c for c in hltm_learning_checks(main, _sweep(rows, learned, seeds=1), lows, hids,
                                                    rise_min=0.02)[0]}
    assert np.isnan(one["training_gain_vs_hid"].value) and one["training_gain_vs_hid"].passed is False


def test_linear_alignment_on_the_smoke_run_and_against_a_wrong_direction(smoke_run):
    """Checklist 8: the rows of a linear f = Wx trained on the leaves end within the predicted SGD noise floor of
    rho; the same trajectory measured against another direction (rho with its entries permuted) fails."""
    _, res = smoke_run
    checks = {c["name"]: c for c in res["checks"]}
    lin = res["summary"]["linear_alignment"]
    assert checks["linear_alignment_final_sin2_max"]["passed"] is True
    assert min(lin["initial_cos"]) < 0.7 < 0.99 < min(lin["final_cos"])  # from random rows to aligned ones
    # the threshold is the theory's: noise-free remainder + chi^2 quantile x predicted floor, nothing measured
    assert checks["linear_alignment_final_sin2_max"]["threshold"] == pytest.approx(
        lin["transient_sin2"] + lin["chi2_factor"] * lin["floor_sin2"])
    rng = np.random.default_rng(0)
    rho = np.array([0.9, -0.8, 0.7, 0.6, -0.5, 0.4, 0.3, 0.2])
    rho_hat = rho / np.linalg.norm(rho)
    rows = np.stack([rho_hat + 0.003 * rng.normal(size=8) for _ in range(3)])  # sin^2 ~ 7e-5, floor ~ 1e-4
    traj = np.concatenate([rng.normal(size=(1, 3, 8)), np.repeat(rows[None], 2000, axis=0)])  # 2000 steps
    traj /= np.linalg.norm(traj, axis=-1, keepdims=True)
    d = rng.integers(0, 2, size=(2, 500, 8)) - rng.integers(0, 2, size=(2, 500, 8))
    good = {c.name: c for c in linear_alignment_checks(traj, rho, d[0], d[1], lr=0.01, batch_size=128)[0]}
    bad = {c.name: c for c in linear_alignment_checks(traj, rho[::-1], d[0], d[1], lr=0.01, batch_size=128)[0]}
    assert good["linear_alignment_final_sin2_max"].passed is True
    assert bad["linear_alignment_final_sin2_max"].passed is False
    assert good["linear_alignment_min_cos"].passed is None


def test_tree_net_against_a_per_node_loop(rng):
    """The batched network against the definition: one Linear per node on its children's ReLU outputs."""
    depth, children, hid = 3, 2, 4
    params = init_tree_net(jax.random.key(0), depth, children, hid, dtype=jnp.float64)
    x = jnp.asarray(rng.integers(0, 2, size=(5, children**depth)).astype(np.float64))
    out, pre = tree_net(params, x)
    w, b = [np.asarray(a) for a in params["w"]], [np.asarray(a) for a in params["b"]]
    xn = np.asarray(x)
    ref, mag = {}, {}  # mag: the same tree on |inputs|, |w|, |b|, the sum of |terms| behind each value
    for t in range(depth - 1, -1, -1):
        for j in range(children**t):
            if t == depth - 1:
                inp = xn[:, j * children:(j + 1) * children]
                amp = np.abs(inp)
            else:
                inp = np.concatenate([np.maximum(ref[(t + 1, j * children + c)], 0) for c in range(children)], axis=1)
                amp = np.concatenate([mag[(t + 1, j * children + c)] for c in range(children)], axis=1)
            ref[(t, j)] = inp @ w[t][j].T + b[t][j]
            mag[(t, j)] = amp @ np.abs(w[t][j]).T + np.abs(b[t][j])
    # Sums of <= children x hid = 8 terms per node over 3 levels, in two orders: each value within 2 x 3 x 8 eps of
    # its sum of |terms| (absolute: pre-activations cross 0, where an rtol alone would be unbounded).
    eps = np.finfo(np.float64).eps
    for t in range(depth):
        for j in range(children**t):
            np.testing.assert_allclose(pre[t][:, j], ref[(t, j)], rtol=0, atol=48 * eps * mag[(t, j)].max())
    np.testing.assert_allclose(out, ref[(0, 0)], rtol=0, atol=48 * eps * mag[(0, 0)].max())
    # PyTorch-default initialisation bounds, and the bias-free variant.
    assert float(jnp.max(jnp.abs(params["w"][0]))) <= 1 / np.sqrt(children * hid)
    assert float(jnp.max(jnp.abs(params["w"][-1]))) <= 1 / np.sqrt(children)
    assert init_tree_net(jax.random.key(0), depth, children, hid, bias=False)["b"] == ()
    with pytest.raises(ValueError, match="x must have shape"):
        tree_net(params, x[:, :4])
    with pytest.raises(ValueError, match="hid must be a positive integer"):
        init_tree_net(jax.random.key(0), depth, children, 0)


def test_best_unit_correlation_against_numpy(rng):
    pre = rng.normal(size=(200, 3, 4))
    z = rng.integers(0, 2, size=(200, 3))
    pre[:, 1, 2] += 2.0 * z[:, 1]  # one informative unit
    pre[:, 2, :] = 1.0  # a dead node: 0/0 -> 0
    got = np.asarray(best_unit_correlation(jnp.asarray(pre), jnp.asarray(z)))
    for j in range(3):
        corr = [0.0 if pre[:, j, k].std() == 0 else abs(np.corrcoef(pre[:, j, k], z[:, j])[0, 1]) for k in range(4)]
        assert got[j] == pytest.approx(max(corr), abs=1e-12)  # n = 200 samples: ~n eps x few = 1e-13
    assert got[1] > 0.5 and got[2] == 0.0


def test_mixed_losses_equal_separate_runs_and_eager_equals_jit():
    """One vmapped step with a loss per run trains exactly as separate single-loss trainings."""
    tree = H.make_hltm(2, 2, (0.7, 1.0), key=jax.random.key(1))
    x_eval = H.sample_views(tree, 64, key=jax.random.key(2))
    data = {"tree": tree, "x": x_eval.x, "lat": x_eval.latents[:-1]}
    stack = lambda *xs: jax.tree.map(lambda *a: jnp.stack(a), *xs)
    params = stack(*(init_tree_net(jax.random.key(s), 2, 2, 3) for s in (3, 4)))
    keys = jax.random.split(jax.random.key(5), 2)

    def sample(d, key, b):
        v = H.sample_views(d["tree"], b, key=key)
        return v.x, v.x_pos, v.x_neg

    apply_fn = lambda p, x: tree_net(p, x)[0]
    eval_fn = lambda p, d: jnp.stack([jnp.mean(best_unit_correlation(q, z)) for q, z in zip(tree_net(p, d["x"])[1],
                                                                                            d["lat"])])
    kw = dict(tau=0.1, lr=0.1, batch_size=8, steps=4, eval_every=2)
    both = train_runs(apply_fn, sample, eval_fn, params, stack(data, data), keys, loss=["infonce", "simple"], **kw)
    # The simple-loss run alone (the InfoNCE branch is the same selection; one compile less).
    one = train_runs(apply_fn, sample, eval_fn, jax.tree.map(lambda a: a[1:], params), stack(data), keys[1:],
                     loss="simple", **kw)
    np.testing.assert_allclose(one.train_loss[:, 0], both.train_loss[:, 1], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(both.params)):
        np.testing.assert_allclose(a[0], b[1], rtol=1e-5, atol=1e-7)
    assert both.metrics.shape == (3, 2, 2) and list(both.step) == [0, 2, 4]
    # The batch loss eager == jit.
    h = jax.random.normal(jax.random.key(6), (3, 8, 3))
    for loss in ("simple", "infonce"):
        eager = contrastive_loss(*h, loss=loss, tau=0.1)
        assert float(jax.jit(contrastive_loss, static_argnames=("loss", "tau"))(*h, loss=loss, tau=0.1)) == \
            pytest.approx(float(eager), rel=1e-6)
    with pytest.raises(ValueError, match="one of them per run"):
        train_runs(apply_fn, sample, eval_fn, params, stack(data, data), keys, loss=["infonce"], **kw)


def test_config_validation_and_registry():
    for bad in (dict(depth=0), dict(polarity_lows=(0.8,)), dict(polarity_lows=(0.9, 0.7)), dict(hids=(2, 2)),
                dict(main_hid=7), dict(seeds=0), dict(train=dict(lr=0.0)), dict(sweep_loss="byol"),
                dict(cov=dict(widths=()))):
        with pytest.raises(ValueError, match="invalid hltm config"):
            io.replace_config(HLTMConfig(), **bad)
    assert dataclasses.replace(HLTMConfig.smoke(), seeds=4).seeds == 4
    exp = cli._experiments()["hltm"]
    assert exp.config is HLTMConfig and "Tian" in exp.doc
