"""Simon et al. 2023, Fig. 1C/D and the BT/SimCLR/VICReg figure: real networks learn their embedding stepwise."""

from experiments.stepwise_deep.config import DeepConfig
from experiments.stepwise_deep.run import run

__all__ = ["DeepConfig", "run"]
