"""A theory check: a named statistic, a threshold with its reason, and a verdict.

The same :class:`Check` objects are written to ``results.json``, shown in the report and asserted in the tests
(``assert check.passed, check.explain()``), so a figure's verdict and CI cannot disagree.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from stepwise._precision import float64

__all__ = ["Check", "all_passed", "check"]

Op = Literal["<=", "<", ">=", ">", "=="]


@dataclasses.dataclass(frozen=True)
class Check:
    """One named theory-vs-experiment statistic and its verdict.

    Attributes:
      name: stable identifier, e.g. ``"step_time_rel_error_median"``.
      value: the measured statistic (a non-finite value always fails).
      threshold: the tolerance it is compared with.
      op: how ``value`` must relate to ``threshold`` to pass.
      passed: the verdict.
      reason: why this threshold (the written justification).
      description: what the statistic is.
      predicted, measured: optional theory and experiment values behind the statistic (numbers or lists).
    """

    name: str
    value: float
    threshold: float
    op: Op
    passed: bool
    reason: str
    description: str = ""
    predicted: Any = None
    measured: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in dataclasses.asdict(self).items()}

    def explain(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"[{verdict}] {self.name} = {self.value:.6g} (needs {self.op} {self.threshold:.6g}): {self.description}"


@float64
def check(
    name: str,
    value: float,
    threshold: float,
    *,
    op: Op = "<=",
    reason: str,
    description: str = "",
    predicted: Any = None,
    measured: Any = None,
) -> Check:
    """Make a :class:`Check`, computing its verdict. NaN or inf values fail whatever the comparison."""
    value = float(value)
    threshold = float(threshold)
    ok = {
        "<=": value <= threshold,
        "<": value < threshold,
        ">=": value >= threshold,
        ">": value > threshold,
        "==": value == threshold,
    }[op]
    passed = bool(math.isfinite(value) and ok)
    return Check(name, value, threshold, op, passed, reason, description, predicted, measured)


@float64
def all_passed(checks: Iterable[Check]) -> bool:
    """True when there is at least one check and every check passed."""
    checks = list(checks)
    return bool(checks) and all(c.passed for c in checks)


def _jsonable(v: Any) -> Any:
    import numpy as np

    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else str(v)  # JSON has no NaN/inf; keep them readable
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, Sequence) and not isinstance(v, str):
        return [_jsonable(x) for x in v]
    return v
