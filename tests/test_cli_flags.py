"""The flat flags of the configs before they held sub-configs (``--lr``, ``--dataset``) map onto the nested ones
(``--train.lr``, ``--data.dataset``) for one release (:func:`stepwise.cli._legacy_flags`), and the CLI asks each
experiment only what its registry entry declares."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import tyro

from stepwise import cli, io


@dataclasses.dataclass(frozen=True)
class _Train:
    """A sub-config whose ``steps`` is unique (``--steps`` maps) beside a top-level ``steps_total``."""

    lr: float = 0.1
    steps: int = 10


@dataclasses.dataclass(frozen=True)
class _Aug:
    """A sub-config with a boolean (``--no-flip``) and a field name it shares with ``_Data`` (ambiguous)."""

    flip: bool = False
    shift: int = 0


@dataclasses.dataclass(frozen=True)
class _Data:
    n_pairs: int = 5
    shift: int = 0


@dataclasses.dataclass(frozen=True)
class _Toy:
    train: _Train = _Train()
    aug: _Aug = _Aug()
    data: _Data = _Data()
    steps_total: int = 1
    seed: int = 0


def _parse(argv: list[str]) -> _Toy:
    return tyro.cli(_Toy, default=_Toy(), args=cli._legacy_flags(_Toy, argv)[0])


def test_legacy_flags_reach_the_one_nested_field():
    assert _parse(["--lr", "0.5"]).train.lr == 0.5
    assert _parse(["--lr=0.25"]).train.lr == 0.25
    assert _parse(["--n_pairs", "7"]).data.n_pairs == 7
    assert _parse(["--n-pairs=8"]).data.n_pairs == 8
    assert _parse(["--flip"]).aug.flip is True
    assert _parse(["--aug.flip", "--no-flip"]).aug.flip is False
    assert _parse(["--steps", "3", "--seed", "4"]) == _Toy(train=_Train(steps=3), seed=4)


def test_legacy_flags_leave_dotted_top_level_and_values_alone():
    argv = ["--train.lr", "0.5", "--seed", "3", "--steps-total", "2", "positional", "--", "--lr"]
    assert cli._legacy_flags(_Toy, argv) == (argv, [])
    assert cli._legacy_flags(_Toy, ["--unknown", "1"]) == (["--unknown", "1"], [])


def test_legacy_flag_in_two_sub_configs_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"--shift is ambiguous.*--aug\.shift or --data\.shift"):
        cli._legacy_flags(_Toy, ["--shift", "2"])


def test_legacy_flag_note_names_the_new_flag():
    argv, notes = cli._legacy_flags(_Toy, ["--n_pairs", "3"])
    assert argv == ["--data.n-pairs", "3"] and len(notes) == 1 and "--n_pairs is read as --data.n-pairs" in notes[0]


def _cli_value(value) -> str | None:
    """``value`` as one command-line token, for the scalar types whose text tyro reads back exactly."""
    if isinstance(value, bool) or value is None:
        return None
    return str(value) if isinstance(value, (int, float, str)) else None


def _registered():
    from stepwise.verify import VerifyConfig

    configs = [(name, exp.config, exp.config.smoke) for name, exp in cli._experiments().items()]
    return [*configs, ("verify", VerifyConfig, lambda: VerifyConfig.smoke("tests/verify_zoo.py:make_mixer"))]


def test_every_nested_field_of_every_config_keeps_its_flat_flag():
    """Map every old flat flag of every registered config (and verify's): each field of a sub-config whose name
    is unique in its config parses the same through the flat flag as through the dotted one."""
    mapped = 0
    for name, config_cls, smoke in _registered():
        base = smoke()
        for leaf, paths in cli._leaf_paths(config_cls).items():
            if len(paths) != 1 or "." not in paths[0]:
                continue
            value = _cli_value(io.config_value(base, leaf))
            if value is None:
                continue
            flat, _ = cli._legacy_flags(config_cls, [f"--{leaf}", value])
            assert flat == [f"--{paths[0].replace('_', '-')}", value], (name, leaf)
            parsed = tyro.cli(config_cls, default=base, args=flat)
            assert parsed == base, (name, leaf)  # the field's own value, given by its old flag, changes nothing
            mapped += 1
    hints = {name: typing.get_type_hints(cls) for name, cls, _ in _registered()}
    nested = sum(dataclasses.is_dataclass(t) for h in hints.values() for t in h.values())
    assert nested == 0 or mapped > 0


def test_every_prefixed_field_of_every_config_keeps_its_flat_flag():
    """The other rule: a field ``b`` of a sub-config ``a`` was the flat field ``a_b`` (``fig9_tau``, ``ssl_record``,
    ``deep_steps``); every such flag of every registered config, unless it is a field now or the config's
    ``LEGACY_FLAGS`` sends it elsewhere, maps onto ``--a.b`` and parses to the same config."""
    mapped = 0
    for name, config_cls, smoke in _registered():
        base, hints = smoke(), typing.get_type_hints(config_cls)
        legacy = getattr(config_cls, "LEGACY_FLAGS", {})
        for head, sub in hints.items():
            if not dataclasses.is_dataclass(sub):
                continue
            for field in dataclasses.fields(sub):
                flat = f"{head}_{field.name}"
                value = _cli_value(getattr(getattr(base, head), field.name))
                if flat in hints or flat in legacy or value is None:
                    continue
                argv, notes = cli._legacy_flags(config_cls, [f"--{flat.replace('_', '-')}", value])
                assert argv == [f"--{head.replace('_', '-')}.{field.name.replace('_', '-')}", value], (name, flat)
                assert len(notes) == 1, (name, flat)
                assert tyro.cli(config_cls, default=base, args=argv) == base, (name, flat)
                mapped += 1
    assert mapped >= 40  # speedup's deep_*, grassmann's, hltm's, the Tian 2021 experiments' groups


def test_planned_space_of_verify_covers_its_step_budget():
    """verify may train up to ``step_budget`` (a property: ``max_steps``, or 4 x ``steps``), and plans for it."""
    from stepwise.verify import VerifyConfig

    cfg = VerifyConfig(model="a:b", steps=100, max_steps=400, track_every=10)
    grown = dataclasses.replace(cfg, max_steps=800)
    assert (cfg.step_budget, grown.step_budget) == (400, 800)
    per_point = 2 * 4 * 512 * cfg.data.n_eval
    assert cli._planned_bytes("verify", grown) - cli._planned_bytes("verify", cfg) == 40 * per_point


def test_prefixed_and_renamed_flags_of_speedup():
    """speedup's flat ``deep_*`` fields became ``deep.*``; ``--deep`` became ``--deep.run`` and ``--n-pairs``, which
    two sub-configs now have, stays the linear model's (its ``LEGACY_FLAGS``)."""
    from experiments.speedup import SpeedupConfig

    def parse(*argv):
        return tyro.cli(SpeedupConfig, default=SpeedupConfig.smoke(), args=cli._legacy_flags(SpeedupConfig, argv)[0])

    cfg = parse("--deep-seeds", "2", "--deep_n_pairs=100", "--n-pairs", "90", "--no-deep", "--d", "3")
    assert (cfg.deep.seeds, cfg.deep.n_pairs, cfg.data.n_pairs, cfg.deep.run, cfg.d) == (2, 100, 90, False, 3)
    assert parse("--deep-d", "3").deep.d == 3 and parse("--deep").deep.run is True


def test_prefixed_flags_of_grassmann_and_hltm():
    """grassmann's flat ``gaussian_*``, ``order_*``, ``width_*``, ``ssl_*``, ``sup_*`` fields became sub-configs of
    those names, hltm's ``cov_*``, ``lin_*`` too; hltm's sweep training moved to ``train`` and its check thresholds
    to ``thresholds``: ``--lr`` / ``--tau``, which ``lin`` / ``cov`` now have too, stay the sweep's
    (``LEGACY_FLAGS``)."""
    from experiments.grassmann import GrassmannConfig
    from experiments.hltm import HLTMConfig

    def parse(config_cls, *argv):
        return tyro.cli(config_cls, default=config_cls.smoke(), args=cli._legacy_flags(config_cls, argv)[0])

    g = parse(GrassmannConfig, "--gaussian-dim", "8", "--order_time=2", "--width-h", "2", "--widths", "8", "16", "32",
              "--ssl-lr", "0.5", "--sup-steps", "7", "--ntk-points", "4", "--lr", "0.02", "--h", "4")
    assert (g.gaussian.dim, g.order.time, g.width.h, g.width.widths, g.ssl.lr, g.sup.steps, g.width.ntk_points,
            g.lr, g.h) == (8, 2.0, 2, (8, 16, 32), 0.5, 7, 4, 0.02, 4)
    h = parse(HLTMConfig, "--cov-tau", "0.3", "--lin-lr", "0.2", "--lr", "0.05", "--tau=0.4", "--steps", "50",
              "--rise-min", "0.01", "--no-bias")
    assert (h.cov.tau, h.lin.lr, h.train.lr, h.train.tau, h.train.steps, h.thresholds.rise_min, h.train.bias) == \
        (0.3, 0.2, 0.05, 0.4, 50, 0.01, False)


def test_prefixed_flags_of_the_tian2021_experiments():
    """The flat prefixed fields of noncontrastive_linear (``fig9_*``, ``ema_*``, ``asym_*``, ``align_*``), directpred
    (``b7_*``; ``eps_sweep`` / ``sweep_seeds``) and noncontrastive_deep (``b4_*``, ``fig6_alpha_p``) became sub-configs:
    the old flags reach them by prefix or by the config's ``LEGACY_FLAGS``."""
    from experiments.directpred import DirectPredConfig
    from experiments.noncontrastive_deep import NoncontrastiveDeepConfig
    from experiments.noncontrastive_linear import NoncontrastiveLinearConfig

    def parse(config_cls, *argv):
        argv, notes = cli._legacy_flags(config_cls, list(argv))
        assert len(notes) == sum(a.startswith("--") for a in argv)
        return tyro.cli(config_cls, default=config_cls.smoke(), args=argv)

    cfg = parse(NoncontrastiveLinearConfig, "--fig9-tau", "2.5", "--fig9_stable_eta=0.7", "--ema-seeds", "3",
                "--asym-tau", "0.5", "--align-eta", "0.2")
    assert (cfg.fig9.tau, cfg.fig9.stable_eta, cfg.ema.seeds, cfg.asym.tau, cfg.align.eta) == (2.5, 0.7, 3, 0.5, 0.2)
    cfg = parse(DirectPredConfig, "--b7-seeds", "1", "--b7-c=0.2", "--eps-sweep", "0.0", "0.3", "--sweep-seeds", "2")
    assert (cfg.b7.seeds, cfg.b7.c, cfg.eps_sweep.values, cfg.eps_sweep.seeds) == (1, 0.2, (0.0, 0.3), 2)
    cfg = parse(NoncontrastiveDeepConfig, "--b4-seeds", "2", "--b4-alpha-p", "0.5", "--fig6-alpha-p=3")
    assert (cfg.no_ema.seeds, cfg.no_ema.alpha_p, cfg.no_ema.rescue_alpha_p) == (2, 0.5, 3.0)
    # --alpha-p reached setup.alpha_p as its one leaf before no_ema had an alpha_p too (LEGACY_FLAGS keeps it)
    assert parse(NoncontrastiveDeepConfig, "--alpha-p", "4").setup.alpha_p == 4.0


def test_old_dotted_flags_look_inside_their_sub_config():
    """directpred's ``setup`` held flat fields before it held sub-configs: ``--setup.width`` is
    ``--setup.net.width`` now, ``--setup.no-flip`` ``--setup.aug.no-flip``, ``--steps`` ``--setup.train.steps``."""
    from experiments.directpred import DirectPredConfig

    argv, notes = cli._legacy_flags(DirectPredConfig, ["--setup.width", "0.5", "--setup.no-flip", "--steps=4",
                                                       "--setup.train.lr", "0.1"])
    assert argv == ["--setup.net.width", "0.5", "--setup.aug.no-flip", "--setup.train.steps=4", "--setup.train.lr",
                    "0.1"] and len(notes) == 3
    cfg = tyro.cli(DirectPredConfig, default=DirectPredConfig.smoke(), args=argv)
    assert (cfg.setup.net.width, cfg.setup.aug.flip, cfg.setup.train.steps) == (0.5, False, 4)


def test_registry_declares_what_the_cli_asks():
    """Each experiment's declared capabilities exist on its config class: smoke() with no argument, for_loss /
    smoke(loss) / gpu(loss=) for per-loss ones, gpu(dataset=, data_dir=) where a plan is given, the presets."""
    for name, exp in cli._experiments().items():
        assert isinstance(exp.config.smoke(), exp.config), name
        if exp.per_loss:
            assert exp.config.for_loss("simclr").loss == "simclr"
            assert exp.config.smoke("vicreg").loss == "vicreg"
        for method in exp.presets.values():
            assert callable(getattr(exp.config, method)), (name, method)
        if exp.plan is not None:
            assert isinstance(exp.config.gpu(dataset=None, data_dir=None), exp.config), name
    assert set(cli.CHECKPOINTED) <= set(cli._experiments())


@pytest.mark.parametrize("name,more,added", [
    ("noncontrastive_deep", {"no_ema": {"seeds": 2}}, 3),  # B4's two runs without EMA and the rescue, per seed
    ("directpred", {"b7": {"seeds": 1}}, 1),  # note B7's positive-c runs are trained networks too
    ("directpred", {"eps_sweep": {"seeds": 2}}, 3),  # one more run at each of the sweep's other 3 eps
])
def test_planned_space_counts_every_trained_network(name, more, added):
    """The free-space check before a run counts each network the runner trains (each keeps its snapshots twice)."""
    base = cli._experiments()[name].config()
    base = io.replace_config(base, **{k: {f: v - 1 for f, v in sub.items()} for k, sub in more.items()})
    grown = io.replace_config(base, **more)
    setup = base.setup
    per_net = 2 * 4 * 512 * (setup.train.steps // setup.train.track_every + 1) * setup.data.n_eval
    assert cli._planned_bytes(name, grown) - cli._planned_bytes(name, base) == added * per_net


@pytest.mark.parametrize("saved,message", [
    ({"b4_seeds": 3, "lr": 0.1}, r"had other fields \(b4_seeds: 3 -> None; no_ema\.seeds: None -> 3\).*cannot resume"),
    ({"no_ema": {"seeds": 2}, "lr": 0.1}, r"differs .* in no_ema\.seeds: 2 -> 3; resume with the same flags"),
])
def test_resume_refusal_tells_a_regrouped_config_from_changed_flags(tmp_path, saved, message):
    """A run interrupted under a release whose config had other fields (flat ``b4_seeds`` before ``no_ema.seeds``)
    cannot resume, and the refusal says so instead of asking for the same flags, which were given."""

    class Folder:
        staging = tmp_path

        def read_info(self):
            return {"experiment": "x", "command": "stepwise run x --resume", "config": saved}

    info = {"experiment": "x", "config": {"no_ema": {"seeds": 3}, "lr": 0.1}}
    with pytest.raises(cli.OutputError, match=message):
        cli._check_resume(Folder(), info, None)
