"""Simon et al. 2023 E3/E4: a map of where the published losses learn in steps (initialisation x lr x width)."""

from experiments.step_map.config import StepMapConfig
from experiments.step_map.run import run

__all__ = ["StepMapConfig", "run"]
