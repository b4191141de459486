"""Training across processes (jax.distributed): 2 processes x 2 CPU devices equal 1 process x 4 devices.

The processes talk over loopback only (coordinator bound to 127.0.0.1; gloo's CPU collectives use the address the
host name resolves to). Every subprocess has a timeout and is killed if any of them fails.
"""

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from stepwise.training import distributed

DEVICES = 4  # global device count of both runs: the same mesh, so the same partitioned program
TIMEOUT_S = 240

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    process_id, num_processes, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", {devices} // num_processes)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    from stepwise.training import distributed

    multi = distributed.initialize(f"127.0.0.1:{{port}}", num_processes, process_id, timeout_s=60)
    assert multi == (num_processes > 1) and jax.process_count() == num_processes
    assert jax.device_count() == {devices} and jax.local_device_count() == {devices} // num_processes

    import numpy as np

    from stepwise.data import Augmentation
    from stepwise.losses import barlow_twins_theory
    from stepwise.training import ssl

    sys.path.insert(0, {tests!r})
    from tiny_mlp import apply, features, init_mlp

    images = np.random.default_rng(0).uniform(size=(48, 6, 6, 1)).astype(np.float32)

    def train(steps, **kw):
        cfg = ssl.TrainConfig(steps=steps, batch_size=16, lr=0.01, optimizer="momentum", track_every=3,
                              checkpoint_every=3, n_snapshot=8)
        return ssl.train_ssl(apply, features, init_mlp(jax.random.key(1)), barlow_twins_theory, images[:40],
                             Augmentation(shift=1, noise_std=0.05), cfg, eval_images=images[40:], **kw)

    fields = ("step", "train_loss", "eval_loss", "cov_out", "bt_out", "cov_feat", "bt_feat", "snapshots")
    if multi:
        # Interrupted after 6 steps and resumed to 9; the checkpoint paths differ per process, so process 1 finds
        # no file and must get process 0's by broadcast (without it, it would restart at step 0 and hang).
        ckpt = out / f"ckpt{{process_id}}.msgpack"
        train(6, checkpoint=ckpt)
        assert ckpt.is_file() == (process_id == 0)
        run = train(9, checkpoint=ckpt, resume=True)
        mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
        try:
            distributed.put_global(np.full(3, process_id, np.float32),
                                   jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), what="probe")
        except ValueError as err:
            assert "probe differ between processes: processes [1]" in str(err), err
        else:
            raise AssertionError("put_global accepted different values on different processes")
    else:
        run = train(9)
    result = {{k: getattr(run, k) for k in fields}}
    result |= {{f"param{{i}}": np.asarray(p) for i, p in enumerate(jax.tree.leaves(run.params))}}
    np.savez(out / f"result{{process_id}}.npz", **result)
    print("WORKER OK", process_id, flush=True)
    """
).format(devices=DEVICES, tests=str(Path(__file__).parent))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_all(runs: dict[str, int], tmp_path) -> dict[str, Path]:
    """Start the worker for every ``name -> number of processes`` at once (each run in ``tmp_path / name``, its
    processes talking over a port of their own); all must finish within TIMEOUT_S, or all are killed."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # the device count comes from jax_num_cpu_devices in the worker
    for name in distributed.ENV_VARS:
        env.pop(name, None)
    procs, dirs = [], {}
    try:
        for name, num_processes in runs.items():
            dirs[name] = out = tmp_path / name
            out.mkdir()
            port = _free_port()
            run_env = env | {"JAX_COORDINATOR_BIND_ADDRESS": f"127.0.0.1:{port}"}  # loopback only
            for i in range(num_processes):
                log = open(out / f"log{i}.txt", "w")  # a file, not a pipe: a chatty process never blocks
                procs.append((name, i, log, subprocess.Popen(
                    [sys.executable, "-c", WORKER, str(i), str(num_processes), str(port), str(out)],
                    env=run_env, stdout=log, stderr=subprocess.STDOUT)))
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and any(p.poll() is None for *_, p in procs):
            if any(p.poll() not in (None, 0) for *_, p in procs):  # one failed: its peers would wait for it
                break
            time.sleep(0.2)
    finally:
        for *_, log, p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
            log.close()
    logs = {(name, i): (dirs[name] / f"log{i}.txt").read_text() for name, i, *_ in procs}
    report = "\n".join(f"--- {name} process {i} (exit {p.returncode}):\n{logs[name, i][-4000:]}"
                       for name, i, _, p in procs)
    assert all(p.returncode == 0 for *_, p in procs), report
    assert all(f"WORKER OK {i}" in logs[name, i] for name, i in logs), report
    return dirs


def test_two_processes_train_like_one_process_with_the_same_devices(tmp_path):
    dirs = _run_all({"single": 1, "multi": 2}, tmp_path)
    single, multi = dirs["single"], dirs["multi"]
    one = dict(np.load(single / "result0.npz"))
    p0, p1 = dict(np.load(multi / "result0.npz")), dict(np.load(multi / "result1.npz"))

    # Every process reads the same replicated values and computes the same eigenvalues on the host.
    assert p0.keys() == p1.keys()
    for k in p0:
        np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)
    # Only process 0 wrote its checkpoint (each process was given its own path).
    assert (multi / "ckpt0.msgpack").is_file() and not (multi / "ckpt1.msgpack").exists()

    # Same global batch, same 4-device mesh, same partitioned program: only the order of the float32 cross-device
    # sums differs (gloo across processes vs in-process), each by a few eps32 = 1.2e-7 of the summed magnitudes,
    # and at lr 0.01 the 9 steps do not amplify it (the loss moves by < 5% over the run). Measured: loss 7e-8
    # relative (0.6 eps32), eigenvalues 1.7e-7 of the largest (Weyl: each moves by at most ||dC||_2), parameters
    # 6e-7 of the largest entry. Bounds ~10x above that; unsynchronised gradients or a wrong batch split change
    # the loss at step 1 by > 1e-3.
    np.testing.assert_array_equal(p0["step"], one["step"])
    np.testing.assert_allclose(p0["train_loss"], one["train_loss"], rtol=1e-6)
    np.testing.assert_allclose(p0["eval_loss"], one["eval_loss"], rtol=1e-6)
    for k in ("cov_out", "bt_out", "cov_feat", "bt_feat"):
        error = np.max(np.abs(p0[k] - one[k]), axis=1) / np.max(np.abs(one[k]), axis=1)
        assert np.all(error < 2e-6), (k, error)
    for k in [k for k in one if k.startswith("param")] + ["snapshots"]:
        np.testing.assert_allclose(p0[k], one[k], rtol=0, atol=5e-6 * np.max(np.abs(one[k])), err_msg=k)


def test_single_process_settings_start_nothing(monkeypatch):
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() is False
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
    assert distributed.initialize() is False
    assert distributed.is_main_process() and jax.process_count() == 1


@pytest.mark.parametrize(
    "env, match",
    [
        ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "coordinator address must be host:port"),
        ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2", "JAX_COORDINATOR_ADDRESS": "h:1"}, r"in \[0, 2\)"),
        ({"JAX_NUM_PROCESSES": "2", "JAX_COORDINATOR_ADDRESS": "h:1"}, "set JAX_PROCESS_ID"),
        ({"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES must be an integer"),
    ],
)
def test_bad_settings_fail_before_contacting_anything(monkeypatch, env, match):
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        distributed.initialize()


def test_single_process_helpers_are_the_plain_jax_calls(tmp_path):
    x = np.arange(6.0).reshape(2, 3)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    placed = distributed.put_global({"x": x}, sharding)
    np.testing.assert_array_equal(distributed.fetch(placed)["x"], x)
    assert distributed.broadcast_file(tmp_path / "missing") is None
    (tmp_path / "f").write_bytes(b"\x00\x01abc")
    assert distributed.broadcast_file(tmp_path / "f") == b"\x00\x01abc"


NTK_WORKER = textwrap.dedent(
    """
    import sys

    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", 4)
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    import numpy as np

    sys.path.insert(0, {tests!r})
    from test_ntk import inputs, make, rel

    from stepwise import ntk

    assert len(jax.devices()) == 4
    old_jax = tuple(int(v) for v in jax.__version__.split(".")[:2]) < (0, 8)
    for kind in ("mlp", "cnn"):
        pure, shape = make(kind)
        x1, x2 = inputs(shape, 11), inputs(shape, 7, seed=3)
        if kind == "cnn" and old_jax:  # jax-ml/jax#32157: refused with a clear error before any compute
            try:
                ntk.empirical_ntk(pure.apply, pure.params, x1, devices=jax.devices())
            except ValueError as err:
                assert "jax-ml/jax#32157" in str(err), err
                continue
            raise AssertionError("a convolutional network over devices= was accepted on JAX < 0.8")
        whole = ntk.plan_ntk(pure.apply, pure.params, x1, x2, backend="jax")
        small = whole.held_bytes + 3 * whole.jacobian_bytes_per_example * 4  # blocks of 1-2 rows: 3 groups of 4
        # Whole-kernel plan over 3 devices (row blocks capped at ceil(11 / 3) = 4, the last one padded), and small
        # blocks over 4 devices (several groups, ragged edges, diagonal blocks inside a group).
        for budget, devices in ((None, jax.devices()[:3]), (small, jax.devices())):
            one = ntk.empirical_ntk(pure.apply, pure.params, x1, x2, backend="jax", memory_budget=budget)
            many = ntk.empirical_ntk(pure.apply, pure.params, x1, x2, memory_budget=budget, devices=devices)
            sym_one = ntk.empirical_ntk(pure.apply, pure.params, x1, backend="jax", memory_budget=budget)
            sym = ntk.empirical_ntk(pure.apply, pure.params, x1, memory_budget=budget, devices=devices)
            # The same per-device program on other row-block boundaries: float64 rounding (1e-13, as the
            # blocked-vs-unblocked test of test_ntk.py); measured 0 to 1.4e-16.
            assert rel(many, one) < 1e-13 and rel(sym, sym_one) < 1e-13, (kind, budget, len(devices))
            np.testing.assert_array_equal(sym, sym.T)
            assert many.shape == (11, 7) and many.dtype == np.float64
    print("NTK OK", flush=True)
    """
)


def test_ntk_row_blocks_over_four_devices_equal_one_device():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    code = NTK_WORKER.format(tests=os.path.dirname(__file__))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0 and "NTK OK" in proc.stdout, proc.stdout + proc.stderr


def test_ntk_devices_errors():
    from stepwise import ntk
    from stepwise.models import MLP, pure_model
    from flax import nnx

    pure = pure_model(MLP((2, 2, 1), hidden=(4,), embed_dim=2, rngs=nnx.Rngs(0)))
    x = np.ones((3, 2, 2, 1), np.float32)
    with pytest.raises(ValueError, match="at least one device"):
        ntk.empirical_ntk(pure.apply, pure.params, x, devices=[])
    with pytest.raises(ValueError, match="use backend='jax'"):
        ntk.empirical_ntk(pure.apply, pure.params, x, backend="neural_tangents", devices=jax.devices())
    one = ntk.empirical_ntk(pure.apply, pure.params, x, backend="jax")
    np.testing.assert_array_equal(ntk.empirical_ntk(pure.apply, pure.params, x, devices=jax.devices()[:1]), one)


def test_launcher_gives_other_processes_a_throwaway_run_directory(monkeypatch):
    from stepwise import cli, launch

    seen = []
    monkeypatch.setattr(cli, "main", lambda argv: seen.append(list(argv)) or 0)
    monkeypatch.setattr(distributed, "initialize", lambda: False)
    assert launch.main(["run", "linear_bt", "--out", "runs/x"]) == 0 and seen[-1] == ["run", "linear_bt", "--out",
                                                                                       "runs/x"]
    monkeypatch.setattr(distributed, "initialize", lambda: True)
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)
    assert launch.main(["run", "linear_bt", "--out", "runs/x"]) == 0
    assert seen[-1][:4] == ["run", "linear_bt", "--out", "runs/x"] and seen[-1][4] == "--out"
    assert "stepwise-process" in seen[-1][5] and not os.path.exists(seen[-1][5])  # deleted at exit
    with pytest.raises(ValueError, match="only `stepwise run` and `stepwise verify`"):
        launch.main(["report"])
