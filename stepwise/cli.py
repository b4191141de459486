"""Command line: ``stepwise run EXPERIMENT [--smoke | --scale gpu] [--out DIR] [config flags]``, ``stepwise report``,
``stepwise list``.

``--scale cpu`` (the default) runs an experiment's CPU configuration; ``--scale gpu`` its accelerator configuration
(``Config.gpu()``: stepwise_deep, ntk_after_training, directpred, noncontrastive_deep), which reads the embedded
photographs' patches unless ``--data-dir`` names a local STL-10 or CIFAR-10 folder, and prints its compute plan (FLOPs
per step from XLA's cost analysis, steps, estimated time on the detected device) before any compute; ``--plan-only``
prints the plan and stops. Config flags apply on top, e.g. ``--steps 3``; for the experiments whose schedule sits in
``setup`` (directpred, noncontrastive_deep) ``--steps`` and ``--batch-size`` mean ``--setup.steps`` and
``--setup.batch-size``.

``stepwise bench train --out DIR``: the training-step benchmark, JAX vs PyTorch (:mod:`stepwise.bench`).
``stepwise bench ntk --out DIR``: empirical-NTK time and peak memory per backend and size (:mod:`stepwise.bench_ntk`).
``stepwise verify --model path/to/file.py:make_model [--loss ...] [--out DIR]``: check a new architecture against the
stepwise theory and its own NTK (:mod:`stepwise.verify`).

Experiment flags come from the experiment's config dataclass (via tyro), e.g.
``stepwise run linear_bt --dataset digits --d 8 --out runs/digits``; ``stepwise run linear_bt --help`` lists them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _experiments():
    from experiments.directpred import DirectPredConfig, run as run_directpred
    from experiments.grassmann import GrassmannConfig, run as run_grassmann
    from experiments.hltm import HLTMConfig, run as run_hltm
    from experiments.kernel_bt import KernelBTConfig, run as run_kernel_bt
    from experiments.linear_bt import LinearBTConfig, run as run_linear_bt
    from experiments.noncontrastive_linear import NoncontrastiveLinearConfig, run as run_noncontrastive_linear
    from experiments.noncontrastive_deep import NoncontrastiveDeepConfig, run as run_noncontrastive_deep
    from experiments.ntk_after_training import NtkAfterTrainingConfig, run as run_ntk_after_training
    from experiments.stepwise_deep import DeepConfig, run as run_deep
    from experiments.width_sweep import WidthSweepConfig, run as run_width_sweep

    return {
        "linear_bt": (LinearBTConfig, run_linear_bt, "Simon et al. 2023 Fig. 1A/B: linear Barlow Twins vs exact theory"),
        "stepwise_deep": (DeepConfig, run_deep, "Simon et al. 2023 Fig. 1C/D: networks trained with BT/SimCLR/VICReg step"),
        "noncontrastive_linear": (NoncontrastiveLinearConfig, run_noncontrastive_linear,
                                  "Tian et al. 2021: linear BYOL/SimSiam vs Theorems 1-3, fixed points, basins (A1-A9)"),
        "noncontrastive_deep": (NoncontrastiveDeepConfig, run_noncontrastive_deep,
                                "Tian et al. 2021 Fig. 2: BYOL's linear predictor aligns with F, turns symmetric (B1-B3)"),
        "directpred": (DirectPredConfig, run_directpred,
                       "Tian et al. 2021 Sec. 6: DirectPred vs trained linear / two-layer predictors, eps sweep"),
        "kernel_bt": (KernelBTConfig, run_kernel_bt, "Simon et al. 2023 kernel extension: kernel machine vs kernel PCA theory"),
        "hltm": (HLTMConfig, run_hltm, "Tian et al. 2020: latent-tree (HLTM) learning, covariance operator, sampler"),
        "grassmann": (GrassmannConfig, run_grassmann,
                      "Esser et al. 2023: linear SSL collapse, exact Grassmann flow, SSL vs supervised NTK with width"),
        "width_sweep": (WidthSweepConfig, run_width_sweep,
                        "Simon et al. 2023 NTK extension: ReLU MLPs of growing width approach the NTK prediction"),
        "ntk_after_training": (NtkAfterTrainingConfig, run_ntk_after_training,
                               "Simon et al. 2023 E6: BT/SimCLR/VICReg embeddings vs their after-training NTK, cross-method"),
    }


SCALES = ("cpu", "gpu")


def _plans():
    """Experiments with a GPU scale -> their plan function ``plan(cfg) -> stepwise.scale.ComputePlan``."""
    from experiments.directpred.run import plan as plan_directpred
    from experiments.noncontrastive_deep.run import plan as plan_noncontrastive_deep
    from experiments.ntk_after_training.run import plan as plan_ntk_after_training
    from experiments.stepwise_deep.run import plan as plan_deep

    return {"stepwise_deep": plan_deep, "ntk_after_training": plan_ntk_after_training,
            "directpred": plan_directpred, "noncontrastive_deep": plan_noncontrastive_deep}


def _peek_any(argv: list[str], *flags: str) -> str | None:
    """The value of the first of ``flags`` given (e.g. ``--data-dir`` / ``--data_dir`` / ``--setup.data-dir``)."""
    for flag in flags:
        value = _peek(argv, flag)
        if value is not None:
            return value
    return None


def _variants(*names: str) -> tuple[str, ...]:
    """``--name``, ``--setup.name``, with hyphens and with underscores."""
    out = []
    for name in names:
        for prefix in ("--", "--setup."):
            out += [prefix + name.replace("_", "-"), prefix + name.replace("-", "_")]
    return tuple(dict.fromkeys(out))


def _setup_aliases(config_cls, argv: list[str]) -> list[str]:
    """For configs that hold their schedule in ``setup``: ``--steps`` / ``--batch-size`` -> ``--setup.<name>``."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(config_cls)}
    if "setup" not in fields or "steps" in fields:
        return argv
    out = []
    for arg in argv:
        for short in ("--steps", "--batch-size", "--batch_size"):
            if arg == short or arg.startswith(short + "="):
                arg = "--setup." + arg[2:]
        out.append(arg)
    return out


def _base_config(name: str, config_cls, *, scale: str, smoke: bool, argv: list[str]):
    """The configuration the flags apply to: CPU default, smoke, or GPU scale (per-loss where the config has losses).

    Raises:
      ValueError: an unknown scale, ``--smoke`` with ``--scale gpu``, or ``--scale gpu`` for an experiment without one.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown --scale {scale!r}; expected one of {', '.join(SCALES)}")
    loss = _peek(argv, "--loss")
    per_loss = hasattr(config_cls, "for_loss")
    if scale == "gpu":
        if smoke:
            raise ValueError("--smoke and --scale gpu exclude each other (--smoke is the tiny CPU configuration); "
                             "shrink a GPU-scale run with flags instead, e.g. --steps 3")
        plans = _plans()
        if name not in plans:
            raise ValueError(f"experiment {name!r} has no GPU scale; the experiments with one are {sorted(plans)}")
        kwargs = {"dataset": _peek_any(argv, *_variants("dataset")),
                  "data_dir": _peek_any(argv, *_variants("data-dir"))}
        if loss is not None and per_loss:
            kwargs["loss"] = loss
        return config_cls.gpu(**kwargs)
    if loss is not None and per_loss:  # per-loss defaults, then the flags on top
        return config_cls.smoke(loss) if smoke else config_cls.for_loss(loss)
    return config_cls.smoke() if smoke else config_cls()


def _peek(argv: list[str], flag: str) -> str | None:
    """The value given to ``flag`` (``--flag v`` or ``--flag=v``), if any."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _print_verdict(name: str, results: dict, seconds: float, where: Path) -> None:
    verdict = "PASSED" if results["passed"] else "FAILED"
    print(f"{name}: {verdict} ({sum(c['passed'] for c in results['checks'])}/{len(results['checks'])} checks) "
          f"in {seconds:.1f} s -> {where}")
    for c in results["checks"]:
        mark = "ok  " if c["passed"] else "FAIL"
        print(f"  {mark} {c['name']:<32} {c['value']!s:<24} {c['op']} {c['threshold']}")


def _run(name: str, argv: list[str]) -> int:
    import tyro

    experiments = _experiments()
    if name not in experiments:
        raise ValueError(f"unknown experiment {name!r}; expected one of {sorted(experiments)} (see `stepwise list`)")
    config_cls, run_fn, _ = experiments[name]
    parser = argparse.ArgumentParser(prog=f"stepwise run {name}", add_help=False)
    parser.add_argument("--smoke", action="store_true", help="tiny config used by the tests")
    parser.add_argument("--scale", default="cpu", help="cpu (default) or gpu: the accelerator configuration")
    parser.add_argument("--plan-only", action="store_true", help="print the compute plan and stop")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default runs/<experiment>_<dataset>)")
    parser.add_argument("--no-progress", action="store_true")
    ours, rest = parser.parse_known_args(argv)
    rest = _setup_aliases(config_cls, rest)
    base = _base_config(name, config_cls, scale=ours.scale, smoke=ours.smoke, argv=rest)
    cfg = tyro.cli(config_cls, default=base, args=rest,
                   prog=f"stepwise run {name} [--smoke | --scale gpu] [--plan-only] [--out DIR]")
    tag = getattr(cfg, "loss", None) or getattr(cfg, "dataset", "default")
    suffix = "_smoke" if ours.smoke else "_gpu" if ours.scale == "gpu" else ""
    out = ours.out or Path("runs") / f"{name}_{tag}{suffix}"
    kwargs = {}
    if ours.scale == "gpu" or ours.plan_only:
        plans = _plans()
        if name not in plans:
            raise ValueError(f"experiment {name!r} has no compute plan; the experiments with one are {sorted(plans)}")
        plan = plans[name](cfg)
        print("\n".join(plan.lines()), flush=True)
        if ours.plan_only:
            return 0
        kwargs["plan"] = plan
    t0 = time.perf_counter()
    results = run_fn(cfg, out, progress=not ours.no_progress and sys.stderr.isatty(), **kwargs)
    _print_verdict(name, results, time.perf_counter() - t0, out / "results.json")
    return 0


def _verify(argv: list[str]) -> int:
    import tyro

    from stepwise.verify import VerifyConfig, verify

    parser = argparse.ArgumentParser(prog="stepwise verify", add_help=False)
    parser.add_argument("--out", type=Path, default=None, help="run directory (default runs/verify_<model file>)")
    parser.add_argument("--smoke", action="store_true", help="tiny config used by the tests")
    parser.add_argument("--scale", default="cpu", help="cpu (default) or gpu: the accelerator configuration")
    parser.add_argument("--no-progress", action="store_true")
    ours, rest = parser.parse_known_args(argv)
    model = _peek(rest, "--model")
    if model is None and not any(a in ("-h", "--help") for a in rest):
        raise ValueError("stepwise verify needs --model path/to/file.py:make_model (or package.module:make_model); "
                         "see `stepwise verify --help` and the README section 'Verify your own architecture'")
    if ours.scale not in SCALES:
        raise ValueError(f"unknown --scale {ours.scale!r}; expected one of {', '.join(SCALES)}")
    if ours.smoke and ours.scale == "gpu":
        raise ValueError("--smoke and --scale gpu exclude each other (--smoke is the tiny CPU configuration)")
    default = VerifyConfig.smoke(model) if ours.smoke and model else None
    if ours.scale == "gpu" and model:
        default = VerifyConfig.gpu(model, dataset=_peek_any(rest, "--dataset"),
                                   data_dir=_peek_any(rest, "--data-dir", "--data_dir"))
    cfg = tyro.cli(VerifyConfig, default=default, args=rest, prog="stepwise verify [--out DIR] [--smoke | --scale gpu]")
    out = ours.out or Path("runs") / f"verify_{Path(cfg.model.rpartition(':')[0]).stem.replace('.', '_')}"
    t0 = time.perf_counter()
    results = verify(cfg, out, progress=not ours.no_progress and sys.stderr.isatty())
    _print_verdict(f"verify {cfg.model}", results, time.perf_counter() - t0, out / "report.html")
    return 0 if results["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="stepwise", description="Theory-vs-experiment checks for SSL learning dynamics.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run an experiment", add_help=False)
    p_run.add_argument("experiment")
    p_rep = sub.add_parser("report", help="collect run directories into one HTML report")
    p_rep.add_argument("--runs", type=Path, default=Path("runs"), help="folder of run directories")
    p_rep.add_argument("--out", type=Path, default=Path("reports/index.html"))
    sub.add_parser("list", help="list the experiments")
    sub.add_parser("verify", help="check a new architecture: `stepwise verify --model path/to/file.py:make_model`",
                   add_help=False)
    p_bench = sub.add_parser("bench", help="`stepwise bench train|ntk --out DIR`: training step JAX vs PyTorch; "
                             "empirical NTK", add_help=False)
    p_bench.add_argument("benchmark")
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "run":
            return _run(args.experiment, rest)
        if args.command == "verify":
            return _verify(rest)
        if args.command == "bench" and args.benchmark == "ntk":
            from stepwise.bench_ntk import main as bench_ntk_main

            return bench_ntk_main(rest)
        if args.command == "bench":
            from stepwise.bench import main as bench_main

            return bench_main([args.benchmark, *rest])
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.command == "report":
            from stepwise.plots.report import build_report

            path, n_runs, n_passed = build_report(args.runs, args.out)
            print(f"report: {n_passed}/{n_runs} experiments passed -> {path}")
            return 0
        for name, (_, _, doc) in _experiments().items():
            print(f"{name:<16} {doc}")
        return 0
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f"stepwise: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
