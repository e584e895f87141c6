"""Metrics and bootstrap confidence intervals."""

from lmadapt.eval.metrics import (
    GENERATION_METRICS,
    METRICS,
    accuracy,
    bootstrap_ci,
    bootstrap_mean_ci,
    check_metric,
    exact_match,
    final_number,
    macro_f1,
    per_example_scores,
    score_predictions,
)

__all__ = ["GENERATION_METRICS", "METRICS", "accuracy", "bootstrap_ci", "bootstrap_mean_ci", "check_metric",
           "exact_match", "final_number", "macro_f1", "per_example_scores", "score_predictions"]
