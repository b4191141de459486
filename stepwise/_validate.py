"""Validation of config dataclasses: the rules every field obeys and the bounds a config's fields must lie in.

A base module (it imports nothing else of ``stepwise``), so that the sub-configs of the lower layers (``data``,
``models``, ``training``) validate themselves with the same messages as the experiment configs; ``stepwise.errors``
re-exports it.
"""

from __future__ import annotations

import dataclasses
import math
import re

__all__ = ["SEED_RANGE", "bound_errors", "config_value_errors", "raise_config_errors"]


SEED_RANGE = (0, 2**32)


def config_value_errors(config) -> list[str]:
    """The values no field of a config dataclass may take, whatever it means: one message per problem.

    A float field (alone, or an entry of a tuple) that is nan or +-inf: every threshold, rate, scale and horizon of
    the experiments is a finite number, and a nan slips through comparisons such as ``x < 0`` (it is refused by none
    of them), to fail later as a divergence or a silently wrong verdict. A ``seed`` outside [0, 2**32): NumPy
    refuses negative seeds and JAX folds them into that range (``-1`` and ``2**32 - 1`` would be the same run).
    Nested dataclasses are not entered (they validate themselves).

    Args:
      config: a dataclass instance.

    Returns:
      Messages of the form ``"lr must be finite (got nan)"``, in field order; empty when none applies.
    """
    errors = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            errors.append(f"{field.name} must be finite (got {value})")
    seed = getattr(config, "seed", None)
    if isinstance(seed, int) and not SEED_RANGE[0] <= seed < SEED_RANGE[1]:
        errors.append(f"seed must be in [0, 2**32) (got {seed})")
    return errors


_BOUND = re.compile(r"(?P<op>>=|>) (?P<lo>\S+)|in (?P<left>[(\[])(?P<a>[^,]+), (?P<b>[^)\]]+)(?P<right>[)\]])")


def _within(value, bound: str) -> bool:
    match = _BOUND.fullmatch(bound)
    if match is None:
        raise ValueError(f"unknown bound {bound!r}: expected '>= a', '> a' or an interval 'in (a, b]' ([ or ( ends)")
    if match["op"]:
        lo = float(match["lo"])
        return value >= lo if match["op"] == ">=" else value > lo
    a, b = float(match["a"]), float(match["b"])
    above = value >= a if match["left"] == "[" else value > a
    below = value <= b if match["right"] == "]" else value < b
    return above and below


def bound_errors(config, *rules: tuple[str, str] | tuple[str, str, str]) -> list[str]:
    """The fields of ``config`` outside their bounds: one message per rule that fails, in the order of ``rules``.

    A rule is ``(field, bound)`` or ``(field, bound, why)``. ``bound`` is ``">= a"``, ``"> a"`` or an interval
    ``"in (a, b)"`` (``[`` / ``]`` for closed ends), optionally followed by ``" or None"`` when None is allowed.
    A value fails unless it lies within the bound, so nan fails every bound. The message is
    ``"{field} must be {bound}{why} (got {value})"``, e.g. ``"n_pairs must be >= 2 (got 1)"`` or, with
    ``why = ", i.e. below the stability limit"``, ``"lr_scale must be in (0, 1), i.e. below the stability limit
    (got 2.0)"``.
    """
    errors = []
    for field, bound, *why in rules:
        value = getattr(config, field)
        core = bound.removesuffix(" or None")
        if value is None and core != bound:
            continue
        if value is None or not _within(value, core):
            errors.append(f"{field} must be {bound}{''.join(why)} (got {value})")
    return errors


def raise_config_errors(errors: list[str], config: str, part: str = "") -> None:
    """Raise ``ValueError("invalid {config} config: ...")`` listing ``errors`` (each as ``part.<message>`` for the
    sub-config ``part``, the prefix of its dotted flags); return when there are none.

    >>> raise_config_errors(["dim must be >= 2 (got 1)"], "grassmann", "gaussian")
    Traceback (most recent call last):
    ...
    ValueError: invalid grassmann config: gaussian.dim must be >= 2 (got 1)
    """
    if errors:
        raise ValueError(f"invalid {config} config: " + "; ".join(f"{part}.{e}" if part else e for e in errors))
