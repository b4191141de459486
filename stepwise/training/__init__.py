"""Training loops: the linear and kernel models (float64 full-batch GD), joint-embedding SSL networks, BYOL/SimSiam
with a predictor (:mod:`stepwise.training.noncontrastive`), Riemannian GD on the Stiefel manifold
(:mod:`stepwise.training.riemannian`) and the latent-tree networks (:mod:`stepwise.training.hltm`)."""

from stepwise.training.hltm import train_runs
from stepwise.training.kernel import KernelRun, train_kernel_bt
from stepwise.training.linear import LinearRun, train_linear_bt
from stepwise.training.noncontrastive import NoncontrastiveConfig, NoncontrastiveRun, train_noncontrastive
from stepwise.training.riemannian import riemannian_gd, riemannian_sgd
from stepwise.training.ssl import SSLRun, TrainConfig, TrainState, make_optimizer, train_ssl

__all__ = [
    "KernelRun", "LinearRun", "NoncontrastiveConfig", "NoncontrastiveRun", "SSLRun", "TrainConfig", "TrainState",
    "make_optimizer", "riemannian_gd", "riemannian_sgd", "train_kernel_bt", "train_linear_bt", "train_noncontrastive",
    "train_runs", "train_ssl",
]
