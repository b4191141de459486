"""Tian et al. 2020, the HLTM experiment: a tree-shaped ReLU network learns the latents of a hierarchical tree."""

from experiments.hltm.config import HLTMConfig
from experiments.hltm.run import run

__all__ = ["HLTMConfig", "run"]
