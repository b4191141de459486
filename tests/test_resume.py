"""Resume from the command line (issue 16 item 2): a CLI run killed mid-training and resumed with ``--resume`` equals
the uninterrupted run bit for bit; a resume with another config is refused naming the field; the step count may grow.

``stepwise run stepwise_deep --smoke --steps 240`` is the reference (tracking every 10 steps). The interrupted runs are
subprocesses stopped right after their first checkpoint file appears: one by SIGINT (Ctrl-C: it saves a checkpoint at
the next tracking point and exits 130 printing the resume command), one by SIGKILL (nothing saved at the kill: the
periodic checkpoint is all there is). Every run is a subprocess (the test process runs JAX in x64 with strict
promotion, conftest.py; the CLI does not). Each test takes ~20-40 s on the 2-core CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from stepwise import cli, io
from stepwise.io import checkpoint_step

ROOT = Path(__file__).resolve().parents[1]
DEEP = ["run", "stepwise_deep", "--smoke", "--no-progress"]
STEPS = 240


def _start(argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stepwise.cli", *argv], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})


def _cli(argv: list[str], cwd: Path) -> tuple[int, str]:
    proc = _start(argv, cwd)
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "full"
    code, err = _cli([*DEEP, "--steps", str(STEPS), "--out", str(out)], ROOT)
    assert code == 0, err
    return out


def _stop_after_first_checkpoint(proc: subprocess.Popen, checkpoint: Path, sig: int) -> tuple[int, str, int]:
    """Send ``sig`` as soon as ``checkpoint`` exists; returns (exit status, stderr, the checkpoint's step then)."""
    deadline = time.monotonic() + 300
    while not checkpoint.is_file():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    at = None
    while at is None:  # the file appears by rename, complete; read its step before the signal can change it
        at = checkpoint_step(checkpoint)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err, at


def _assert_identical(a: Path, b: Path) -> list[str]:
    """Every named array of spectrum.npz and every check value of results.json equal bit for bit; returns the names."""
    x, y = io.load_npz(a / "spectrum.npz"), io.load_npz(b / "spectrum.npz")
    assert sorted(x) == sorted(y)
    for name in x:
        assert x[name].dtype == y[name].dtype and x[name].shape == y[name].shape, name
        assert x[name].tobytes() == y[name].tobytes(), name  # bitwise (NaN onsets included)
    rx, ry = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert [(c["name"], c["value"], c["passed"]) for c in rx["checks"]] == \
        [(c["name"], c["value"], c["passed"]) for c in ry["checks"]]
    assert rx["summary"]["onsets"] == ry["summary"]["onsets"] and rx["config"] == ry["config"]
    return sorted(x)


def test_ctrl_c_saves_a_checkpoint_and_resume_is_bit_identical(uninterrupted, tmp_path):
    # Started far longer than the reference, so that Ctrl-C lands in the training loop; resumed with the reference's
    # length (shortening is allowed down to the checkpoint's step).
    argv = [*DEEP, "--steps", "100000", "--checkpoint-every", "20", "--out", "cut"]
    code, err, first = _stop_after_first_checkpoint(_start(argv, tmp_path), tmp_path / "cut.partial" /
                                                     "checkpoint.msgpack", signal.SIGINT)
    assert code == 130, err
    assert "Traceback" not in err and "--resume" in err, err
    at = checkpoint_step(tmp_path / "cut.partial" / "checkpoint.msgpack")
    assert f"interrupted at step {at}; checkpoint saved in" in err, err  # saved by the loop, at a tracking point
    assert first < at < STEPS and at % 10 == 0, (first, at)
    assert not (tmp_path / "cut").exists()  # nothing published
    code, err = _cli([*[a if a != "100000" else str(STEPS) for a in argv], "--resume"], tmp_path)
    assert code == 0, err
    names = _assert_identical(uninterrupted, tmp_path / "cut")
    assert {"eigenvalues", "snapshots", "train_loss", "eval_loss", "probe_accuracy"} <= set(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut"]  # staging folder gone
    assert not list((tmp_path / "cut").glob("checkpoint*"))  # removed without --keep-checkpoint
    print(f"SIGINT at step {at}; compared {names}", file=sys.__stderr__)


def test_sigkill_then_refusals_then_longer_resume_is_bit_identical(uninterrupted, tmp_path, capsys):
    argv = [*DEEP, "--steps", "160", "--checkpoint-every", "40", "--out", str(tmp_path / "cut")]
    staging = tmp_path / "cut.partial"
    code, err, at = _stop_after_first_checkpoint(_start(argv, tmp_path), staging / "checkpoint.msgpack",
                                                 signal.SIGKILL)
    assert code == -signal.SIGKILL and not (tmp_path / "cut").exists()
    (staging / ".checkpoint.x1y2.tmp.msgpack").write_bytes(b"half a write")  # what a kill during a write leaves
    kept = {name: (staging / name).read_bytes() for name in ("checkpoint.msgpack", "run.json")}

    assert cli.main(argv) == 2  # a plain rerun would discard the checkpoint
    assert "--resume" in capsys.readouterr().err
    assert cli.main([*argv, "--resume", "--lr", "0.03"]) == 2
    err = capsys.readouterr().err
    assert "lr: 0.02 -> 0.03" in err and "Traceback" not in err
    assert cli.main([*argv, "--resume", "--steps", str(at - 10)]) == 2  # below the checkpoint's step
    assert f"at step {at}" in capsys.readouterr().err
    # the refusals kept the interrupted run intact; --resume removed the dead writer's temporary file and lock
    assert {p.name: p.read_bytes() for p in staging.iterdir()} == kept

    extended = [a if a != "160" else str(STEPS) for a in argv]  # longer than the killed run: allowed
    code, err = _cli([*extended, "--resume", "--keep-checkpoint"], tmp_path)
    assert code == 0, err
    _assert_identical(uninterrupted, tmp_path / "cut")
    assert not staging.exists()
    published = sorted(p.name for p in (tmp_path / "cut").iterdir())
    assert published == ["checkpoint.msgpack", "results.json", "run.json", "spectrum.npz", "stepwise_deep.png"]
    assert checkpoint_step(tmp_path / "cut" / "checkpoint.msgpack") == STEPS
    print(f"SIGKILL after the checkpoint at step {at}", file=sys.__stderr__)


def test_api_refuses_a_checkpoint_of_another_config_or_past_the_end(tmp_path):
    from stepwise.data import Augmentation
    from stepwise.losses import barlow_twins_theory
    from stepwise.training import ssl

    images = np.random.default_rng(0).uniform(size=(48, 6, 6, 1))
    k1, k2 = jax.random.split(jax.random.key(1))
    params = [{"w": jax.random.normal(k1, (36, 16)) / 6.0, "b": np.zeros(16)},
              {"w": jax.random.normal(k2, (16, 8)) / 4.0, "b": np.zeros(8)}]

    def apply(p, x):  # the MLP of tests/test_training_ssl.py, which trains stably at lr 0.05
        h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p[0]["w"] + p[0]["b"][None, :])
        return h @ p[1]["w"] + p[1]["b"][None, :]

    def train(steps, lr=0.05, **kw):
        cfg = ssl.TrainConfig(steps=steps, batch_size=16, lr=lr, track_every=5, n_snapshot=8)
        return ssl.train_ssl(apply, None, params, barlow_twins_theory, images[:40], Augmentation(shift=1), cfg,
                             eval_images=images[40:], checkpoint=tmp_path / "c.msgpack", **kw)

    train(20)
    with pytest.raises(ValueError, match="at step 20, past this run's steps = 10"):
        train(10, resume=True)
    with pytest.raises(ValueError, match=r"lr: 0\.05 -> 0\.1"):
        train(30, lr=0.1, resume=True)
    assert train(30, resume=True).train_loss.shape == (30,)  # extending is allowed
