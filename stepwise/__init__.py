"""stepwise: check theories of self-supervised learning dynamics against trained networks.

The folders, bottom layer first (what may import what: ARCHITECTURE.md, enforced by tests/test_architecture.py):
  ``stepwise._typing``    function types (``ApplyFn``, ``LossFn``, ...); ``_compat``: version workarounds
  ``stepwise.theory``     closed-form predictions, one module per paper (``theory.linear``: Simon et al. 2023)
  ``stepwise.data``       embedded datasets (digits, photo patches), CIFAR-10/STL-10 loaders, JAX augmentations
  ``stepwise.losses``     SSL losses as pure functions of two views' embeddings
  ``stepwise.models``     Flax NNX networks and their pure ``apply(params, x)`` form
  ``stepwise.training``   training loops; ``training.engine``: the one engine of the image-SSL loops
  ``stepwise.ntk``        the empirical NTK and its memory plan
  ``stepwise.compare``    named statistics with thresholds (:class:`stepwise.compare.Check`) and metrics
  ``stepwise.io``         atomic results.json / arrays and run metadata
  ``stepwise.plots``      figures and the HTML report, from saved runs
  ``stepwise.verify``     ``stepwise verify``: the checks on a user's own model; ``scale``: compute plans
  ``stepwise.cli``        the ``stepwise`` command; experiments live in ``experiments/``, benchmarks in
                          ``benchmarks/``

:func:`reuse_freed_memory`: glibc keeps XLA's freed temporaries for the next step instead of mapping them anew
(``stepwise._memory``); the ``stepwise`` command calls it first, a training script of your own should too.
"""

from stepwise._memory import reuse_freed_memory as reuse_freed_memory

__version__ = "0.1.0"
__all__ = ["reuse_freed_memory"]
