"""Bad config values are refused before any compute, with one message naming the field and the value (issue 16, 7).

One table drives every case. A row is the command line (``stepwise.cli.main``'s argv) or a public-API call, the
field the message must name, the value it must show, and what the code did before the change ("" where the value
was already refused): a traceback, a late failure after compute had started, or a silently wrong verdict. Against
the code before the change (commit cbe521f) every row with a ``before`` fails this test and the others pass; the
``before`` texts of the issue's five rows and of the linear_bt, grassmann --widths / --seed and hltm --children rows
were measured with ``--smoke``, the others are read from the code.

Every CLI row runs in-process with every experiment's ``run`` and ``stepwise.verify.verify`` replaced by a function
that raises :class:`ComputeStarted`, so a value that slips through validation fails the test at once instead of
training; the run folder given by ``--out`` must not exist afterwards.
"""

from __future__ import annotations

import dataclasses

import re
from dataclasses import dataclass
from typing import Callable

import pytest

import stepwise.cli as cli
import stepwise.verify

MODEL = "experiments/custom_architecture.py:make_model"


@dataclass(frozen=True)
class Case:
    target: list[str] | Callable[[], object]  # argv of `stepwise` (before --out), or a public-API call
    field: str  # named in the message (as the field, or as the flag with hyphens)
    value: str  # shown in the message
    before: str  # what happened before the change; "" = already refused


def _api(target: str, *args, **kwargs) -> Callable[[], object]:
    """``module:Name`` or ``module:Name.method`` called with the arguments."""

    def call():
        import importlib

        module, _, path = target.partition(":")
        obj = importlib.import_module(module)
        for name in path.split("."):
            obj = getattr(obj, name)
        return obj(*args, **kwargs)

    call.__name__ = target.partition(":")[2]
    return call


DEEP = ["run", "stepwise_deep", "--smoke"]
NCD = ["run", "noncontrastive_deep", "--smoke"]
LINEAR = ["run", "linear_bt", "--smoke"]

CASES = [
    # The five measured in issue 16.
    Case([*DEEP, "--loss", "barlow_twinz"], "loss", "barlow_twinz", "KeyError traceback"),
    Case([*LINEAR, "--init-scale", "1e300"], "init_scale", "1e+300", "OverflowError traceback after the run"),
    Case([*DEEP, "--projector", "1"], "projector", "d = 1", "trained and PASSED with d = 1"),
    Case([*DEEP, "--noise-std", "nan"], "noise_std", "nan", "divergence at step 0, advice: lower the lr"),
    Case([*DEEP, "--n-eval", "1"], "n_eval", "1", "failed after training, flag not named"),
    # Found by trying every numeric field (nan, inf, negative, 0, huge, sizes that cannot work).
    Case([*LINEAR, "--init-scale", "1e-160"], "init_scale", "1e-160", "'cannot convert float NaN to integer'"),
    Case([*LINEAR, "--init-scale", "1"], "init_scale", "1.0", "trained, FAILED with nan step times"),
    Case([*LINEAR, "--data.n-test", "1"], "n_test", "1", "PASSED a 1x1 Gram check (always 0.0)"),
    Case([*LINEAR, "--d", "100"], "d", "100", "refused only after the eigendecomposition"),
    Case([*LINEAR, "--data.crop", "9"], "crop", "9", "refused only after loading the images"),
    Case([*LINEAR, "--plateau-separation", "nan"], "plateau_separation", "nan", "accepted (nan gates nothing)"),
    Case([*DEEP, "--loss", "simclr", "--temperature", "nan"], "temperature", "nan", "accepted, trains on nan"),
    Case([*DEEP, "--lr", "inf"], "lr", "inf", "accepted, diverged during training"),
    Case([*DEEP, "--momentum", "1.5", "--optimizer", "momentum"], "momentum", "1.5",
         "refused only inside the run (TrainConfig)"),
    Case([*DEEP, "--batch-size", "1"], "batch_size", "1", "refused only inside the run (TrainConfig)"),
    Case([*DEEP, "--hidden", "0"], "hidden", "(0,)", "refused only when the model was built"),
    Case([*DEEP, "--model", "cnn", "--channels"], "channels", "()", "refused only when the model was built"),
    Case([*DEEP, "--embed-dim", "1", "--projector"], "d = 1", "d = 1", "trained with d = 1"),
    Case([*DEEP, "--shift", "-1"], "shift", "-1", "refused only inside the run (Augmentation)"),
    Case([*DEEP, "--crop", "100"], "crop", "100", "refused only inside the run (Augmentation)"),
    Case([*DEEP, "--brightness", "nan"], "brightness", "nan", "accepted (nan skips the jitter)"),
    Case([*DEEP, "--contrast", "-1"], "contrast", "-1", "refused only inside the run (Augmentation)"),
    Case([*DEEP, "--loss", "barlow_twins", "--bt-lambda", "-1"], "bt_lambda", "-1", "refused only inside the run"),
    Case([*DEEP, "--loss", "infonce_floored", "--norm-floor", "0"], "norm_floor", "0", "(new loss, issue 12)"),
    Case([*DEEP, "--min-separated-fraction", "1.5"], "min_separated_fraction", "1.5", "(new field, issue 12)"),
    Case([*DEEP, "--loss", "vicreg", "--vicreg-weights", "nan", "25", "1"], "vicreg_weights", "nan",
         "accepted, trains on nan"),
    Case([*DEEP, "--min-steps", "0"], "min_steps", "0", "PASSED steps_detected >= 0 whatever was learned"),
    Case([*DEEP, "--width", "-1", "--model", "resnet18"], "width", "-1", "accepted"),
    Case([*DEEP, "--seed=-1"], "seed", "-1", "accepted: the same run as seed 2**32 - 1"),
    Case([*NCD, "--setup.data.n-eval", "1"], "n_eval", "1", "accepted, failed in the probe"),
    Case([*NCD, "--setup.aug.noise-std", "nan"], "noise_std", "nan", "accepted, trains on nan"),
    Case([*NCD, "--max-asymmetry", "nan"], "max_asymmetry", "nan", "accepted (nan fails every comparison)"),
    Case(["run", "directpred", "--smoke", "--setup.train.momentum", "-1"], "momentum", "-1", "refused inside the run"),
    Case(["run", "directpred", "--smoke", "--eps-sweep", "inf"], "eps_sweep", "inf", "accepted"),
    Case(["run", "kernel_bt", "--smoke", "--max-steps", "0"], "max_steps", "0",
         "refused only after the kernel was computed"),
    Case(["run", "kernel_bt", "--smoke", "--init-scale", "2"], "init_scale", "2.0", "accepted"),
    Case(["run", "kernel_bt", "--smoke", "--bandwidth-scale", "inf"], "bandwidth_scale", "inf", "accepted"),
    Case(["run", "width_sweep", "--smoke", "--data.crop", "50"], "crop", "50", "refused only after loading the images"),
    Case(["run", "width_sweep", "--smoke", "--n-seeds", "0"], "n_seeds", "0",
         "(was --gram-threshold inf: PASSED a check that cannot fail; that gate is now reported)"),
    Case(["run", "step_map", "--smoke", "--lrs", "0.04", "0.02"], "lrs", "(0.04, 0.02)", "(new experiment, issue 12)"),
    Case(["run", "step_map", "--smoke", "--head-scales", "1e-12", "nan"], "head_scales", "nan",
         "(new experiment, issue 12)"),
    Case(["run", "hltm", "--smoke", "--children", "1"], "children", "1", "trained, variance identity off by 1e291"),
    Case(["run", "hltm", "--smoke", "--rise-min", "nan"], "rise_min", "nan", "accepted"),
    Case(["run", "grassmann", "--smoke", "--widths"], "widths", "()", "IndexError traceback"),
    Case(["run", "grassmann", "--smoke", "--noise-std", "nan"], "noise_std", "nan", "accepted"),
    Case(["run", "grassmann", "--smoke", "--seed=-1"], "seed", "-1", "'expected non-negative integer', flag not named"),
    Case(["run", "noncontrastive_linear", "--smoke", "--ema-sigma", "-1"], "ema.sigma", "-1", "accepted"),
    Case(["run", "noncontrastive_linear", "--smoke", "--t-long", "inf"], "t_long", "inf", "accepted"),
    Case(["run", "ntk_after_training", "--smoke", "--n-eval", "1"], "n_eval", "1", "accepted, failed after training"),
    Case(["run", "ntk_after_training", "--smoke", "--width", "nan"], "width", "nan", "accepted"),
    Case(["verify", "--smoke", "--model", MODEL, "--n-eval", "1"], "n_eval", "1", "accepted"),
    Case(["verify", "--smoke", "--model", MODEL, "--noise-std", "nan"], "noise_std", "nan", "accepted"),
    Case(["verify", "--smoke", "--model", MODEL, "--min-tau", "-1"], "min_tau", "-1", "PASSED any step order"),
    Case(["verify", "--smoke", "--model", MODEL, "--lr", "inf"], "lr", "inf", "accepted, diverged"),
    # Already refused before the change (kept so they stay refused).
    Case([*DEEP, "--lr", "0"], "learning rate", "0", ""),
    Case([*DEEP, "--optimizer", "sgdd"], "optimizer", "sgdd", ""),
    Case([*LINEAR, "--lr-scale", "1"], "lr_scale", "1", ""),
    Case(["run", "grassmann", "--smoke", "--lr", "0.5"], "lr", "0.5", ""),
    # Public API: the config dataclasses raise ValueError naming the field.
    Case(_api("experiments.stepwise_deep.config:DeepConfig.for_loss", "barlow_twinz"), "loss", "barlow_twinz",
         "KeyError"),
    Case(_api("stepwise.io:replace_config", _api("experiments.stepwise_deep.config:DeepConfig")(),
              net={"projector": (1,)}), "projector", "d = 1", "accepted"),
    Case(_api("experiments.linear_bt.config:LinearBTConfig", init_scale=float("inf")), "init_scale", "inf",
         "accepted"),
    Case(_api("experiments.noncontrastive_linear.config:NoncontrastiveLinearConfig", sigma2=-1.0), "sigma2", "-1",
         "ZeroDivisionError"),
    Case(_api("experiments.grassmann.config:GrassmannConfig", window=()), "window", "()", "IndexError"),
    Case(_api("stepwise.data:ImageData", n_eval=1), "n_eval", "1", "accepted"),
    Case(_api("stepwise.verify:VerifyConfig", MODEL, batch_size=1), "batch_size", "1", "accepted"),
]


class ComputeStarted(BaseException):
    """Raised by the stand-in runners: validation let a bad value through to the compute."""


def _no_compute(*args, **kwargs):
    raise ComputeStarted("a run started although its config was invalid")


@pytest.fixture
def runners_blocked(monkeypatch):
    experiments = cli._experiments

    def blocked():
        return {name: dataclasses.replace(exp, run=_no_compute) for name, exp in experiments().items()}

    monkeypatch.setattr(cli, "_experiments", blocked)
    monkeypatch.setattr(stepwise.verify, "verify", _no_compute)


def _flat(text: str) -> str:
    """The message with tyro's box drawing and line wrapping removed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def _names(field: str) -> tuple[str, ...]:
    return field, field.replace("_", "-")


@pytest.mark.parametrize("case", CASES, ids=lambda c: " ".join(c.target) if isinstance(c.target, list)
                         else c.target.__name__)
def test_bad_value_refused_before_compute(case, runners_blocked, capsys, tmp_path):
    out = tmp_path / "x"
    if callable(case.target):
        with pytest.raises(ValueError) as info:
            case.target()
        message = str(info.value)
    else:
        try:
            code = cli.main([*case.target, "--out", str(out)])
        except SystemExit as exc:  # tyro's own refusals and the config's ValueError raised inside tyro
            code = exc.code
        captured = capsys.readouterr()
        message = _flat(captured.err + captured.out)
        assert code == 2, message
        assert "Traceback" not in message
        assert not out.exists()
    assert any(name in message for name in _names(case.field)), message
    assert case.value in message, message

