"""Simon et al. 2023, Fig. 1A/B: the linear Barlow Twins model learns eigenmodes of Gamma one at a time."""

from experiments.linear_bt.config import LinearBTConfig
from experiments.linear_bt.run import run

__all__ = ["LinearBTConfig", "run"]
