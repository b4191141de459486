"""Simon et al. 2023, section 3: wide ReLU MLPs trained with Barlow Twins approach the NTK's kernel-PCA prediction."""

from experiments.width_sweep.config import WidthSweepConfig
from experiments.width_sweep.run import run

__all__ = ["WidthSweepConfig", "run"]
