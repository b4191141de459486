"""Training loops: the linear model (float64 full-batch GD) and joint-embedding SSL networks."""

from stepwise.training.linear import LinearRun, train_linear_bt
from stepwise.training.ssl import SSLRun, TrainConfig, TrainState, make_optimizer, train_ssl

__all__ = ["LinearRun", "SSLRun", "TrainConfig", "TrainState", "make_optimizer", "train_linear_bt", "train_ssl"]
