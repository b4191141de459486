"""DirectPred (Tian, Chen & Ganguli 2021, Section 6): a predictor set from F's eigendecomposition against trained
ones."""

from experiments.directpred.config import DirectPredConfig
from experiments.directpred.run import run

__all__ = ["DirectPredConfig", "run"]
