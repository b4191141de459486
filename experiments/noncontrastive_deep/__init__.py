"""Tian, Chen & Ganguli 2021 on a trained network: BYOL's linear predictor aligns with F and turns symmetric (B1-B3)."""

from experiments.noncontrastive_deep.config import NetSetup, NoncontrastiveDeepConfig
from experiments.noncontrastive_deep.run import run

__all__ = ["NetSetup", "NoncontrastiveDeepConfig", "run"]
