"""Is a difference between two systems real? Bootstrap intervals and a paired randomisation test,
both over per-query values (the unit that varies between test collections)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample queries with replacement."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def paired_randomization_test(
    a: Sequence[float], b: Sequence[float], resamples: int = 10000, seed: int = 0, exact_up_to: int = 16
) -> float:
    """Two-sided p-value of "a and b have the same mean" for paired per-query values.

    Under the null hypothesis the sign of each query's difference is a coin flip; the p-value is the
    share of sign assignments whose |mean difference| is at least the observed one. With at most
    ``exact_up_to`` queries all 2^n assignments are enumerated (an exact p-value); otherwise
    ``resamples`` random ones are drawn and p = (hits + 1) / (resamples + 1)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.shape != np.asarray(b).shape or d.ndim != 1:
        raise ValueError("a and b must be 1-d sequences of the same length")
    if d.size == 0:
        return 1.0
    observed = abs(d.mean())
    eps = 1e-12  # ties within rounding count as "at least as extreme"
    if d.size <= exact_up_to:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        return float(np.mean(np.abs((signs * d).mean(axis=1)) >= observed - eps))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(resamples, d.size))
    hits = int(np.sum(np.abs((signs * d).mean(axis=1)) >= observed - eps))
    return (hits + 1) / (resamples + 1)
