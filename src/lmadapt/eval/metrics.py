"""Metrics with bootstrap 95% confidence intervals."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def accuracy(preds: Sequence[str], golds: Sequence[str]) -> float:
    return float(np.mean([p == g for p, g in zip(preds, golds, strict=True)])) if golds else 0.0


def macro_f1(preds: Sequence[str], golds: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """Unweighted mean of per-class F1 over the label set (classes absent from both count 0)."""
    labels = list(labels) if labels else sorted(set(golds) | set(preds))
    scores = []
    for label in labels:
        tp = sum(p == label and g == label for p, g in zip(preds, golds, strict=True))
        fp = sum(p == label and g != label for p, g in zip(preds, golds, strict=True))
        fn = sum(p != label and g == label for p, g in zip(preds, golds, strict=True))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def normalize_answer(text: str) -> str:
    """Lower-case, collapse whitespace, strip surrounding punctuation."""
    return " ".join(text.lower().split()).strip(" .!?,;:\"'")


def exact_match(preds: Sequence[str], golds: Sequence[str]) -> float:
    pairs = zip(preds, golds, strict=True)
    return float(np.mean([normalize_answer(p) == normalize_answer(g) for p, g in pairs])) if golds else 0.0


METRICS: dict[str, Callable[[Sequence[str], Sequence[str]], float]] = {
    "accuracy": accuracy,
    "macro_f1": macro_f1,
    "exact_match": exact_match,
}


def bootstrap_ci(metric: Callable[[Sequence[str], Sequence[str]], float], preds: Sequence[str],
                 golds: Sequence[str], n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of metric over examples resampled with replacement."""
    n = len(golds)
    if n == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    preds_arr, golds_arr = np.asarray(preds, dtype=object), np.asarray(golds, dtype=object)
    stats = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        stats.append(metric(list(preds_arr[idx]), list(golds_arr[idx])))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean_ci(values: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-example values (vectorised)."""
    if len(values) == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_resamples, len(values)))  # (R, N)
    means = values[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def score_predictions(preds: Sequence[str], golds: Sequence[str], kind: str,
                      seed: int = 0) -> dict[str, float]:
    """Primary metric with its CI, plus secondary metrics, for one task kind."""
    primary = "accuracy" if kind == "classification" else "exact_match"
    same = (lambda p, g: p == g) if kind == "classification" else (
        lambda p, g: normalize_answer(p) == normalize_answer(g))
    correct = np.array([same(p, g) for p, g in zip(preds, golds, strict=True)], dtype=float)
    low, high = bootstrap_mean_ci(correct, seed=seed)
    out = {"metric": primary, "score": float(correct.mean()) if len(correct) else 0.0,
           "ci_low": low, "ci_high": high}
    if kind == "classification":
        out["macro_f1"] = macro_f1(preds, golds)
    return out
