"""Training loops: the linear and kernel models (float64 full-batch GD), joint-embedding SSL networks, BYOL/SimSiam
with a predictor (:mod:`stepwise.training.noncontrastive`), Riemannian GD on the Stiefel manifold
(:mod:`stepwise.training.riemannian`) and the latent-tree networks (:mod:`stepwise.training.hltm`).

The loops that train networks on augmented views of images (:func:`train_ssl`, :func:`train_ssl_stateful`,
:func:`train_noncontrastive`) share one engine, :mod:`stepwise.training.engine`: configuration, view sampling,
placement, the host loop with tracking, divergence checks and checkpoints. A script of your own that trains them
should call :func:`stepwise.reuse_freed_memory` first, as the command line does (XLA's temporaries reused, not mapped
anew at every step).
"""

from stepwise.training.compilation import compilation_cache as compilation_cache
from stepwise.training.engine import Checkpointing as Checkpointing
from stepwise.training.engine import TrainConfig as TrainConfig
from stepwise.training.engine import TrainingInterrupted as TrainingInterrupted
from stepwise.training.engine import TrainState as TrainState
from stepwise.training.engine import checkpoint_kwargs as checkpoint_kwargs
from stepwise.training.engine import eval_key as eval_key
from stepwise.training.engine import make_optimizer as make_optimizer
from stepwise.training.hltm import train_runs as train_runs
from stepwise.training.kernel import KernelRun as KernelRun
from stepwise.training.kernel import train_kernel_bt as train_kernel_bt
from stepwise.training.linear import LinearRun as LinearRun
from stepwise.training.linear import train_linear_bt as train_linear_bt
from stepwise.training.noncontrastive import NoncontrastiveConfig as NoncontrastiveConfig
from stepwise.training.noncontrastive import NoncontrastiveRun as NoncontrastiveRun
from stepwise.training.noncontrastive import train_noncontrastive as train_noncontrastive
from stepwise.training.riemannian import riemannian_gd as riemannian_gd
from stepwise.training.riemannian import riemannian_sgd as riemannian_sgd
from stepwise.training.ssl import SSLRun as SSLRun
from stepwise.training.ssl import StatefulTrainState as StatefulTrainState
from stepwise.training.ssl import make_train_step as make_train_step
from stepwise.training.ssl import train_ssl as train_ssl
from stepwise.training.ssl import train_ssl_stateful as train_ssl_stateful

__all__ = [
    "Checkpointing",
    "KernelRun",
    "LinearRun",
    "NoncontrastiveConfig",
    "NoncontrastiveRun",
    "SSLRun",
    "StatefulTrainState",
    "TrainConfig",
    "TrainState",
    "TrainingInterrupted",
    "checkpoint_kwargs",
    "compilation_cache",
    "eval_key",
    "make_optimizer",
    "make_train_step",
    "riemannian_gd",
    "riemannian_sgd",
    "train_kernel_bt",
    "train_linear_bt",
    "train_noncontrastive",
    "train_runs",
    "train_ssl",
    "train_ssl_stateful",
]
