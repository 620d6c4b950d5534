"""Statistics on small hand-made inputs with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clpft.evaluation.statistics import bootstrap_ci, paired_randomization_test
from conftest import load_benchmark


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


def _metrics_file(path, per_query: dict[str, float], base: dict[str, float] | None = None) -> str:
    """A metrics.json as `clpft eval` (or, with ``base``, `clpft run`) writes it, nDCG@10 only varying."""

    def part(values):
        metrics = {m: sum(values.values()) / len(values) for m in ("ndcg@5", "ndcg@10", "recall@100", "mrr@10", "map")}
        return {"metrics": metrics, "per_query": {q: {"ndcg@10": v} for q, v in values.items()}}

    report = {"base": part(base), "finetuned": part(per_query)} if base else part(per_query)
    path.write_text(json.dumps(report))
    return str(path)


def test_main_job_comparison_tests_each_model_against_the_run(tmp_path):
    """benchmarks/main_job.py --compare: every other model is tested, query by query, against the run's
    fine-tuned model; with 4 queries the p-values are exact (2^4 sign flips)."""
    main_job = load_benchmark("main_job")
    run = tmp_path / "run"
    run.mkdir()
    _metrics_file(
        run / "metrics.json", {"a": 0.5, "b": 0.6, "c": 0.7, "d": 0.8}, base={"a": 0.4, "b": 0.5, "c": 0.6, "d": 0.7}
    )
    other = _metrics_file(tmp_path / "other.json", {"a": 0.5, "b": 0.6, "c": 0.7, "d": 1.0})
    rows = {row["name"]: row for row in main_job.compare(run, [f"st-mnrl={other}"])}
    assert list(rows) == ["base (untrained)", "this run", "st-mnrl"]
    assert rows["this run"]["p_vs_this_run"] is None
    assert rows["base (untrained)"]["p_vs_this_run"] == pytest.approx(
        2 / 16
    )  # all four differ by 0.1: only the two all-same-sign flips
    assert rows["st-mnrl"]["p_vs_this_run"] == pytest.approx(1.0)  # one query differs: both signs are as extreme
    assert rows["st-mnrl"]["metrics"]["ndcg@10"] == pytest.approx(0.7)
    with pytest.raises(SystemExit, match="other queries"):
        main_job.compare(run, [f"x={_metrics_file(tmp_path / 'few.json', {'a': 0.5})}"])
    with pytest.raises(SystemExit, match="expected NAME=FILE"):
        main_job.compare(run, [other])
