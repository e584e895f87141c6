"""Metrics and bootstrap confidence intervals."""

from lmadapt.eval.metrics import (
    METRICS,
    accuracy,
    bootstrap_ci,
    bootstrap_mean_ci,
    exact_match,
    macro_f1,
    score_predictions,
)

__all__ = ["METRICS", "accuracy", "bootstrap_ci", "bootstrap_mean_ci", "exact_match", "macro_f1",
           "score_predictions"]
