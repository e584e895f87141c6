"""Paired comparison of methods scored on the same eval examples.

Every method's per-example scores (one value in [0, 1] per eval example, averaged over its seeds)
are compared with the best method's on the same examples: a paired bootstrap of the mean
difference gives its 95% CI and a two-sided p-value, corrected across methods by Holm's
step-down procedure. A method whose corrected p-value is not below `alpha` is tied with the best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass
class Paired:
    """One method against the best, on the same examples."""

    diff: float  # mean per-example score difference (method - best)
    ci_low: float
    ci_high: float
    p: float  # two-sided, uncorrected
    p_holm: float = 1.0
    tied_best: bool = True


def paired_bootstrap(method: np.ndarray, best: np.ndarray, n_resamples: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> Paired:
    """Paired bootstrap of mean(method - best) over examples resampled with replacement.

    The CI is the percentile interval of the resampled mean differences. The p-value tests "no
    difference" by the same resampling, centred on zero: the share of resampled means at least as
    far from the observed mean as the observed mean is from zero (add-one smoothed, so never 0).
    """
    method, best = np.asarray(method, dtype=float), np.asarray(best, dtype=float)
    if method.shape != best.shape or method.ndim != 1:
        raise ValueError(f"paired scores need equal 1-D shapes, got {method.shape} and {best.shape}")
    d = method - best
    n = len(d)
    if n == 0:
        return Paired(0.0, 0.0, 0.0, 1.0)
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(n_resamples, n))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    extreme = int(np.sum(np.abs(means - observed) >= abs(observed) - 1e-12))
    p = (extreme + 1) / (n_resamples + 1)
    return Paired(observed, float(low), float(high), min(1.0, p))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given): the i-th smallest of m is scaled
    by (m - i), then made monotone non-decreasing and capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def compare_to_best(scores: dict[str, np.ndarray], best: str, alpha: float = 0.05,
                    n_resamples: int = 10_000, seed: int = 0) -> dict[str, Paired]:
    """Each method in `scores` (name -> per-example scores on the same examples) against `best`:
    paired bootstrap, then Holm's correction over the other methods. The best is tied with itself."""
    out = {name: paired_bootstrap(values, scores[best], n_resamples, seed)
           for name, values in scores.items() if name != best}
    for name, p in zip(out, holm([r.p for r in out.values()]), strict=True):
        out[name].p_holm = p
        out[name].tied_best = p >= alpha
    out[best] = Paired(0.0, 0.0, 0.0, 1.0, 1.0, True)
    return out


def _power_z(alpha: float, power: float) -> float:
    """z_{1-α/2} + z_power: the two-sided normal test's distance in standard errors."""
    return NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)


def _differences(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-example differences a - b and their sample standard deviation."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return d, float(d.std(ddof=1)) if len(d) > 1 else 0.0


def examples_to_separate(a: np.ndarray, b: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Eval examples a paired test would need to tell a from b at this alpha and power, if the
    observed mean difference and its per-example spread held: n = ((z_{1-α/2} + z_power) σ / δ)².
    None when the observed difference is zero (no size would separate them)."""
    d, sd = _differences(a, b)
    delta = float(d.mean()) if len(d) else 0.0
    if abs(delta) < 1e-12:
        return None
    return max(2, int(np.ceil((_power_z(alpha, power) * sd / abs(delta)) ** 2)))


def detectable_difference(a: np.ndarray, b: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest mean difference a paired test on these n examples finds at this alpha and
    power, given the observed per-example spread of a - b: (z_{1-α/2} + z_power) σ / √n."""
    d, sd = _differences(a, b)
    return _power_z(alpha, power) * sd / np.sqrt(len(d)) if len(d) else float("inf")


def seeds_and_examples_ci(values: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                          level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of a (seeds, examples) score matrix, resampling both the
    examples and the seeds with replacement (a two-way bootstrap), so the interval covers the
    spread between training seeds as well as between examples. With one seed: examples only."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    n_seeds, n = values.shape
    if n == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for r in range(n_resamples):
        rows = rng.integers(0, n_seeds, size=n_seeds)
        cols = rng.integers(0, n, size=n)
        means[r] = values[np.ix_(rows, cols)].mean()
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
