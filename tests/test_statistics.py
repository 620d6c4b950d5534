"""Statistics on small hand-made inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from clpft.evaluation.statistics import bootstrap_ci, paired_randomization_test


def test_exact_randomization_p_values():
    # every query improves by 1: only "all +" and "all -" are as extreme -> 2 / 2^5
    assert paired_randomization_test([1, 1, 1, 1, 1], [0, 0, 0, 0, 0]) == pytest.approx(2 / 32)
    # differences (2, 1): |mean| >= 1.5 only for (+,+) and (-,-) -> 2/4
    assert paired_randomization_test([2, 1], [0, 0]) == pytest.approx(0.5)
    # no difference at all -> p = 1
    assert paired_randomization_test([0.3, 0.5, 0.7], [0.3, 0.5, 0.7]) == 1.0


def test_sampled_randomization_matches_exact_when_large():
    rng = np.random.default_rng(1)
    a = rng.normal(0.55, 0.2, 400)
    b = a - 0.05 + rng.normal(0, 0.05, 400)  # a clear, consistent improvement
    assert paired_randomization_test(a, b) < 0.001
    c = a + rng.normal(0, 0.05, 400)  # noise only
    assert paired_randomization_test(a, c) > 0.01


def test_bootstrap_interval_known_cases():
    assert bootstrap_ci([0.4] * 30) == pytest.approx((0.4, 0.4))
    x = np.tile([0.0, 1.0], 1000)  # mean 0.5, standard error sqrt(0.25 / 2000)
    low, high = bootstrap_ci(x)
    half = 1.96 * np.sqrt(0.25 / 2000)
    assert low == pytest.approx(0.5 - half, abs=0.004) and high == pytest.approx(0.5 + half, abs=0.004)


def test_mismatched_lengths():
    with pytest.raises(ValueError):
        paired_randomization_test([1, 2], [1])
