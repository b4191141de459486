"""Simon et al. 2023, section 5: focusing the gradient on small eigendirections speeds up the stepwise dynamics."""

from experiments.speedup.config import SpeedupConfig
from experiments.speedup.run import run

__all__ = ["SpeedupConfig", "run"]
