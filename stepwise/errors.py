"""Errors with messages that say what went wrong, where, and what to try."""

from __future__ import annotations

import dataclasses
import math

from stepwise.data.datasets import DataFormatError, DataNotFoundError

__all__ = ["DataFormatError", "DataNotFoundError", "DivergenceError", "config_value_errors"]


class DivergenceError(FloatingPointError):
    """A run produced NaN or inf. Carries the step, the quantity and what to try."""

    def __init__(self, *, step: int, quantity: str, value: float, hint: str):
        self.step, self.quantity, self.value, self.hint = step, quantity, value, hint
        super().__init__(f"diverged at step {step}: {quantity} = {value}. Try: {hint}.")


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
