"""Simon et al. 2023, E6: the empirical NTK after training predicts the embeddings BT, SimCLR and VICReg learn."""

from experiments.ntk_after_training.config import NtkAfterTrainingConfig
from experiments.ntk_after_training.run import run

__all__ = ["NtkAfterTrainingConfig", "run"]
