"""Errors with messages that say what went wrong, where, and what to try."""

from __future__ import annotations

from stepwise._validate import SEED_RANGE, bound_errors, config_value_errors, raise_config_errors
from stepwise.data.datasets import DataFormatError, DataNotFoundError, image_crop_errors

__all__ = ["SEED_RANGE", "DataFormatError", "DataNotFoundError", "DivergenceError", "bound_errors",
           "config_value_errors", "image_crop_errors", "raise_config_errors"]


class DivergenceError(FloatingPointError):
    """A run produced NaN or inf. Carries the step, the quantity and what to try."""

    def __init__(self, *, step: int, quantity: str, value: float, hint: str):
        self.step, self.quantity, self.value, self.hint = step, quantity, value, hint
        super().__init__(f"diverged at step {step}: {quantity} = {value}. Try: {hint}.")
