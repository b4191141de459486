"""Figures and the HTML report. Everything here reads run directories; nothing runs a model.

One module per experiment, each drawing from the files a run wrote (``plot_<experiment>(run_dir)``), and
:mod:`stepwise.plots.report` for ``reports/index.html`` and a run's ``report.html``. matplotlib is imported only
here, inside the functions; the names below are imported on first use, so ``import stepwise.plots`` loads none of
the figure modules.
"""

from stepwise._lazy import lazy_exports

_WHERE = {
    "plot_directpred": "directpred",
    "plot_grassmann": "grassmann",
    "plot_hltm_sweep": "hltm",
    "plot_hltm_training": "hltm",
    "plot_linear_bt": "linear_bt",
    "plot_noncontrastive_deep": "noncontrastive_deep",
    "plot_noncontrastive_linear": "noncontrastive",
    "plot_ntk_after_training": "ntk_after_training",
    "plot_side_by_side": "deep",
    "plot_speedup": "speedup",
    "plot_stepwise_deep": "deep",
    "plot_verify": "verify",
    "plot_width": "grassmann",
    "plot_width_sweep": "width_sweep",
    "build_report": "report",
    "build_run_report": "report",
    "read_results": "report",
}

__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, globals(), names=_WHERE)
