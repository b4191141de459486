"""Tian, Chen & Ganguli 2021: the linear BYOL / SimSiam model against its theory (theory note tian2021, A1-A9)."""

from experiments.noncontrastive_linear.config import NoncontrastiveLinearConfig
from experiments.noncontrastive_linear.run import run

__all__ = ["NoncontrastiveLinearConfig", "run"]
