"""Shared pieces of the experiment tests: a module-scoped smoke-run fixture and the assertion on every verdict.

One smoke run per test module, shared by its tests (``scope="module"``)::

    smoke_run = cli_smoke_run("hltm", "--no-progress")       # through the CLI: (out_dir, results)
    smoke = api_smoke_run(StepMapConfig.smoke, run, with_config=True)   # in-process: (cfg, results, out_dir)

and in a test, after the experiment's own assertions on names and kinds::

    assert_verdicts(res, skip={"the_check_with_its_own_rule"}, reported_reason="not gated")
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import pytest

from stepwise import cli, io


def cli_smoke_run(experiment: str, *flags: str):
    """A module-scoped fixture running ``stepwise run EXPERIMENT --smoke --out DIR FLAGS`` through the CLI (exit
    status 0 asserted); its value is ``(out_dir, results)`` with the results read back from ``results.json``."""

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory):
        out = tmp_path_factory.mktemp("runs") / f"{experiment}_smoke"
        assert cli.main(["run", experiment, "--smoke", "--out", str(out), *flags]) == 0
        return out, io.load_results(out)

    return fixture


def api_smoke_run(make_config: Callable[[], Any], run: Callable[..., dict], *, with_config: bool = False):
    """A module-scoped fixture calling ``run(make_config(), DIR)`` in-process (``make_config`` is usually
    ``Config.smoke``); its value is ``(out_dir, results)``, or ``(cfg, results, out_dir)`` with ``with_config``."""

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory):
        cfg = make_config()
        out = tmp_path_factory.mktemp("runs") / "smoke"
        res = run(cfg, out)
        return (cfg, res, out) if with_config else (out, res)

    return fixture


def assert_verdicts(res: dict, *, skip: Collection[str] = (), allow_reported: bool = True,
                    reported_reason: str = "") -> None:
    """Every gated check of ``res`` passed (the message names its value, op and threshold); every reported one has
    no verdict and a reason that contains ``reported_reason``. With ``allow_reported=False`` every check must have
    passed. Checks named in ``skip`` are left to the caller's own assertions."""
    for c in res["checks"]:
        if c["name"] in skip:
            continue
        if allow_reported and c["kind"] == "reported":
            assert c["passed"] is None and c["reason"] and reported_reason in c["reason"], c["name"]
        else:
            assert c["passed"] is True, f"{c['name']} = {c['value']} (needs {c['op']} {c['threshold']})"
