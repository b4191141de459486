"""Training loops."""

from stepwise.training.linear import LinearRun, train_linear_bt

__all__ = ["LinearRun", "train_linear_bt"]
