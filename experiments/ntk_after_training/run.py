"""Runner for the after-training NTK experiment (Simon et al. 2023, E6; theory note 6.11-6.12).

For each loss: train the `stepwise_deep` network (:func:`experiments.stepwise_deep.run.train_network`), detect its
steps, compute its empirical NTK after training (and at initialisation) over fixed augmented training pairs and the
tracked evaluation views, and compare (:mod:`stepwise.compare.ntk_agreement`) the learned top-k subspace of the
evaluation embeddings with the kernel theory's prediction, the order of the steps with the kernel's eigenvalue order,
and the methods with each other. Writes ``ntk_after_training.npz``, ``ntk_after_training.png`` (drawn from it) and
``results.json`` (last), each atomically.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.ntk_after_training.config import NtkAfterTrainingConfig
from experiments.stepwise_deep.run import describe, train_network
from experiments.stepwise_deep.run import workloads as deep_workloads
from stepwise import compare, io, scale
from stepwise.compare import ntk_agreement as cntk
from stepwise.data.augment import make_pairs
from stepwise.ntk import empirical_ntk
from stepwise.io import replace_config
from stepwise.training.ssl import Checkpointing, eval_key

EXPERIMENT = "ntk_after_training"
FIGURE = "ntk_after_training.png"
DATA = "ntk_after_training.npz"
PAIRS_TAG = 2**31 - 2  # fold_in tag of the NTK pairs' key: independent of every training and evaluation key


def _one_network(cfg: NtkAfterTrainingConfig, loss: str, progress: bool,
                 checkpoints: Checkpointing | None = None) -> dict:
    """Train one network (checkpointing to ``checkpoint-<loss>.msgpack``), compute its NTK(s) and every statistic of
    one method."""
    t0 = time.perf_counter()
    net = train_network(cfg.deep_config(loss), progress=progress, checkpoints=checkpoints, name=loss)
    res, model = net.result, net.model
    ntk_apply = _ntk_model(cfg.deep_config(loss), net.train.shape[1:]).apply
    t = res.step.astype(np.float64)
    det = compare.detect_steps(t, res.cov_out, res.eval_loss)
    onsets = np.sort(det.onsets[np.isfinite(det.onsets)])
    k = max(int(onsets.size), 1)

    t1 = time.perf_counter()
    x1, x2 = make_pairs(net.aug, jax.random.fold_in(jax.random.key(cfg.seed), PAIRS_TAG),
                        jnp.asarray(net.train[: cfg.n_pairs]))
    e1, _ = make_pairs(net.aug, eval_key(cfg.deep_config(loss).train.seed), jnp.asarray(net.evals))  # the tracked views
    xs = jnp.concatenate([x1, x2, e1])
    two_n = 2 * cfg.n_pairs
    kernels = {"final": np.asarray(empirical_ntk(ntk_apply, res.params, xs, backend=cfg.backend), np.float64)}
    if cfg.ntk_at_init:
        kernels["init"] = np.asarray(empirical_ntk(ntk_apply, model.params, xs, backend=cfg.backend), np.float64)
    ntk_time = time.perf_counter() - t1
    z_eval = np.asarray(res.snapshots[-1], np.float64)
    z_check = np.asarray(model.apply(res.params, e1), np.float64)  # the NTK's evaluation points are the tracked views
    if not np.allclose(z_check, z_eval, rtol=1e-4, atol=1e-6 * float(np.max(np.abs(z_eval)))):
        raise RuntimeError("internal: the evaluation views of the NTK differ from the ones train_ssl tracked")

    out = {"loss": loss, "k": k, "n_learned": int(onsets.size), "n_steps": det.n_steps, "onsets": onsets,
           "z_eval": z_eval, "kernels": kernels, "two_n": two_n, "train_time_s": res.train_time_s,
           "ntk_time_s": ntk_time, "wall_time_s": time.perf_counter() - t0}
    for name, kern in kernels.items():
        out[f"agreement_{name}"] = cntk.kernel_agreement(kern, two_n, z_eval, k, center=cfg.center,
                                                         n_draws=cfg.n_draws, seed=cfg.seed)
        if onsets.size >= 1:
            dirs = cntk.learned_directions(t, res.snapshots, onsets)
            out[f"order_{name}"] = cntk.step_order(dirs, kern, two_n, onsets, center=cfg.center)
    return out


def _ntk_model(dcfg, image_shape_: tuple[int, int, int]):
    """The network of ``dcfg`` computing in float32 (the NTK is a float32 spectrum even when training ran in bf16;
    the parameters are float32 in both)."""
    return replace_config(dcfg, net={"dtype": "float32"}).build_model(dcfg.augmentation().output_shape(image_shape_))


def plan(cfg: NtkAfterTrainingConfig, **device) -> scale.ComputePlan:
    """FLOPs of each network's training step and tracking (XLA's cost analysis) and of its NTKs (a lower bound:
    :func:`stepwise.scale.ntk_flops`), and the estimated time on the default device (or the one named by
    ``device_kind=...``, ``platform=...``; :func:`stepwise.scale.make_plan`). The NTKs run in float32 at HIGHEST
    precision, so their share of the estimate uses the float32 peak."""
    work: list[scale.Workload] = []
    for loss in cfg.losses:
        dcfg = cfg.deep_config(loss)
        work += [dataclasses.replace(w, name=f"{loss} {w.name}") for w in deep_workloads(dcfg)]
        shape = dcfg.data.shape
        model = _ntk_model(dcfg, shape)
        n = 2 * cfg.n_pairs + dcfg.data.n_eval
        kernels = 2 if cfg.ntk_at_init else 1
        flops = scale.ntk_flops(model.apply, model.params, n, dcfg.augmentation().output_shape(shape))
        work.append(scale.Workload(f"{loss} NTK ({n} points)", flops, kernels, "kernel", dtype="float32"))
    first = cfg.deep_config(cfg.losses[0])
    return scale.make_plan(f"{EXPERIMENT}: {describe(first)}, {len(cfg.losses)} networks", work, dtype=first.net.dtype,
                           programs=3 * len(cfg.losses), **device)


def _cross(cfg: NtkAfterTrainingConfig, nets: list[dict]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Cross-method matrix over {networks} x {their after-training NTK predictions}, each at its own k, and the
    per-pair baseline (mean + 2 std of random functions of the two networks' NTKs) for the networks."""
    embeddings = {n["loss"]: n["z_eval"] for n in nets}
    embeddings |= {f"{n['loss']} NTK": n["agreement_final"].predicted for n in nets}
    ks = {n["loss"]: n["k"] for n in nets} | {f"{n['loss']} NTK": n["k"] for n in nets}
    names, matrix = cntk.cross_similarity(embeddings, ks)
    rows = [cntk.kernel_rows(n["kernels"]["final"], n["two_n"], center=cfg.center) for n in nets]
    m = len(nets)
    baseline = np.zeros((m, m))
    for i in range(m):
        for j in range(i + 1, m):
            draws = cntk.random_function_similarity(rows[i], nets[i]["k"], rows[j], nets[j]["k"],
                                                    n_draws=cfg.n_draws, seed=cfg.seed)
            baseline[i, j] = baseline[j, i] = float(np.mean(draws) + 2.0 * np.std(draws))
    return names, matrix, baseline


def run(cfg: NtkAfterTrainingConfig, out_dir: str | Path, *, progress: bool = False,
        checkpoints: Checkpointing | None = None, plan: scale.ComputePlan | None = None) -> dict:
    """Run the experiment and write its files to ``out_dir``. Returns the results dictionary (with ``plan``, computed
    before the run, next to the measured times). ``checkpoints``: each network's training checkpoints (one file per
    loss, kept until the run ends, so a resumed run retrains none of the finished networks)."""
    from stepwise.plots.ntk_after_training import plot_ntk_after_training

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    nets = [_one_network(cfg, loss, progress, checkpoints) for loss in cfg.losses]
    names, matrix, baseline = _cross(cfg, nets)
    m = len(nets)
    pairs = np.triu_indices(m, 1)
    margins = matrix[:m, :m][pairs] - baseline[pairs]

    checks = [cntk.final_embedding_check(n["agreement_final"], f"ntk_similarity_{n['loss']}", kernel="after-training")
              for n in nets]
    checks.append(cntk.cross_method_margin_check(matrix[:m, :m][pairs], baseline[pairs]))
    checks += [c for n in nets if "order_final" in n
               for c in cntk.reported_order_checks(n["order_final"], n["loss"], n.get("order_init"))]

    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = {
        "losses": np.array([n["loss"] for n in nets]), "ks": np.array([n["k"] for n in nets]),
        "names": np.array(names), "cross": matrix, "cross_baseline": baseline,
        "baseline_random": np.array([n["agreement_final"].baseline_random for n in nets]),
    }
    for key in ("final", "init"):
        if f"agreement_{key}" in nets[0]:
            arrays[f"similarity_{key}"] = np.array([n[f"agreement_{key}"].similarity for n in nets])
            arrays[f"baseline_mean_{key}"] = np.array([n[f"agreement_{key}"].baseline_kernel_mean for n in nets])
            arrays[f"baseline_threshold_{key}"] = np.array([n[f"agreement_{key}"].baseline_threshold for n in nets])
    for i, n in enumerate(nets):
        arrays[f"onsets_{i}"] = n["onsets"]
        for key in ("final", "init"):
            if f"order_{key}" in n:
                order = n[f"order_{key}"]
                arrays[f"overlap_{key}_{i}"] = order.overlap
                arrays[f"gamma_assigned_{key}_{i}"] = order.gammas[order.assigned]
    io.save_npz_atomic(out_dir / DATA, **arrays)
    figure = plot_ntk_after_training(out_dir)

    def per_method(n: dict) -> dict:
        s = {k: n[k] for k in ("k", "n_learned", "n_steps", "onsets", "train_time_s", "ntk_time_s", "wall_time_s")}
        for key in ("final", "init"):
            if f"agreement_{key}" in n:
                s[f"agreement_{key}_ntk"] = n[f"agreement_{key}"].summary()
            if f"order_{key}" in n:
                s[f"order_{key}_ntk"] = n[f"order_{key}"].summary()
        return s

    summary = {
        "per_method": {n["loss"]: per_method(n) for n in nets},
        "cross_names": names, "cross_similarity": matrix, "cross_baseline_networks": baseline,
        "cross_margins": margins,
        "two_n": nets[0]["two_n"], "n_eval": int(nets[0]["z_eval"].shape[0]),
    }
    return io.write_results(
        out_dir, experiment=EXPERIMENT,
        config={**dataclasses.asdict(cfg), "networks": {loss: dataclasses.asdict(cfg.deep_config(loss))
                                                         for loss in cfg.losses}},
        checks=checks, wall_time_s=time.perf_counter() - t0,
        extra={"summary": summary, "figures": [figure.name], "data": [DATA]}, plan=plan,
    )
