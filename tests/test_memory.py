"""stepwise._memory: glibc keeps the freed temporaries of a compiled program for the next call.

The settings are process-wide, so every test that applies them does it in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from stepwise import _memory

GLIBC = sys.platform.startswith("linux") and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
needs_glibc = pytest.mark.skipif(not GLIBC, reason="the settings are glibc's (mallopt)")

# A program whose temporaries (XLA's cumsum in float32: 2 x 40 MB) are above glibc's largest mmap threshold (32 MB),
# so that by default every call maps them anew and faults in every page.
_FAULTS = textwrap.dedent("""
    import json, os, resource, statistics, sys, time
    from stepwise import _memory
    applied = _memory.reuse_freed_memory(environ={}) if sys.argv[1] == "on" else None
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x: jnp.cumsum(x * 2.0)[::7].sum())
    x = jnp.ones(10_000_000, jnp.float32)
    temp = f.lower(x).compile().memory_analysis().temp_size_in_bytes
    faults = []
    for i in range(30):
        time.sleep(0.005)  # XLA frees a call's temporaries on its own thread after the result is ready
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(x).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
    print(json.dumps({"applied": applied, "faults_per_call": statistics.median(faults[10:]), "faults": faults,
                      "temp_pages": temp / os.sysconf("SC_PAGE_SIZE"), "settings": _memory.allocator_settings()}))
""")


def _faults(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, env=env, timeout=300,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_glibc
def test_temporaries_are_reused_instead_of_faulted_in_again():
    on, off = _faults("on"), _faults("off")
    assert on["applied"] == _memory.MALLOC_OPTIONS
    assert on["settings"] == {"malloc_options": _memory.MALLOC_OPTIONS, "source": "stepwise._memory.reuse_freed_memory"}
    assert off["settings"]["malloc_options"] == {}
    # Median over the last 20 of 30 calls. The premise, with glibc's defaults: every page of the temporaries is
    # faulted in again at each call (half of them at least, whatever the kernel's fault-around does).
    assert off["faults_per_call"] >= 0.5 * off["temp_pages"], off
    # With the settings the freed blocks are reused: almost no page is new (a few from the runtime's small objects).
    assert on["faults_per_call"] <= 0.05 * on["temp_pages"], on


@pytest.mark.parametrize("environ, named", [
    ({"MALLOC_ARENA_MAX": "8"}, "MALLOC_ARENA_MAX"),
    ({"MALLOC_TRIM_THRESHOLD_": "131072", "PATH": "/bin"}, "MALLOC_TRIM_THRESHOLD_"),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "GLIBC_TUNABLES"),
])
def test_malloc_options_in_the_environment_are_left_alone(monkeypatch, environ, named):
    calls = []
    monkeypatch.setattr(_memory, "_glibc", lambda: lambda *a: calls.append(a) or 1)
    monkeypatch.setattr(_memory, "_applied", None)
    assert _memory.reuse_freed_memory(environ=environ) is None
    assert calls == []
    settings = _memory.allocator_settings()
    assert settings["malloc_options"] == {} and named in settings["source"]


def test_other_glibc_tunables_do_not_opt_out(monkeypatch):
    calls = []
    monkeypatch.setattr(_memory, "_glibc", lambda: lambda *a: calls.append(a) or 1)
    monkeypatch.setattr(_memory, "_applied", None)
    assert _memory.reuse_freed_memory(environ={"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"}) == _memory.MALLOC_OPTIONS
    assert calls == [(-8, 1), (-4, 0), (-1, 1 << 30)]  # M_ARENA_MAX, M_MMAP_MAX, M_TRIM_THRESHOLD


def test_not_glibc_or_refused_changes_nothing(monkeypatch):
    monkeypatch.setattr(_memory, "_applied", None)
    monkeypatch.setattr(_memory, "_glibc", lambda: None)
    assert _memory.reuse_freed_memory(environ={}) is None
    assert _memory.allocator_settings() == {"malloc_options": {}, "source": "not glibc: the allocator's defaults"}
    monkeypatch.setattr(_memory, "_glibc", lambda: lambda param, value: 0)
    assert _memory.reuse_freed_memory(environ={}) is None
    assert "refused" in _memory.allocator_settings()["source"]


@needs_glibc
def test_command_line_applies_them_and_records_them_in_results(tmp_path):
    """The program (``stepwise`` with no argv given to main) applies them; its results.json says so. A test calling
    ``main([...])`` in its own process does not."""
    code = textwrap.dedent(f"""
        import sys
        from stepwise import cli, _memory
        sys.argv = ["stepwise", "run", "linear_bt", "--smoke", "--out", {str(tmp_path / "run")!r}]
        code = cli.main()
        print(code)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, timeout=600)
    host = json.loads((tmp_path / "run" / "results.json").read_text())["host"]
    assert host["allocator"]["malloc_options"] == _memory.MALLOC_OPTIONS


def test_main_called_with_arguments_does_not_apply_them(monkeypatch):
    from stepwise import cli

    called = []
    monkeypatch.setattr(_memory, "reuse_freed_memory", lambda *a, **k: called.append(1))
    assert cli.main(["list"]) == 0
    assert called == []


def test_launcher_applies_them_first_as_a_program(monkeypatch):
    """``python -m stepwise.launch`` applies them before ``jax.distributed`` starts anything; called with
    arguments (by a test) it does not."""
    from stepwise import cli, launch
    from stepwise.training import distributed

    calls = []
    monkeypatch.setattr(_memory, "reuse_freed_memory", lambda *a, **k: calls.append("memory"))
    monkeypatch.setattr(distributed, "initialize", lambda: calls.append("initialize") or False)
    monkeypatch.setattr(cli, "main", lambda argv: calls.append(list(argv)) or 0)
    monkeypatch.setattr(sys, "argv", ["stepwise.launch", "list"])
    assert launch.main() == 0
    assert calls == ["memory", "initialize", ["list"]]
    calls.clear()
    assert launch.main(["list"]) == 0
    assert calls == ["initialize", ["list"]]
