"""stepwise: check theories of self-supervised learning dynamics against trained networks.

Subpackages:
  ``stepwise.theory``   closed-form predictions (``theory.linear``: Simon et al. 2023, linear Barlow Twins)
  ``stepwise.compare``  named statistics with thresholds (:class:`stepwise.compare.Check`) and metrics
  ``stepwise.data``     embedded datasets (digits, photo patches), CIFAR-10/STL-10 loaders, JAX augmentations
  ``stepwise.training`` training loops (``train_linear_bt``)
  ``stepwise.io``       atomic results.json / arrays and run metadata
  ``stepwise.plots``    figures and the HTML report, from saved runs
"""

__version__ = "0.1.0"
