"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest

from clpft.evaluation import compute_metrics


def test_hand_computed_example():
    qrels = {"q1": {"a": 2, "b": 1, "z": 1}, "q2": {"c": 1}}
    run = {
        # q1 ranking: x, a, y, b  (z never retrieved)
        "q1": {"x": 0.9, "a": 0.8, "y": 0.7, "b": 0.6},
        # q2 ranking: c first
        "q2": {"c": 0.5, "d": 0.4},
    }
    mean, per_query = compute_metrics(qrels, run)
    log2 = math.log2
    # trec_eval nDCG gain = grade; DCG = sum gain / log2(rank + 1)
    dcg = 2 / log2(3) + 1 / log2(5)
    ideal = 2 / log2(2) + 1 / log2(3) + 1 / log2(4)
    assert per_query["q1"]["ndcg@10"] == pytest.approx(dcg / ideal, abs=1e-6)
    assert per_query["q1"]["ndcg@5"] == pytest.approx(dcg / ideal, abs=1e-6)
    assert per_query["q1"]["mrr@10"] == pytest.approx(0.5)
    assert per_query["q1"]["recall@100"] == pytest.approx(2 / 3)
    assert per_query["q1"]["map"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert per_query["q2"] == {"ndcg@5": 1.0, "ndcg@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0, "map": 1.0}
    assert mean["mrr@10"] == pytest.approx(0.75)


def test_mrr_is_cut_at_10_and_missing_queries_score_zero():
    qrels = {"q1": {"hit": 1}, "q2": {"x": 1}}
    run = {"q1": {f"d{i}": 1 - i / 100 for i in range(10)} | {"hit": 0.5}}
    mean, per_query = compute_metrics(qrels, run)
    assert per_query["q1"]["mrr@10"] == 0.0  # rank 11
    assert per_query["q1"]["recall@100"] == 1.0
    assert per_query["q2"]["ndcg@10"] == 0.0
    assert mean["recall@100"] == 0.5
