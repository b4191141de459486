"""Errors with messages that say what went wrong, where, and what to try."""

from __future__ import annotations

from stepwise.data.datasets import DataNotFoundError

__all__ = ["DataNotFoundError", "DivergenceError"]


class DivergenceError(FloatingPointError):
    """A run produced NaN or inf. Carries the step, the quantity and what to try."""

    def __init__(self, *, step: int, quantity: str, value: float, hint: str):
        self.step, self.quantity, self.value, self.hint = step, quantity, value, hint
        super().__init__(f"diverged at step {step}: {quantity} = {value}. Try: {hint}.")
