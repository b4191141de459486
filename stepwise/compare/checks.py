"""A check: a named statistic, what kind of evidence it is, a threshold with its reason, and a verdict.

The same :class:`Check` objects are written to ``results.json``, shown in the report and asserted in the tests
(``assert check.passed, check.explain()``), so a figure's verdict and CI cannot disagree.

Every check says what kind of evidence it is (:data:`KINDS`):

- ``theory``: a paper's prediction against a measurement; the threshold comes from the theory's error terms or
  from the numerics (round-off, discretisation, finite size), never from the value one run measured.
- ``baseline``: the measurement beats a null model (a random, untrained or shuffled counterpart); the threshold
  comes from the null's distribution (e.g. its mean + 2 std over >= 20 draws) or from the null's exact value.
- ``consistency``: an identity that holds by construction (two implementations of one formula, a model that is
  another by construction); it tests the code, not the paper.
- ``reported``: measured and shown, not gated (``passed`` is ``None``); the reason says why (a criterion that
  cannot be tested at this scale, a quantity the paper only describes). A reference value, when there is one,
  sits in ``threshold`` for the reader.

A run passes (:func:`all_passed`) when it has at least one theory or baseline check and every gated check
(theory, baseline and consistency) passes: a consistency check that fails means the code is wrong, and then no
theory verdict of that run can be trusted either.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from stepwise._precision import float64

__all__ = ["KINDS", "Check", "Kind", "all_passed", "check", "kind_summary", "summary_line"]

Op = Literal["<=", "<", ">=", ">", "=="]
Kind = Literal["theory", "baseline", "consistency", "reported"]
#: The kinds of evidence, in the order the report shows them.
KINDS: tuple[str, ...] = ("theory", "baseline", "consistency", "reported")
_HEADLINE_KINDS = ("theory", "baseline")


@dataclasses.dataclass(frozen=True)
class Check:
    """One named statistic, the kind of evidence it is, and its verdict.

    Attributes:
      name: stable identifier, e.g. ``"step_time_rel_error_median"``.
      value: the measured statistic (a non-finite value always fails a gated check).
      threshold: the tolerance it is compared with (for a ``reported`` check: a reference value or ``None``).
      op: how ``value`` must relate to ``threshold`` to pass.
      passed: the verdict; ``None`` for a ``reported`` check, which is not gated.
      reason: why this threshold (the written justification; for ``reported``, why it is not gated).
      kind: ``"theory"``, ``"baseline"``, ``"consistency"`` or ``"reported"`` (see the module docstring).
      description: what the statistic is.
      predicted, measured: optional theory and experiment values behind the statistic (numbers or lists).
    """

    name: str
    value: float
    threshold: float | None
    op: Op
    passed: bool | None
    reason: str
    kind: Kind
    description: str = ""
    predicted: Any = None
    measured: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {k: jsonable(v) for k, v in dataclasses.asdict(self).items()}

    @property
    def gated(self) -> bool:
        """Whether the verdict counts (every kind but ``reported``)."""
        return self.kind != "reported"

    def explain(self) -> str:
        if not self.gated:
            ref = "" if self.threshold is None else f", reference {self.op} {self.threshold:.6g}"
            return f"[REPORTED] {self.name} = {self.value:.6g} (not gated{ref}: {self.reason}): {self.description}"
        verdict = "PASS" if self.passed else "FAIL"
        return (f"[{verdict}] {self.kind} {self.name} = {self.value:.6g} (needs {self.op} {self.threshold:.6g}): "
                f"{self.description}")


@float64
def check(
    name: str,
    value: float,
    threshold: float | None,
    *,
    kind: Kind,
    op: Op = "<=",
    reason: str,
    description: str = "",
    predicted: Any = None,
    measured: Any = None,
) -> Check:
    """Make a :class:`Check`, computing its verdict. NaN or inf values fail whatever the comparison.

    ``kind`` has no default: every call site says what kind of evidence its statistic is. A ``reported`` check
    gets ``passed=None``; its ``threshold`` (optional) is a reference shown to the reader, not a gate.

    Raises:
      ValueError: an unknown kind or op, an empty reason, or a gated check without a finite threshold.
    """
    if kind not in KINDS:
        raise ValueError(f"check {name!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if op not in _OPS:
        raise ValueError(f"check {name!r}: op {op!r} is not one of {', '.join(_OPS)}")
    if not str(reason).strip():
        raise ValueError(f"check {name!r}: every check needs a reason (why this threshold, or why not gated)")
    value = float(value)
    if kind == "reported":
        threshold = None if threshold is None else float(threshold)
        return Check(name, value, threshold, op, None, reason, kind, description, predicted, measured)
    if threshold is None or not math.isfinite(float(threshold)):
        raise ValueError(f"check {name!r}: a {kind} check needs a finite threshold (got {threshold!r})")
    threshold = float(threshold)
    passed = bool(math.isfinite(value) and _OPS[op](value, threshold))
    return Check(name, value, threshold, op, passed, reason, kind, description, predicted, measured)


_OPS = {
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "==": lambda a, b: a == b,
}


def _kind_of(c: Check | dict) -> str:
    return c.kind if isinstance(c, Check) else str(c.get("kind", "theory"))


def _passed_of(c: Check | dict) -> bool | None:
    return c.passed if isinstance(c, Check) else c.get("passed")


@float64
def all_passed(checks: Iterable[Check | dict]) -> bool:
    """True when there is at least one theory or baseline check and every gated check passed.

    Gated are theory, baseline and consistency checks; ``reported`` ones never count. Works on :class:`Check`
    objects and on the dicts of a results.json (a check without ``kind`` counts as theory, as written before
    kinds existed).
    """
    checks = list(checks)
    gated = [c for c in checks if _kind_of(c) != "reported"]
    return any(_kind_of(c) in _HEADLINE_KINDS for c in gated) and all(_passed_of(c) is True for c in gated)


@float64
def kind_summary(checks: Iterable[Check | dict]) -> dict[str, dict[str, int]]:
    """``{kind: {"passed": p, "total": n}}`` for every kind in :data:`KINDS` (``passed`` is 0 for reported)."""
    out = {k: {"passed": 0, "total": 0} for k in KINDS}
    for c in checks:
        k = _kind_of(c)
        row = out.setdefault(k, {"passed": 0, "total": 0})
        row["total"] += 1
        row["passed"] += int(_passed_of(c) is True)
    return out


@float64
def summary_line(checks: Iterable[Check | dict]) -> str:
    """The headline of a run: ``"theory 8/8, baseline 2/2; 3 consistency (3 pass); 4 reported"``."""
    s = kind_summary(checks)
    head = ", ".join(f"{k} {s[k]['passed']}/{s[k]['total']}" for k in _HEADLINE_KINDS if s[k]["total"])
    tail = []
    if s["consistency"]["total"]:
        c = s["consistency"]
        failed = c["total"] - c["passed"]
        tail.append(f"{c['total']} consistency" + (f" ({failed} FAIL)" if failed else ""))
    if s["reported"]["total"]:
        tail.append(f"{s['reported']['total']} reported")
    return "; ".join(x for x in [head or "no theory or baseline check", *tail])


def jsonable(v: Any) -> Any:
    """A check field as JSON: arrays and sequences as lists, NumPy scalars as Python ones, NaN/inf as strings."""
    import numpy as np

    if isinstance(v, np.ndarray):
        return [jsonable(x) for x in v.tolist()]
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else str(v)  # JSON has no NaN/inf; keep them readable
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, Sequence) and not isinstance(v, str):
        return [jsonable(x) for x in v]
    return v
