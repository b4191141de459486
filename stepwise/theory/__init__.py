"""Closed-form and numerically integrated predictions of SSL learning dynamics: no training, no Flax.

Each module is one paper's theory; they share function names (``predict``, ``loss``, ``step_times``), so the
package exports its modules, each with an ``__all__`` of its own:

``linear``          Simon et al. 2023: linear Barlow Twins, Γ's eigenmodes, step times, final embedding
``kernel``          Simon et al. 2023, kernel extension: kernel Barlow Twins (kernel PCA of the contrastive kernel)
``speedup``         Simon et al. 2023, Section 5: preconditioned gradients and the speed of the last step
``noncontrastive``  Tian, Chen & Ganguli 2021: linear BYOL/SimSiam dynamics, fixed points, DirectPred's alignment
``covariance``      Tian et al. 2020: the covariance operator of contrastive losses (HLTM)
``grassmann``       Esser et al. 2023: linear SSL collapse and the exact Grassmann flow

Modules are imported on first use (``stepwise.theory.linear`` or ``from stepwise.theory import linear``), so
importing one theory does not import the others' dependencies (diffrax).
"""

from stepwise._lazy import lazy_exports

__all__ = ["covariance", "grassmann", "kernel", "linear", "noncontrastive", "speedup"]

__getattr__, __dir__ = lazy_exports(__name__, globals(), modules=__all__)
