"""Theory-vs-experiment comparisons: named statistics with thresholds (:class:`Check`) and the metrics behind them."""

from stepwise.compare.checks import KINDS, Check, Kind, all_passed, check, kind_summary, summary_line
from stepwise.compare.steps import StepDetection, detect_steps, stepwise_checks
from stepwise.compare.metrics import (
    crossing_times,
    gram_relative_error,
    onset_times,
    principal_angles,
    procrustes_error,
    projector_distance,
    random_subspace_similarity,
    rank_trajectory,
    relative_errors,
    subspace_similarity,
    unit_rank_increments,
    values_at,
)

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
    "crossing_times",
    "gram_relative_error",
    "onset_times",
    "principal_angles",
    "procrustes_error",
    "projector_distance",
    "random_subspace_similarity",
    "rank_trajectory",
    "relative_errors",
    "subspace_similarity",
    "unit_rank_increments",
    "values_at",
]
