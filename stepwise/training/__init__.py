"""Training loops: the linear and kernel models (float64 full-batch GD) and joint-embedding SSL networks."""

from stepwise.training.kernel import KernelRun, train_kernel_bt
from stepwise.training.linear import LinearRun, train_linear_bt
from stepwise.training.ssl import SSLRun, TrainConfig, TrainState, make_optimizer, train_ssl

__all__ = [
    "KernelRun", "LinearRun", "SSLRun", "TrainConfig", "TrainState", "make_optimizer", "train_kernel_bt", "train_linear_bt",
    "train_ssl",
]
