"""Metrics with bootstrap 95% confidence intervals."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation

import numpy as np

from lmadapt.errors import LmadaptError

# What `metric=` may name, per task kind; the first is the kind's default. A rationale task is
# scored as generation (its label is the text to produce). Other kinds (preferences, prompts) are
# scored by their method (a reward, a pair accuracy) and take no `metric=`.
GENERATION_METRICS = ("exact_match", "numeric", "contains", "rouge_l", "chrf")
METRIC_CHOICES = {"classification": ("accuracy",), "generation": GENERATION_METRICS,
                  "rationale": GENERATION_METRICS}


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


def default_metric(kind: str) -> str:
    """The metric a task of this kind is scored by when `metric=` is not set ('' for a kind its
    method scores)."""
    return METRIC_CHOICES.get(kind, ("",))[0]


def check_metric(kind: str, name: str = "") -> str:
    """The metric name for a task of this kind (its default when name is empty), or a one-line
    error listing the choices."""
    if not name:
        return default_metric(kind)
    every = sorted({m for names in METRIC_CHOICES.values() for m in names})
    if name not in every:
        raise LmadaptError(f"unknown metric {name!r}; use one of: {', '.join(GENERATION_METRICS)} "
                           "(generation) or accuracy (classification)")
    if kind not in METRIC_CHOICES:
        raise LmadaptError(f"metric={name} does not apply to a {kind} task (its method scores it); "
                           "leave metric unset")
    if name not in METRIC_CHOICES[kind]:
        raise LmadaptError(f"metric {name!r} is not for a {kind} task; use one of: "
                           f"{', '.join(METRIC_CHOICES[kind])}")
    return name


# A number: digits with optional thousands groups and decimals (or a bare .5), an optional minus
# (not a hyphen after a word: '3-5' is 3 and 5) and an optional '$'.
_NUMBER = re.compile(r"(?:(?<![\w.])(?P<sign>[-\u2212]))?\$?(?<![\d.])"
                     r"(?P<digits>\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)(?!\d)")
_GSM_ANSWER = re.compile(r"####\s*(?=\S)")


def final_number(text: str) -> Decimal | None:
    """The answer number in text: the number right after the last `#### ` (GSM style) when there
    is one, else the last number in the text; None when it holds no number. '1,234', '1234.0'
    and '$1234' are one value."""
    after = [m.end() for m in _GSM_ANSWER.finditer(text)]
    for start in reversed(after):
        if (found := _NUMBER.match(text, start)) is not None:
            return _as_decimal(found)
    numbers = list(_NUMBER.finditer(text))
    return _as_decimal(numbers[-1]) if numbers else None


def _as_decimal(match: re.Match) -> Decimal | None:
    try:
        value = Decimal(match["digits"].replace(",", ""))
    except InvalidOperation:
        return None
    return -value if match["sign"] else value


def _numeric_scores(preds: Sequence[str], golds: Sequence[str]) -> np.ndarray:
    gold_values = [final_number(g) for g in golds]
    if missing := sum(v is None for v in gold_values):
        warnings.warn(f"metric numeric: {missing} of {len(golds)} gold answers hold no number; "
                      "those examples count as wrong", UserWarning, stacklevel=3)
    return np.array([g is not None and final_number(p) == g for p, g in zip(preds, gold_values, strict=True)],
                    dtype=float)


def _contains(pred: str, gold: str) -> bool:
    pred, gold = normalize_answer(pred), normalize_answer(gold)
    return gold in pred if gold else not pred  # an empty gold is found only in an empty prediction


def _rouge_l_scores(preds: Sequence[str], golds: Sequence[str]) -> np.ndarray:
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"])
    return np.array([scorer.score(g, p)["rougeL"].fmeasure for p, g in zip(preds, golds, strict=True)],
                    dtype=float)


def _chrf_scores(preds: Sequence[str], golds: Sequence[str]) -> np.ndarray:
    from sacrebleu.metrics import CHRF

    chrf = CHRF()
    return np.array([chrf.sentence_score(p, [g]).score / 100 for p, g in zip(preds, golds, strict=True)],
                    dtype=float)


def per_example_scores(preds: Sequence[str], golds: Sequence[str], metric: str) -> np.ndarray:
    """One score in [0, 1] per example under metric (the unit the bootstrap resamples)."""
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold answers")
    if metric == "numeric":
        return _numeric_scores(preds, golds)
    if metric == "rouge_l":
        return _rouge_l_scores(preds, golds)
    if metric == "chrf":
        return _chrf_scores(preds, golds)
    same = {"accuracy": lambda p, g: p == g, "contains": _contains,
            "exact_match": lambda p, g: normalize_answer(p) == normalize_answer(g)}[metric]
    return np.array([same(p, g) for p, g in zip(preds, golds, strict=True)], dtype=float)


def score_predictions(preds: Sequence[str], golds: Sequence[str], kind: str,
                      seed: int = 0, metric: str = "") -> dict[str, float]:
    """The metric (the kind's default when empty: accuracy for classification, exact_match for
    generation) with a bootstrap 95% CI over per-example scores; classification adds macro_f1.
    `per_example` holds the per-example scores (the unit a paired comparison of methods uses)."""
    name = check_metric(kind, metric) or "exact_match"
    values = per_example_scores(preds, golds, name)
    low, high = bootstrap_mean_ci(values, seed=seed)
    out = {"metric": name, "score": float(values.mean()) if len(values) else 0.0,
           "ci_low": low, "ci_high": high, "per_example": values.tolist()}
    if kind == "classification":
        out["macro_f1"] = macro_f1(preds, golds)
    return out
