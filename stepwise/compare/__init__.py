"""Theory-vs-experiment comparisons: named statistics with thresholds (:class:`Check`) and the metrics behind them.

The shared core is exported here (checks, step detection, metrics). Each paper's or tool's checks are a module of
its own, exported as a module and imported on first use (``stepwise.compare.ntk_agreement`` or
``from stepwise.compare import ntk_agreement``):

``exact``          closed-form comparisons of a run with its exact theory (linear and kernel Barlow Twins)
``ntk_agreement``  a network's learned subspace and step order against its empirical NTK's prediction (Simon E6)
``hidden``         a backbone's steps and effective dimension (Simon E5; reported)
``probe``          linear-probe accuracy of frozen embeddings (reported)
``diagnose``       why a check of a trained network failed (still learning, the kernel moved, a disagreement)
``step_map``       where steps appear over a grid of runs (Simon E3/E4): per-cell statistics, best cell, checks
``width_sweep``    MLPs of growing width against their NTKs' kernel theory (Simon NTK extension): trends, baseline
``speedup``        focusing the gradient on small eigendirections (Simon sec. 5): linear variants vs exact maps, MLP
``tian2021``       BYOL/SimSiam/DirectPred checks (Tian, Chen & Ganguli 2021)
``tian2020``       covariance-operator and latent-tree checks (Tian 2020)
``esser2023``      Grassmann-flow checks (Esser et al. 2023)
"""

from stepwise._lazy import lazy_exports
from stepwise.compare import metrics
from stepwise.compare.checks import KINDS, Check, Kind, all_passed, check, kind_summary, summary_line
from stepwise.compare.metrics import *  # noqa: F403 (every metric: the names of metrics.__all__)
from stepwise.compare.steps import StepDetection, detect_steps, stepwise_checks

__all__ = [
    "Check",
    "StepDetection",
    "detect_steps",
    "stepwise_checks",
    "KINDS",
    "Kind",
    "all_passed",
    "kind_summary",
    "summary_line",
    "check",
    *metrics.__all__,
]

_MODULES = ("diagnose", "esser2023", "exact", "hidden", "ntk_agreement", "probe", "speedup", "step_map", "tian2020",
            "tian2021", "width_sweep")
__all__ += list(_MODULES)

__getattr__, __dir__ = lazy_exports(__name__, globals(), modules=_MODULES)
