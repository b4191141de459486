"""BYOL / SimSiam / DirectPred in the training engine: steps against hand-written references, the linear theory's
Euler step, EMA, stop-gradient, DirectPred's formulas against NumPy, determinism, resume and bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepwise.data import Augmentation, make_pairs
from stepwise.theory import noncontrastive as theory
from stepwise.training import TrainConfig
from stepwise.training import noncontrastive as ncm
from stepwise.training.engine import shardings
from test_training_ssl import AUG, N_IMAGES, SHAPE, apply, features, init_mlp

N_TRAIN, BATCH, LR = 40, 16, 0.05
DIRECTPRED = ncm.NoncontrastiveConfig(direct="directpred", rho=0.3, eps=0.05, freq=3, alpha_p=1.0)
# Engine vs hand-written reference: the same float64 arithmetic in another order (one jitted step vs eager ops).
# Each product of the small MLP (widths <= 36) is within ~36 eps of the sum of its absolute terms, a few dozen
# products per step, so after 1..2 steps parameters (entries 0.01..1) agree to ~1e-13 relative and the losses
# (1..4, no cancellation) to ~1e-14: rtol 1e-10 / atol 1e-13 and rtol 1e-12 leave >= 100x; a missing term or a
# wrong coefficient is off by >= 1e-4.
EPS = np.finfo(np.float64).eps


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(size=(N_IMAGES, *SHAPE))


def views(images, step, seed=0, batch=BATCH, aug=AUG):
    """The documented batch and views of a step (as in the SSL engine)."""
    k_idx, k_aug = jax.random.split(jax.random.fold_in(jax.random.key(seed), step))
    idx = jax.random.choice(k_idx, N_TRAIN, (batch,), replace=False)
    return make_pairs(aug, k_aug, jnp.asarray(images[:N_TRAIN])[idx])


def train(images, steps=2, *, nc=None, params=None, fn=apply, feats=features, track_every=1, **cfg):
    tcfg = TrainConfig(**({"steps": steps, "batch_size": BATCH, "lr": LR, "track_every": track_every,
                           "n_snapshot": 8} | cfg))
    params = init_mlp(jax.random.key(1)) if params is None else params
    return ncm.train_noncontrastive(fn, feats, params, images[:N_TRAIN], AUG, tcfg, nc or ncm.NoncontrastiveConfig(),
                                    eval_images=images[N_TRAIN:])


def initial_predictor(nc, d, seed=0, dtype=jnp.float64):
    key = jax.random.fold_in(jax.random.key(seed), 2**31 - 2)
    return ncm.init_predictor(nc.predictor, d, key=key, hidden=nc.pred_hidden, scale=nc.pred_init_scale, dtype=dtype)


def cosine_pair(p, a):
    """One direction of BYOL's loss, written out: mean_i (2 - 2 <p_i, a_i> / (|p_i| |a_i|))."""
    return jnp.mean(2 - 2 * jnp.sum(p * a, axis=1) / (jnp.linalg.norm(p, axis=1) * jnp.linalg.norm(a, axis=1)))


def test_byol_steps_match_a_hand_written_reference(images):
    """Two steps of BYOL (heavy ball, coupled weight decay, separate predictor lr and decay, EMA) to round-off."""
    mom, wd, alpha_p, eta_p, beta = 0.9, 0.01, 3.0, 0.05, 0.4
    nc = ncm.NoncontrastiveConfig(beta=beta, alpha_p=alpha_p, eta_p=eta_p)
    out = train(images, steps=2, nc=nc, optimizer="momentum", momentum=mom, weight_decay=wd)

    net = init_mlp(jax.random.key(1))
    pred = initial_predictor(nc, 8)["w"]
    target = net
    v_net, v_pred = jax.tree.map(jnp.zeros_like, net), jnp.zeros_like(pred)
    losses = []
    for step in range(2):
        v1, v2 = views(images, step)
        a1, a2 = apply(target, v1), apply(target, v2)  # constants: the target is not an argument of the loss

        def loss(net, pred):
            f1, f2 = apply(net, v1), apply(net, v2)
            return cosine_pair(f1 @ pred.T, a2) + cosine_pair(f2 @ pred.T, a1)

        value, (g_net, g_pred) = jax.value_and_grad(loss, argnums=(0, 1))(net, pred)
        losses.append(value)
        v_net = jax.tree.map(lambda v, g, w: mom * v + g + wd * w, v_net, g_net, net)
        v_pred = mom * v_pred + g_pred + eta_p * pred
        net = jax.tree.map(lambda w, v: w - LR * v, net, v_net)
        pred = pred - alpha_p * LR * v_pred
        target = jax.tree.map(lambda t, w: t + LR * beta * (w - t), target, net)

    np.testing.assert_allclose(out.train_loss, losses, rtol=1e-12)
    np.testing.assert_allclose(out.params["pred"]["w"], pred, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(out.wp[-1], pred, rtol=1e-10, atol=1e-13)
    for a, b in zip(jax.tree.leaves(out.params["net"]), jax.tree.leaves(net)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    for a, b in zip(jax.tree.leaves(out.target), jax.tree.leaves(target)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_l2_step_is_an_euler_step_of_lemma_1(images):
    """Linear bias-free net, linear predictor, l2 loss, SGD: one step = W + lr dW/dt of the theory with the batch's
    symmetrised moments X + X' = (A11 + A22)/2, X = (A12 + A21)/2 (and eta_p(theory) = alpha_p eta_p)."""
    cfg = dict(weight_decay=0.03)
    nc = ncm.NoncontrastiveConfig(loss="l2", alpha_p=2.0, eta_p=0.01, beta=0.5)

    def linear(params, x):
        return x.reshape(x.shape[0], -1) @ params["w"].T

    w0 = jax.random.normal(jax.random.key(3), (8, 36)) / 6
    out = train(images, steps=1, nc=nc, params={"w": w0}, fn=linear, feats=None, **cfg)
    v1, v2 = (np.asarray(v).reshape(BATCH, -1) for v in views(images, 0))
    a11, a22, a12 = v1.T @ v1 / BATCH, v2.T @ v2 / BATCH, v1.T @ v2 / BATCH
    x = (a12 + a12.T) / 2
    x_aug = (a11 + a22) / 2 - x
    wp0 = initial_predictor(nc, 8)["w"]
    hyper = nc.theory_hyper(TrainConfig(steps=1, batch_size=BATCH, lr=LR, **cfg))
    assert hyper.eta_pred == pytest.approx(2.0 * 0.01)
    field = theory.vector_field(theory.Weights(w0, wp0, w0), x, x_aug, hyper)
    np.testing.assert_allclose(out.params["net"]["w"], w0 + LR * field.w, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(out.params["pred"]["w"], wp0 + LR * field.wp, rtol=1e-10, atol=1e-13)
    # EMA: the target follows the *updated* online weights, W_a <- W_a + lr beta (W' - W_a).
    w1 = out.params["net"]["w"]
    np.testing.assert_allclose(out.target["w"], w0 + LR * 0.5 * (w1 - w0), rtol=1e-12)  # 3 roundings, no cancellation


def test_stop_gradient_stops_the_target_branch(images):
    """SimSiam: the step's gradient is that of the loss with the targets as constants, and differs from the
    gradient through both branches (so the comparison is not vacuous)."""
    nc = ncm.NoncontrastiveConfig(method="simsiam", alpha_p=1.0)
    out = train(images, steps=1, nc=nc)
    net, pred = init_mlp(jax.random.key(1)), initial_predictor(nc, 8)["w"]
    v1, v2 = views(images, 0)

    def loss(net, stop):
        f1, f2 = apply(net, v1), apply(net, v2)
        a1, a2 = (jax.lax.stop_gradient(f1), jax.lax.stop_gradient(f2)) if stop else (f1, f2)
        return cosine_pair(f1 @ pred.T, a2) + cosine_pair(f2 @ pred.T, a1)

    const = apply(net, v1), apply(net, v2)
    g_const = jax.grad(lambda n: cosine_pair(apply(n, v1) @ pred.T, const[1])
                       + cosine_pair(apply(n, v2) @ pred.T, const[0]))(net)
    g_stop, g_free = jax.grad(loss)(net, True), jax.grad(loss)(net, False)
    for a, b, w, c in zip(jax.tree.leaves(g_stop), jax.tree.leaves(g_const), jax.tree.leaves(out.params["net"]),
                          jax.tree.leaves(net)):
        # stop_gradient vs constants: the same primal and tangent computations (measured identical)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(w, c - LR * b, rtol=1e-10, atol=1e-13)
    differ = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(g_stop), jax.tree.leaves(g_free))]
    assert any(differ)
    assert out.target is None
    np.testing.assert_allclose(out.target_cos, 1.0, rtol=1e-12)  # cos(x, x): ~d eps (d = 8)


def _numpy_direct(corr, eps, formula, kind):
    s, u = np.linalg.eigh(corr)
    s = np.maximum(s, 0)
    if kind == "directpred":
        p = np.maximum(np.sqrt(s / s.max()) + eps, 1e-4) if formula == "code" else np.sqrt(s) + eps * s.max()
    else:
        p = np.maximum(s / s.max() + eps, 1e-4) if formula == "code" else s + eps
    return u @ np.diag(p) @ u.T


@pytest.mark.parametrize("kind", ["directpred", "directcopy"])
@pytest.mark.parametrize("formula", ["code", "paper"])
def test_direct_predictor_matches_numpy(rng, formula, kind):
    a = rng.normal(size=(6, 3))
    corrs = np.stack([a @ a.T * 2.5, np.diag([4.0, 1.0, 0.25, 1e-6, 0.0, 0.0])])  # rank 3; clamped zeros
    f = lambda c: ncm.direct_predictor(c, eps=0.1, formula=formula, kind=kind)  # noqa: E731
    ref = np.stack([_numpy_direct(c, 0.1, formula, kind) for c in corrs])
    eager = np.stack([f(c) for c in corrs])
    # Two eigensolvers (JAX's and NumPy's LAPACK) return the rank-3 matrix's zero eigenvalues as +-6 eps s_max
    # noise, which the clamp keeps or zeroes: p differs there by up to sqrt(6 eps s_max) (sqrt(6 eps) relative for
    # "code") for directpred, 6 eps s_max for directcopy; W_p = U diag(p) U^T inherits it, plus ~6 eps max|p| from
    # the products. (Both happened to produce identical noise here: measured 9e-16.) A float32 path is off by
    # sqrt(6 eps_32) ~ 8e-4 and a wrong formula by O(0.1).
    m, s_max = corrs.shape[1], np.linalg.eigvalsh(corrs[0]).max()
    scale = 1.0 if formula == "code" else s_max
    noise = np.sqrt(m * EPS * scale) if kind == "directpred" else m * EPS * scale
    atol = 2 * noise + 10 * m * EPS * np.abs(ref).max()
    np.testing.assert_allclose(eager, ref, rtol=0, atol=atol)
    np.testing.assert_allclose(jax.jit(f)(corrs[0]), ref[0], rtol=0, atol=atol)
    np.testing.assert_allclose(jax.vmap(f)(corrs), ref, rtol=0, atol=atol)


def test_direct_predictor_formulas_differ_as_documented(rng):
    a = rng.normal(size=(5, 5))
    corr = a @ a.T
    s_max = np.linalg.eigvalsh(corr).max()
    code = ncm.direct_predictor(corr, eps=0.0, formula="code")
    paper = ncm.direct_predictor(corr, eps=0.0, formula="paper")
    # The same eigh and U diag(p) U^T with p scaled by sqrt(s_max) (1 ulp): entries within ~2 x 5 eps
    # sum_k |u_ik u_jk| p_k <= 10 eps max|W_p| (absolute: off-diagonal entries may be near 0); 10x that.
    atol = 100 * EPS * np.abs(paper).max()
    np.testing.assert_allclose(paper, np.sqrt(s_max) * code, rtol=0, atol=atol)  # eps = 0: only the scale
    # Adding eps to p adds eps I exactly in exact arithmetic; the differences cancel entries of size max|W_p|.
    np.testing.assert_allclose(ncm.direct_predictor(corr, eps=0.1, formula="paper") - paper, 0.1 * s_max * np.eye(5),
                               rtol=0, atol=atol * (1 + 0.1 * s_max))
    np.testing.assert_allclose(ncm.direct_predictor(corr, eps=0.1, formula="code") - code, 0.1 * np.eye(5), rtol=0,
                               atol=100 * EPS * np.abs(code).max() * 1.1)
    zero = ncm.direct_predictor(np.zeros((3, 3)), eps=0.0)  # collapsed F: the floor, no NaN
    np.testing.assert_allclose(zero, 1e-4 * np.eye(3))


def test_direct_predictor_table7_constant(rng):
    """Table 7's p_j = sqrt(max(s_j - c, 0)) (c in units of s_max): c = 0 is DirectPred bit for bit; positive c
    floors the modes below c s_max (the code's 1e-4 inside the root: p = 0.01; the paper's: 0), negative c boosts."""
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    s = np.array([4.0, 1.0, 0.3, 0.2])  # s / s_max = 1, 0.25, 0.075, 0.05: two modes below c = 0.1
    corr = q @ np.diag(s) @ q.T
    for formula in ("code", "paper"):
        np.testing.assert_array_equal(ncm.direct_predictor(corr, eps=0.1, formula=formula, c=0.0),
                                      ncm.direct_predictor(corr, eps=0.1, formula=formula))
    expected = {("code", 0.1): np.sqrt([0.9, 0.15, 1e-4, 1e-4]), ("code", -0.1): np.sqrt([1.1, 0.35, 0.175, 0.15]),
                ("paper", 0.1): np.sqrt([3.6, 0.6, 0.0, 0.0])}
    # eigh of a matrix with eigenvalue gaps >= 0.1 = s_max / 40: eigenvectors within ~4 eps s_max / gap = 160 eps of
    # q's (up to sign), so W_p = U diag(p) U^T within ~2 x 160 eps x max p of the reference; 10x that. A floor at 0
    # instead of 1e-4 (code) moves two p_j by 0.01.
    for (formula, c), p in expected.items():
        ref = q @ np.diag(p) @ q.T
        np.testing.assert_allclose(ncm.direct_predictor(corr, eps=0.0, formula=formula, c=c), ref, rtol=0,
                                   atol=3200 * EPS * p.max())
    # eps adds eps I on top of the shifted root (Table 7 runs eps = 0)
    np.testing.assert_allclose(ncm.direct_predictor(corr, eps=0.1, c=0.1) - ncm.direct_predictor(corr, eps=0.0, c=0.1),
                               0.1 * np.eye(4), rtol=0, atol=100 * EPS)
    for bad in (dict(c=1.0), dict(c=-1.0), dict(c=0.1, kind="directcopy")):
        with pytest.raises(ValueError, match="Table 7"):
            ncm.direct_predictor(corr, eps=0.0, **bad)


def test_directpred_sets_wp_from_the_running_correlation(images):
    """F_hat = first batch's E[f f^T], then rho F_hat + (1 - rho) batch; W_p set after steps with step % freq == 0."""
    rho, nc = 0.3, DIRECTPRED
    out = train(images, steps=4, nc=nc)
    net = init_mlp(jax.random.key(1))
    f1, f2 = (np.asarray(apply(net, v)) for v in views(images, 0))
    corr0 = (f1.T @ f1 + f2.T @ f2) / (2 * BATCH)
    # sums of 2 x 16 products of features ~1: 32 eps relative to the sum of |terms| (measured 4e-16)
    np.testing.assert_allclose(out.corr_running[1], corr0, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(out.corr_running[0], 0.0)
    direct = [np.asarray(ncm.direct_predictor(c, eps=0.05)) for c in out.corr_running]
    # The same function on the same (full-rank) correlation inside and outside the step (measured identical);
    # rtol 1e-9 allows eigenvectors moved by eps ||F|| / gap for a gap down to ~1e-6 ||F||.
    np.testing.assert_allclose(out.wp[1], direct[1], rtol=1e-9, atol=1e-12)  # set after step 0
    np.testing.assert_allclose(out.wp[4], direct[4], rtol=1e-9, atol=1e-12)  # set after step 3
    for t in (2, 3):  # steps 1 and 2 train W_p by SGD from the plugged-in value
        assert not np.allclose(out.wp[t], direct[t], atol=1e-6)
    # The running correlation after step 1 uses the step-1 views through the step-1 online network.
    one = train(images, steps=1, nc=nc)
    g1, g2 = (np.asarray(apply(one.params["net"], v)) for v in views(images, 1))
    corr1 = rho * corr0 + (1 - rho) * (g1.T @ g1 + g2.T @ g2) / (2 * BATCH)
    np.testing.assert_allclose(out.corr_running[2], corr1, rtol=1e-10, atol=1e-14)
    # Another eps is data, not a new program: same compiled step, W_p from the same F_hat with the new eps.
    info = ncm.compiled_programs.cache_info()
    other = train(images, steps=1, nc=dataclasses.replace(nc, eps=0.3))
    assert ncm.compiled_programs.cache_info().misses == info.misses
    np.testing.assert_allclose(other.wp[1], ncm.direct_predictor(other.corr_running[1], eps=0.3), rtol=1e-9)


def test_lstsq_predictor_matches_numpy(rng):
    """Table 1's ridge least squares: W_p (F + reg s_max I) = (C + C^T) / 2, against NumPy's solve."""
    a, c = rng.normal(size=(6, 4)), rng.normal(size=(6, 6))
    for corr in (a @ a.T, a @ a.T + np.eye(6)):  # rank 4 (the ridge keeps it solvable) and full rank
        s_max = np.linalg.eigvalsh(corr).max()
        ref = np.linalg.solve((corr + 0.01 * s_max * np.eye(6)).T, (0.5 * (c + c.T)).T).T
        got = np.asarray(ncm.lstsq_predictor(corr, c, reg=0.01))
        # condition number <= (1 + 0.01) / 0.01 ~ 100: a backward-stable solve is good to ~100 x 6 eps relative
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e4 * EPS * np.abs(ref).max())
    # the least-squares fit of exact linear targets a = M f recovers M's symmetric part as reg -> 0 (full-rank F)
    m = rng.normal(size=(6, 6))
    m = m + m.T
    f = rng.normal(size=(200, 6))
    corr, cross = f.T @ f / 200, (f @ m.T).T @ f / 200
    np.testing.assert_allclose(ncm.lstsq_predictor(corr, cross, reg=1e-12), 0.5 * (m @ corr + corr @ m)
                               @ np.linalg.inv(corr), rtol=1e-8, atol=1e-8)
    assert np.all(np.isfinite(ncm.lstsq_predictor(np.zeros((3, 3)), np.zeros((3, 3)), reg=0.01)))


def test_lstsq_sets_wp_from_the_running_moments(images):
    """direct="lstsq": after step 0, W_p is the least squares of the first batch's F_hat and C_hat = E[a f^T], where
    the target starts as a copy of the online network (a = f at step 0)."""
    nc = ncm.NoncontrastiveConfig(direct="lstsq", rho=0.3, eps=0.01)
    out = train(images, steps=2, nc=nc)
    net = init_mlp(jax.random.key(1))
    f1, f2 = (np.asarray(apply(net, v)) for v in views(images, 0))
    corr0 = (f1.T @ f1 + f2.T @ f2) / (2 * BATCH)
    cross0 = (f2.T @ f1 + f1.T @ f2) / (2 * BATCH)  # p1 = W_p f1 predicts a2 = f2, p2 predicts a1 = f1
    np.testing.assert_allclose(out.corr_running[1], corr0, rtol=1e-10, atol=1e-14)
    # the same solve on moments equal to ~1e-15: the ridge bounds the condition number by ~100
    np.testing.assert_allclose(out.wp[1], ncm.lstsq_predictor(corr0, cross0, reg=0.01), rtol=1e-8, atol=1e-10)
    assert np.all(np.isfinite(out.wp)) and not np.allclose(out.wp[2], out.wp[1])
    # the other modes' states carry no cross-correlation (their checkpoints and programs are unchanged)
    plain = train(images, steps=1, nc=DIRECTPRED)
    assert np.all(np.isfinite(plain.wp))


def test_two_layer_predictor_and_symmetrize(rng):
    pred = ncm.init_predictor("mlp", 8, key=jax.random.key(0), hidden=5, dtype=jnp.float64)
    assert pred["w1"].shape == (5, 8) and pred["w2"].shape == (8, 5) and not np.any(pred["b1"])
    f = rng.normal(size=(3, 8))
    h = np.maximum(f @ np.asarray(pred["w1"]).T + np.asarray(pred["b1"])[None, :], 0)
    # Two products of width <= 8: each entry within ~13 eps of the sum of its absolute terms (absolute: outputs may
    # cancel); computed from |f| |W1|^T |W2|^T.
    scale = np.abs(f) @ np.abs(np.asarray(pred["w1"])).T @ np.abs(np.asarray(pred["w2"])).T
    np.testing.assert_allclose(ncm.predict("mlp", pred, f), h @ np.asarray(pred["w2"]).T + np.asarray(pred["b2"]),
                               rtol=0, atol=100 * EPS * scale.max())
    w = rng.normal(size=(4, 4))
    sym = ncm._regulate({"w": w}, np.eye(4), jnp.zeros((), jnp.int32), ncm.NoncontrastiveConfig(symmetrize=True), 0.1)
    np.testing.assert_allclose(sym["w"], (w + w.T) / 2, rtol=4 * EPS, atol=2 * EPS * np.abs(w).max())  # 2 roundings
    plain = ncm._regulate({"w": w}, np.eye(4), jnp.zeros((), jnp.int32), ncm.NoncontrastiveConfig(), 0.1)
    np.testing.assert_array_equal(plain["w"], w)


def test_same_seed_same_numbers_other_seed_differs(images):
    a, b = train(images, steps=3), train(images, steps=3)
    np.testing.assert_array_equal(a.train_loss, b.train_loss)
    np.testing.assert_array_equal(a.corr, b.corr)
    np.testing.assert_array_equal(a.wp, b.wp)
    c = train(images, steps=3, seed=4)
    assert not np.array_equal(a.train_loss, c.train_loss)


def test_resume_reproduces_the_uninterrupted_run(images, tmp_path):
    nc = DIRECTPRED  # the DirectPred test's configuration: its compiled programs are reused
    full = train(images, steps=6, nc=nc, track_every=2)
    ckpt = tmp_path / "nc.msgpack"
    first = ncm.train_noncontrastive(apply, features, init_mlp(jax.random.key(1)), images[:N_TRAIN], AUG,
                                     TrainConfig(steps=4, batch_size=BATCH, lr=LR, track_every=2, n_snapshot=8), nc,
                                     eval_images=images[N_TRAIN:],
                                     checkpoint=ckpt)
    assert ckpt.is_file() and first.train_loss.shape == (4,)
    resumed = ncm.train_noncontrastive(apply, features, init_mlp(jax.random.key(1)), images[:N_TRAIN], AUG,
                                       TrainConfig(steps=6, batch_size=BATCH, lr=LR, track_every=2, n_snapshot=8), nc,
                                       eval_images=images[N_TRAIN:],
                                       checkpoint=ckpt, resume=True)
    np.testing.assert_array_equal(resumed.step, full.step)
    # The same compiled programs on the same inputs and a float64 checkpoint (measured bit-identical); the
    # engine-vs-reference bounds of the header are the ceiling should XLA ever split a program differently.
    np.testing.assert_allclose(resumed.train_loss, full.train_loss, rtol=1e-12)
    np.testing.assert_allclose(resumed.wp, full.wp, rtol=1e-10, atol=1e-14)
    for a, b in zip(jax.tree.leaves(resumed.target), jax.tree.leaves(full.target)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_step_compiles_once_and_runs_share_programs(images):
    params = init_mlp(jax.random.key(2))
    before = [np.asarray(x).copy() for x in jax.tree.leaves(params)]
    train(images, steps=3, params=params, seed=7)
    info = ncm.compiled_programs.cache_info()
    train(images, steps=5, params=init_mlp(jax.random.key(5)), seed=8, track_every=2)
    after = ncm.compiled_programs.cache_info()
    assert (after.misses, after.hits) == (info.misses, info.hits + 1)  # other seed / length / params: no rebuild
    cfg, nc = ncm.program_config(TrainConfig(steps=1, batch_size=BATCH, lr=LR, n_snapshot=8),
                                 ncm.NoncontrastiveConfig())
    init, step, track = ncm.compiled_programs(apply, features, nc, cfg, AUG,
                                              shardings(jax.devices())[1], 8, jnp.dtype(jnp.float64))
    assert ncm.compiled_programs.cache_info().misses == info.misses  # that is the programs the runs used
    assert step._cache_size() == 1 and track._cache_size() == 1 and init._cache_size() == 1
    for leaf, ref in zip(jax.tree.leaves(params), before):  # the caller's arrays survive the donated steps
        assert not leaf.is_deleted()
        np.testing.assert_array_equal(np.asarray(leaf), ref)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": 0.0}, "beta"),
        ({"beta": 1.5}, "beta"),
        ({"beta": -0.1}, "beta"),
        ({"eta_p": -1e-3}, "eta_p"),
        ({"alpha_p": 0.0}, "alpha_p"),
        ({"rho": 1.0}, "rho"),
        ({"eps": -0.1}, "eps"),
        ({"freq": 0}, "freq"),
        ({"direct": "directpred", "predictor": "mlp"}, "linear"),
        ({"formula": "book"}, "formula"),
        ({"method": "moco"}, "method"),
        ({"direct": "directpred", "c": 1.0}, "Table 7"),
        ({"direct": "directpred", "c": float("nan")}, "Table 7"),
        ({"c": 0.1}, "directpred' only"),
    ],
)
def test_bad_config_is_a_clear_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ncm.NoncontrastiveConfig(**kwargs)


def test_bad_input_fails_before_training(images):
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        TrainConfig(steps=1, batch_size=8, lr=0.1, weight_decay=-0.01)  # negative eta
    with pytest.raises(ValueError, match="lr x beta"):
        train(images, steps=1, nc=ncm.NoncontrastiveConfig(beta=1.0), lr=2.0)
    with pytest.raises(ValueError, match="larger than"):
        train(images, steps=1, batch_size=41)
    with pytest.raises(ValueError, match="does not fit"):
        ncm.train_noncontrastive(apply, features, init_mlp(jax.random.key(0)), images[:N_TRAIN],
                                 Augmentation(crop=(9, 9)), TrainConfig(steps=1, batch_size=8, lr=0.1),
                                 ncm.NoncontrastiveConfig(), eval_images=images[N_TRAIN:])
