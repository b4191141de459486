"""Self-supervised losses as pure JAX functions of two views' embeddings (see :mod:`stepwise.losses.ssl`).

``barlow_twins``, ``simclr`` and ``vicreg`` are the losses as published (:data:`PUBLISHED`); the theory forms
``barlow_twins_theory`` and ``infonce_floored`` (:data:`THEORY_FORMS`) have names of their own.
"""

from stepwise.losses.ssl import (
    LOSSES,
    PUBLISHED,
    THEORY_FORMS,
    barlow_twins,
    barlow_twins_theory,
    get_loss,
    infonce_floored,
    simclr,
    vicreg,
)

__all__ = ["LOSSES", "PUBLISHED", "THEORY_FORMS", "barlow_twins", "barlow_twins_theory", "get_loss",
           "infonce_floored", "simclr", "vicreg"]
