"""Simon et al. 2023, section 3: a kernel machine trained with Barlow Twins learns kernel PCA of a contrastive
kernel."""

from experiments.kernel_bt.config import KernelBTConfig
from experiments.kernel_bt.run import run

__all__ = ["KernelBTConfig", "run"]
