"""Command line: ``stepwise run EXPERIMENT [--smoke | --scale gpu] [--out DIR] [config flags]``, ``stepwise report``,
``stepwise list``.

``--scale cpu`` (the default) runs an experiment's CPU configuration; ``--scale gpu`` its accelerator configuration
(``Config.gpu()``: stepwise_deep, ntk_after_training, directpred, noncontrastive_deep), which reads the embedded
photographs' patches unless ``--data-dir`` names a local STL-10 or CIFAR-10 folder, and prints its compute plan (FLOPs
per step from XLA's cost analysis, steps, estimated time on the detected device) before any compute; ``--plan-only``
prints the plan and stops. Config flags apply on top, e.g. ``--train.steps 3``.

``stepwise verify --model path/to/file.py:make_model [--loss ...] [--out DIR]``: check a new architecture against the
stepwise theory and its own NTK (:mod:`stepwise.verify`). The benchmarks are not part of the library: from the
repository root, ``python benchmarks/bench_train.py --out DIR`` (JAX vs PyTorch) and ``python benchmarks/bench_ntk.py
--out DIR`` (empirical NTK).

Experiment flags come from the experiment's config dataclass (via tyro); a sub-config's fields carry its name, e.g.
``stepwise run linear_bt --data.dataset digits --d 8 --out runs/digits``; ``stepwise run linear_bt --help`` lists
them. The flat flags of the configs before they held sub-configs (``--dataset``, ``--lr``, ``--steps``) still work
for one release: :func:`_legacy_flags` maps each to the one field of that name and prints the new flag.

Output folders (``run``, ``verify``; ``report``'s file): checked before any compute (not empty, not a file, creatable,
writable, enough free space, not holding another run unless ``--overwrite``); a run is written into
``<out>.partial`` and renamed onto ``<out>`` when complete (:class:`stepwise.io.RunFolder`). The training runs
(:data:`CHECKPOINTED` and ``verify``) checkpoint every ``--checkpoint-every N`` steps (default: every 3 minutes of
training) into ``<out>.partial``; Ctrl-C saves a checkpoint and exits 130; the same command with ``--resume``
continues bit-identically (a changed config is refused, naming the fields; ``--steps`` may grow). Checkpoints are
removed when the run completes unless ``--keep-checkpoint``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
import typing
from pathlib import Path
from typing import Any

from stepwise.io import OutputError, RunFolder, check_output_file


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment of ``stepwise run``: its config class, runner and one-line description, and what the CLI may
    ask of it (declared here, never probed; whether it checkpoints is :data:`CHECKPOINTED`, known before the
    experiments are imported).

    Every config class has ``smoke()`` (the tests' configuration) and a default constructor; a ``per_loss``
    experiment's ``smoke(loss)``, ``for_loss(loss)`` and ``gpu(loss=...)`` also take ``--loss``; one with a
    ``plan`` has ``gpu(dataset=..., data_dir=...)`` and prints ``plan(cfg)`` before a ``--scale gpu`` run;
    ``presets`` maps a ``--scale`` name to the config's classmethod building it.
    """

    config: type
    run: Any
    doc: str
    per_loss: bool = False
    plan: Any = None
    presets: dict[str, str] = dataclasses.field(default_factory=dict)


def _experiments() -> dict[str, Experiment]:
    from experiments.directpred import DirectPredConfig, run as run_directpred
    from experiments.directpred.run import plan as plan_directpred
    from experiments.grassmann import GrassmannConfig, run as run_grassmann
    from experiments.hltm import HLTMConfig, run as run_hltm
    from experiments.kernel_bt import KernelBTConfig, run as run_kernel_bt
    from experiments.linear_bt import LinearBTConfig, run as run_linear_bt
    from experiments.noncontrastive_linear import NoncontrastiveLinearConfig, run as run_noncontrastive_linear
    from experiments.noncontrastive_deep import NoncontrastiveDeepConfig, run as run_noncontrastive_deep
    from experiments.noncontrastive_deep.run import plan as plan_noncontrastive_deep
    from experiments.ntk_after_training import NtkAfterTrainingConfig, run as run_ntk_after_training
    from experiments.ntk_after_training.run import plan as plan_ntk_after_training
    from experiments.speedup import SpeedupConfig, run as run_speedup
    from experiments.step_map import StepMapConfig, run as run_step_map
    from experiments.stepwise_deep import DeepConfig, run as run_deep
    from experiments.stepwise_deep.run import plan as plan_deep
    from experiments.width_sweep import WidthSweepConfig, run as run_width_sweep

    return {
        "linear_bt": Experiment(LinearBTConfig, run_linear_bt,
                                "Simon et al. 2023 Fig. 1A/B: linear Barlow Twins vs exact theory"),
        "stepwise_deep": Experiment(DeepConfig, run_deep,
                                    "Simon et al. 2023 Fig. 1C/D: networks trained with BT/SimCLR/VICReg step",
                                    per_loss=True, plan=plan_deep,
                                    presets={"cpu-resnet": "resnet_cpu"}),
        "noncontrastive_linear": Experiment(
            NoncontrastiveLinearConfig, run_noncontrastive_linear,
            "Tian et al. 2021: linear BYOL/SimSiam vs Theorems 1-3, fixed points, basins (A1-A9)"),
        "noncontrastive_deep": Experiment(
            NoncontrastiveDeepConfig, run_noncontrastive_deep,
            "Tian et al. 2021 Fig. 2: BYOL's linear predictor aligns with F, turns symmetric (B1-B3)",
            plan=plan_noncontrastive_deep),
        "directpred": Experiment(DirectPredConfig, run_directpred,
                                 "Tian et al. 2021 Sec. 6: DirectPred vs trained linear / two-layer predictors, "
                                 "eps sweep",
                                 plan=plan_directpred),
        "kernel_bt": Experiment(KernelBTConfig, run_kernel_bt,
                                "Simon et al. 2023 kernel extension: kernel machine vs kernel PCA theory"),
        "hltm": Experiment(HLTMConfig, run_hltm,
                           "Tian et al. 2020: latent-tree (HLTM) learning, covariance operator, sampler"),
        "grassmann": Experiment(GrassmannConfig, run_grassmann,
                                "Esser et al. 2023: linear SSL collapse, exact Grassmann flow, SSL vs supervised NTK "
                                "with width"),
        "width_sweep": Experiment(WidthSweepConfig, run_width_sweep,
                                  "Simon et al. 2023 NTK extension: ReLU MLPs of growing width approach the NTK "
                                  "prediction"),
        "step_map": Experiment(StepMapConfig, run_step_map,
                               "Simon et al. 2023 E3/E4: where BT/SimCLR/VICReg learn in steps (init scale x lr x "
                               "width map)"),
        "ntk_after_training": Experiment(
            NtkAfterTrainingConfig, run_ntk_after_training,
            "Simon et al. 2023 E6: BT/SimCLR/VICReg embeddings vs their after-training NTK, cross-method",
            plan=plan_ntk_after_training),
        "speedup": Experiment(SpeedupConfig, run_speedup,
                              "Simon et al. 2023 Sec. 5: gradient focused on small eigendirections speeds up the last "
                              "step"),
    }


SCALES = ("cpu", "gpu")

# Experiments whose training loops checkpoint (``--checkpoint-every``, ``--resume``, ``--keep-checkpoint``).
CHECKPOINTED = ("stepwise_deep", "ntk_after_training", "noncontrastive_deep", "directpred")
CHECKPOINT_SECONDS = 180.0  # the default interval: a few minutes of training


def _output_flags(parser: argparse.ArgumentParser, default_out: str) -> None:
    """The output and checkpoint flags shared by ``run`` and ``verify``."""
    parser.add_argument("--out", default=None, help=f"run directory (default {default_out})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous run in --out (when the new one completes)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    parser.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                        help=f"checkpoint every N training steps (default: every {CHECKPOINT_SECONDS:g} s of training)")
    parser.add_argument("--keep-checkpoint", action="store_true", help="keep the checkpoints in the finished run")
    # stepwise.launch: a process other than 0 of a multi-process run writes into a fresh temporary --out and, with
    # --resume, takes process 0's checkpoint by broadcast (every process must resume together).
    parser.add_argument("--secondary-process", action="store_true", help=argparse.SUPPRESS)


def _check_checkpoint_flags(ours, name: str, checkpointed: bool) -> None:
    if ours.checkpoint_every is not None and ours.checkpoint_every < 1:
        raise OutputError(f"--checkpoint-every must be >= 1 step (got {ours.checkpoint_every}); leave it out for "
                          f"every {CHECKPOINT_SECONDS:g} s of training")
    if not checkpointed:
        given = [f for f, v in (("--resume", ours.resume), ("--checkpoint-every", ours.checkpoint_every is not None),
                                ("--keep-checkpoint", ours.keep_checkpoint)) if v]
        if given:
            raise OutputError(f"{' '.join(given)}: {name} does not checkpoint (it has no long training loop); the "
                              f"commands that do are `stepwise run` {', '.join(CHECKPOINTED)} and `stepwise verify`")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b": value}`` (JSON-normalised, so tuples equal lists)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: tree}


def _info(command: str, experiment: str, cfg) -> dict[str, Any]:
    """What ``run.json`` records of a run, for comparing a resumed run with the interrupted one."""
    from stepwise.io import jsonable_tree

    return {"command": command, "experiment": experiment,
            "config": json.loads(json.dumps(jsonable_tree(dataclasses.asdict(cfg))))}


def _steps_of(cfg) -> int | None:
    """The run length a resume may change: the config's field ``steps``, at whatever depth it stands."""
    from stepwise.io import config_value

    try:
        steps = config_value(cfg, "steps")
    except ValueError:  # several sub-configs have steps (grassmann's ssl and sup): no one run length to check
        return None
    return steps if isinstance(steps, int) else None


def _check_resume(folder: RunFolder, info: dict[str, Any], cfg) -> None:
    """Refuse a resume whose experiment or config differs from the interrupted run's (except the step count, which
    must not fall below a checkpoint's step)."""
    from stepwise.io import checkpoint_files, checkpoint_step

    saved = folder.read_info()
    if saved is None:
        raise OutputError(f"--resume: {folder.staging} has no readable run.json describing the interrupted run; start "
                          "afresh with --overwrite")
    if saved.get("experiment") != info["experiment"]:
        raise OutputError(f"--resume: the checkpoint in {folder.staging} is of {saved.get('experiment')!r}, not "
                          f"{info['experiment']!r}; run that command, or start afresh with --overwrite")
    old, new = _flat(saved.get("config", {})), _flat(info["config"])
    diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if k.rsplit(".", 1)[-1] != "steps" and old.get(k) != new.get(k)]
    if diff and set(old) != set(new):  # fields renamed or regrouped into sub-configs by an upgrade in between
        raise OutputError(f"--resume: the interrupted run ({saved.get('command')}) was written by a stepwise whose "
                          f"{info['experiment']} config had other fields ({'; '.join(diff)}); this version cannot "
                          "resume it: start afresh with --overwrite")
    if diff:
        raise OutputError(f"--resume: the config differs from the interrupted run's ({saved.get('command')}) in "
                          f"{'; '.join(diff)}; resume with the same flags (only --steps may change), or start afresh "
                          "with --overwrite")
    steps = _steps_of(cfg)
    for path in checkpoint_files(folder.staging):
        at = checkpoint_step(path)
        if steps is not None and at is not None and at > steps:
            raise OutputError(f"--resume: checkpoint {path} is at step {at}, past --steps {steps}; resume with "
                              f"--steps >= {at}")


def _planned_bytes(name: str, cfg) -> int:
    """A conservative estimate of what a run writes: 64 MB for results, arrays and figures, plus for each trained
    network its tracked evaluation snapshots twice (data file and checkpoint), 4 bytes x n_eval x 512 per point."""
    if name == "ntk_after_training":
        nets = [cfg.deep_config(loss) for loss in cfg.losses]
    elif name == "noncontrastive_deep":
        from experiments.noncontrastive_deep.run import no_ema_runs

        nets = [cfg.setup] * (cfg.seeds + len(no_ema_runs(cfg)) * cfg.no_ema.seeds)
    elif name == "directpred":
        from experiments.directpred.run import runs_per_method

        nets = [cfg.setup] * sum(runs_per_method(cfg).values())
    elif name in ("stepwise_deep", "verify"):
        nets = [cfg]
    else:
        nets = []
    from stepwise.io import config_value

    # verify may extend its training up to its step budget (a property, not a field); the fields may stand in
    # sub-configs (train, data)
    points = sum((-(-getattr(n, "step_budget", config_value(n, "steps")) // config_value(n, "track_every")) + 1)
                 * config_value(n, "n_eval") for n in nets)
    if name == "step_map":  # no snapshots kept: per cell its tracked spectrum (d + 2 numbers per point), 8 bytes each
        points += (cfg.n_cells + len(cfg.losses)) * (cfg.track_points + 1) * 18 // 512
    return 64_000_000 + 2 * 4 * 512 * points


class _Exit(Exception):
    """Leave ``main`` with this exit status (the message is already printed)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def _resume_hint(command: list[str]) -> str:
    return shlex.join([*command, *([] if "--resume" in command else ["--resume"])])


def _execute(folder: RunFolder, command: list[str], compute, *, keep_checkpoint: bool) -> tuple[dict, Path]:
    """Run ``compute(staging)`` and publish the folder; on Ctrl-C or an error keep only what ``--resume`` needs."""
    from stepwise.training.ssl import TrainingInterrupted

    try:
        results = compute(folder.staging)
    except KeyboardInterrupt as err:
        kept = folder.abandon()
        where = f" at step {err.step}" if isinstance(err, TrainingInterrupted) else ""
        if kept is not None:
            print(f"stepwise: interrupted{where}; checkpoint saved in {kept}. Continue with:\n  "
                  f"{_resume_hint(command)}", file=sys.stderr)
        else:
            print(f"stepwise: interrupted{where}; no checkpoint was written, nothing kept", file=sys.stderr)
        raise _Exit(130) from None
    except BaseException as err:
        kept = folder.abandon()
        if kept is not None and isinstance(err, Exception):
            print(f"stepwise: nothing was published to {folder.target}; the checkpoints stay in {kept} (continue "
                  f"with: {_resume_hint(command)})", file=sys.stderr)
        raise
    return results, folder.publish(keep_checkpoint=keep_checkpoint)


def _leaf_paths(config_cls) -> dict[str, list[str]]:
    """Every field name of a config dataclass, its sub-configs' included -> the dotted paths where it stands."""
    hints = typing.get_type_hints(config_cls)
    out: dict[str, list[str]] = {}
    for f in dataclasses.fields(config_cls):
        if dataclasses.is_dataclass(hints[f.name]):
            for leaf, paths in _leaf_paths(hints[f.name]).items():
                out.setdefault(leaf, []).extend(f"{f.name}.{p}" for p in paths)
        else:
            out.setdefault(f.name, []).append(f.name)
    return out


def _old_flag_paths(config_cls, name: str) -> list[str]:
    """The dotted paths the flat field ``name`` (underscores) of an earlier release stands for now: the config's own
    ``LEGACY_FLAGS`` entry (a renamed field, e.g. speedup's ``deep`` -> ``deep.run``), else the one field of that name
    in a sub-config (``lr`` -> ``train.lr``), else a prefix that names a sub-config (``deep_steps`` -> ``deep.steps``);
    several where the name is ambiguous, none where it is no old flag (a field, or unknown). A dotted name looks
    inside its sub-config the same way (``setup.width`` -> ``setup.net.width``)."""
    hints = typing.get_type_hints(config_cls)
    head, dot, rest = name.partition(".")
    if dot:
        sub = hints.get(head)
        return [f"{head}.{p}" for p in _old_flag_paths(sub, rest)] if dataclasses.is_dataclass(sub) else []
    leaves = _leaf_paths(config_cls)
    if name in getattr(config_cls, "LEGACY_FLAGS", {}):
        return [config_cls.LEGACY_FLAGS[name]]
    where = leaves.get(name, [])
    if where:
        return [] if name in where else where
    return [p for p in {p for ps in leaves.values() for p in ps} if p.count(".") == 1 and name == p.replace(".", "_")]


def _legacy_flags(config_cls, argv: list[str]) -> tuple[list[str], list[str]]:
    """The flat flags of configs before they held sub-configs, mapped onto the nested ones (kept for one release).

    A flag that is no top-level field but stood for one field now in a sub-config (:func:`_old_flag_paths`) is
    rewritten to its dotted form, e.g. ``--lr 0.1`` -> ``--train.lr 0.1``, ``--no-flip`` -> ``--aug.no-flip``,
    ``--deep-steps=5`` -> ``--deep.steps=5``, ``--setup.width 1`` -> ``--setup.net.width 1``. Returns the mapped
    arguments and one note per mapped flag naming the new flag (printed once the config is built, so that an error
    in the flags comes first).

    Raises:
      ValueError: the flag names fields of several sub-configs (the message lists the dotted flags to choose from).
    """
    out, notes = [], []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:], notes
        flag, eq, value = arg.partition("=")
        if not flag.startswith("--"):
            out.append(arg)
            continue
        name = flag[2:].replace("-", "_")
        where = _old_flag_paths(config_cls, name)
        head, _, last = name.rpartition(".")
        negated = not where and last.startswith("no_")
        if negated:
            where = _old_flag_paths(config_cls, f"{head}.{last[3:]}" if head else last[3:])
        dotted = [p.replace("_", "-") for p in where]
        if negated:
            dotted = [f"{p.rpartition('.')[0]}.no-{p.rpartition('.')[2]}" for p in dotted]
        if len(dotted) == 1:
            notes.append(f"stepwise: note: {flag} is read as --{dotted[0]}; write the dotted flag (the flat form "
                         "works until the next release)")
            out.append(f"--{dotted[0]}{eq}{value}")
        elif dotted:
            raise ValueError(f"{flag} is ambiguous: this config has it in several parts; give "
                             f"{' or '.join('--' + d for d in dotted)}")
        else:
            out.append(arg)
    return out, notes


def _peek_field(argv: list[str], config_cls, name: str) -> str | None:
    """The value given on the command line (after :func:`_legacy_flags`) to the one field ``name`` of the config."""
    where = _leaf_paths(config_cls).get(name, [name])
    for path in where:
        head, _, leaf = path.rpartition(".")
        for spelling in (leaf, leaf.replace("_", "-")):
            value = _peek(argv, f"--{head + '.' if head else ''}{spelling}")
            if value is not None:
                return value
    return None


def _base_config(name: str, exp: Experiment, *, scale: str, smoke: bool, argv: list[str]):
    """The configuration the flags apply to: CPU default, smoke, or GPU scale (per-loss where the config has losses).

    Raises:
      ValueError: an unknown scale, ``--smoke`` with ``--scale gpu``, or ``--scale gpu`` for an experiment without one
        (likewise a preset of ``Experiment.presets``, e.g. stepwise_deep's ``cpu-resnet``).
    """
    config_cls = exp.config
    loss = _peek(argv, "--loss") if exp.per_loss else None
    by_loss = {"loss": loss} if loss is not None else {}
    experiments = _experiments()
    presets = {p for e in experiments.values() for p in e.presets}
    if scale in presets:
        if scale not in exp.presets or smoke:
            owners = [n for n, e in experiments.items() if scale in e.presets]
            raise ValueError(f"--scale {scale} is a preset of {', '.join(owners)} only, without --smoke (got "
                             f"{name!r}{' with --smoke' if smoke else ''})")
        return getattr(config_cls, exp.presets[scale])(**by_loss)
    if scale not in SCALES:
        raise ValueError(f"unknown --scale {scale!r}; expected one of {', '.join((*SCALES, *sorted(presets)))}")
    if scale == "gpu":
        if smoke:
            raise ValueError("--smoke and --scale gpu exclude each other (--smoke is the tiny CPU configuration); "
                             "shrink a GPU-scale run with flags instead, e.g. --steps 3")
        if exp.plan is None:
            raise ValueError(f"experiment {name!r} has no GPU scale; the experiments with one are "
                             f"{sorted(n for n, e in experiments.items() if e.plan is not None)}")
        return config_cls.gpu(dataset=_peek_field(argv, config_cls, "dataset"),
                               data_dir=_peek_field(argv, config_cls, "data_dir"), **by_loss)
    if loss is not None:  # per-loss defaults, then the flags on top
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
    from stepwise.compare.checks import summary_line

    verdict = "PASSED" if results["passed"] else "FAILED"
    print(f"{name}: {verdict} ({summary_line(results['checks'])}) in {seconds:.1f} s -> {where}")
    for c in results["checks"]:
        kind = c.get("kind", "theory")
        mark = "rep " if kind == "reported" else "ok  " if c["passed"] else "FAIL"
        ref = "(not gated)" if kind == "reported" else f"{c['op']} {c['threshold']}"
        print(f"  {mark} {kind:<11} {c['name']:<32} {c['value']!s:<24} {ref}")
        causes = (results.get("summary") or {}).get("failure_causes") or {}
        if mark == "FAIL" and c["name"] in causes:
            from stepwise.compare.diagnose import CAUSES

            for cause in causes[c["name"]]:
                print(f"         why: {CAUSES.get(cause, cause)}")


def _run(name: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"stepwise run {name}", add_help=False)
    parser.add_argument("--smoke", action="store_true", help="tiny config used by the tests")
    parser.add_argument("--scale", default="cpu",
                        help="cpu (default), gpu (the accelerator configuration) or cpu-resnet "
                             "(stepwise_deep's ResNet stand-in on the CPU)")
    parser.add_argument("--plan-only", action="store_true", help="print the compute plan and stop")
    parser.add_argument("--no-progress", action="store_true")
    _output_flags(parser, "runs/<experiment>_<dataset or loss>")
    ours, rest = parser.parse_known_args(argv)
    command = ["stepwise", "run", name, *argv]
    _check_checkpoint_flags(ours, name, name in CHECKPOINTED)
    # The output folder first: before the experiments are imported, when --out is given.
    folder = None
    if ours.out is not None and not ours.plan_only:
        folder = RunFolder.open(ours.out, overwrite=ours.overwrite, resume=ours.resume and not ours.secondary_process)
    try:
        return _run_in(name, ours, rest, command, folder)
    except BaseException:
        if folder is not None:
            folder.abandon()
        raise


def _run_in(name: str, ours, rest: list[str], command: list[str], folder: RunFolder | None) -> int:
    import tyro

    experiments = _experiments()
    if name not in experiments:
        raise ValueError(f"unknown experiment {name!r}; expected one of {sorted(experiments)} (see `stepwise list`)")
    exp = experiments[name]
    rest, notes = _legacy_flags(exp.config, rest)
    base = _base_config(name, exp, scale=ours.scale, smoke=ours.smoke, argv=rest)
    cfg = tyro.cli(exp.config, default=base, args=rest,
                   prog=f"stepwise run {name} [--smoke | --scale gpu] [--plan-only] [--out DIR]")
    for note in notes:
        print(note, file=sys.stderr)
    kwargs = {}
    if ours.scale == "gpu" or ours.plan_only:
        if exp.plan is None:
            raise ValueError(f"experiment {name!r} has no compute plan; the experiments with one are "
                             f"{sorted(n for n, e in experiments.items() if e.plan is not None)}")
        plan = exp.plan(cfg)
        print("\n".join(plan.lines()), flush=True)
        if ours.plan_only:
            return 0
        kwargs["plan"] = plan
    if folder is None:
        from stepwise.io import config_value

        tag = config_value(cfg, "loss") or config_value(cfg, "dataset", "default")
        suffix = ("_smoke" if ours.smoke else "_gpu" if ours.scale == "gpu"
                  else f"_{ours.scale.replace('-', '_')}" if ours.scale in exp.presets else "")
        folder = RunFolder.open(str(Path("runs") / f"{name}_{tag}{suffix}"), overwrite=ours.overwrite,
                                resume=ours.resume and not ours.secondary_process)
    return _compute(folder, ours, command, _info(shlex.join(command), name, cfg), cfg,
                    lambda staging: exp.run(cfg, staging, progress=not ours.no_progress and sys.stderr.isatty(),
                                           **kwargs, **_checkpointing(name, ours, folder)),
                    name=name, label=name, artifact="results.json")


def _checkpointing(name: str, ours, folder: RunFolder) -> dict[str, Any]:
    """The ``checkpoints`` argument of a checkpointing runner, or none."""
    if name not in (*CHECKPOINTED, "verify"):
        return {}
    from stepwise.training.ssl import Checkpointing

    return {"checkpoints": Checkpointing(folder.staging, every=ours.checkpoint_every or 0, seconds=CHECKPOINT_SECONDS,
                                         resume=folder.resumed or (ours.resume and ours.secondary_process))}


def _compute(folder: RunFolder, ours, command: list[str], info: dict, cfg, compute, *, name: str, label: str,
             artifact: str) -> int:
    """The checks that need the config (resume, free space), then the run, then publish and print the verdict."""
    if folder.resumed:
        _check_resume(folder, info, cfg)
    folder.require_space(_planned_bytes(name, cfg))
    if not folder.resumed:
        folder.write_info(info)
    t0 = time.perf_counter()
    results, where = _execute(folder, command, compute, keep_checkpoint=ours.keep_checkpoint)
    _print_verdict(label, results, time.perf_counter() - t0, where / artifact)
    return 0 if name != "verify" or results["passed"] else 1


def _verify(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stepwise verify", add_help=False)
    parser.add_argument("--smoke", action="store_true", help="tiny config used by the tests")
    parser.add_argument("--scale", default="cpu", help="cpu (default) or gpu: the accelerator configuration")
    parser.add_argument("--plan-only", action="store_true", help="print the compute plan and stop")
    parser.add_argument("--no-progress", action="store_true")
    _output_flags(parser, "runs/verify_<model file>")
    ours, rest = parser.parse_known_args(argv)
    model = _peek(rest, "--model")
    helping = any(a in ("-h", "--help") for a in rest)
    if model is None and not helping:
        raise ValueError("stepwise verify needs --model path/to/file.py:make_model (or package.module:make_model); "
                         "see `stepwise verify --help` and the README section 'Verify your own architecture'")
    if ours.scale not in SCALES:
        raise ValueError(f"unknown --scale {ours.scale!r}; expected one of {', '.join(SCALES)}")
    if ours.smoke and ours.scale == "gpu":
        raise ValueError("--smoke and --scale gpu exclude each other (--smoke is the tiny CPU configuration)")
    _check_checkpoint_flags(ours, "verify", True)
    folder = None
    if not helping and not ours.plan_only:  # the output folder first, before anything heavy is imported
        out = ours.out if ours.out is not None else str(
            Path("runs") / f"verify_{Path(model.rpartition(':')[0]).stem.replace('.', '_')}")
        folder = RunFolder.open(out, overwrite=ours.overwrite, resume=ours.resume and not ours.secondary_process)
    try:
        return _verify_in(ours, rest, model, ["stepwise", "verify", *argv], folder)
    except BaseException:
        if folder is not None:
            folder.abandon()
        raise


def _verify_in(ours, rest: list[str], model: str | None, command: list[str], folder: RunFolder | None) -> int:
    import tyro

    from stepwise.verify import VerifyConfig, plan, verify

    rest, notes = _legacy_flags(VerifyConfig, rest)
    default = VerifyConfig.smoke(model) if ours.smoke and model else None
    if ours.scale == "gpu" and model:
        default = VerifyConfig.gpu(model, dataset=_peek_field(rest, VerifyConfig, "dataset"),
                                   data_dir=_peek_field(rest, VerifyConfig, "data_dir"))
    cfg = tyro.cli(VerifyConfig, default=default, args=rest,
                   prog="stepwise verify [--out DIR] [--smoke | --scale gpu] [--plan-only]")
    for note in notes:
        print(note, file=sys.stderr)
    if ours.scale == "gpu" or ours.plan_only:  # the plan before any compute (FLOPs from XLA's cost analysis)
        print("\n".join(plan(cfg).lines()), flush=True)
        if ours.plan_only:
            return 0
    assert folder is not None  # --help exits inside tyro.cli
    return _compute(folder, ours, command, _info(shlex.join(command), "verify", cfg), cfg,
                    lambda staging: verify(cfg, staging, progress=not ours.no_progress and sys.stderr.isatty(),
                                           **_checkpointing("verify", ours, folder)),
                    name="verify", label=f"verify {cfg.model}", artifact="report.html")


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the program itself (not a test calling main): before JAX starts its threads
        from stepwise._memory import reuse_freed_memory

        reuse_freed_memory()
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="stepwise",
                                     description="Theory-vs-experiment checks for SSL learning dynamics.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run an experiment", add_help=False)
    p_run.add_argument("experiment")
    p_rep = sub.add_parser("report", help="collect run directories into one HTML report")
    p_rep.add_argument("--runs", type=Path, default=Path("runs"), help="folder of run directories")
    p_rep.add_argument("--out", default="reports/index.html", help="the report file (HTML)")
    sub.add_parser("list", help="list the experiments")
    sub.add_parser("verify", help="check a new architecture: `stepwise verify --model path/to/file.py:make_model`",
                   add_help=False)
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "run":
            return _run(args.experiment, rest)
        if args.command == "verify":
            return _verify(rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.command == "report":
            out = check_output_file(args.out, need_bytes=16_000_000)  # before reading any run
            from stepwise.plots.report import build_report

            report = build_report(args.runs, out)
            unreadable = f", {report.unreadable} unreadable (rows in the report)" if report.unreadable else ""
            print(f"report: {report.passed}/{report.runs} experiments passed{unreadable} -> {report.path}")
            return 1 if report.unreadable else 0
        for name, exp in _experiments().items():
            print(f"{name:<16} {exp.doc}")
        return 0
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f"stepwise: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. the disk filled up while writing: the run was not published (see _execute)
        print(f"stepwise: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    except _Exit as err:
        return err.code
    except KeyboardInterrupt:
        print("stepwise: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
