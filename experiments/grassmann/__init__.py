"""Esser, Mukherjee & Ghoshdastidar 2023: linear SSL collapses without constraints; on the Grassmannian it follows an
exact closed form; constrained SSL is not lazy as the width grows, unlike supervised training of the same network."""

from experiments.grassmann.config import GrassmannConfig
from experiments.grassmann.run import run

__all__ = ["GrassmannConfig", "run"]
