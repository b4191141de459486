"""Self-supervised losses as pure JAX functions of two views' embeddings (see :mod:`stepwise.losses.ssl`)."""

from stepwise.losses.ssl import LOSSES, barlow_twins, barlow_twins_theory, get_loss, simclr, vicreg

__all__ = ["LOSSES", "barlow_twins", "barlow_twins_theory", "get_loss", "simclr", "vicreg"]
