"""Retrieval metrics through pytrec_eval (trec_eval's own code), per query and averaged.

nDCG@5 and nDCG@10 use graded relevance; recall@100 and MAP count grade > 0 as relevant; MRR@10 is
the reciprocal rank of the first relevant document within the top 10 (0 when none is there).
"""

from __future__ import annotations

import pytrec_eval

METRICS = ("ndcg@5", "ndcg@10", "recall@100", "mrr@10", "map")
# How reports and tables name them.
LABELS = {"ndcg@5": "nDCG@5", "ndcg@10": "nDCG@10", "recall@100": "recall@100", "mrr@10": "MRR@10", "map": "MAP"}

_TREC_NAMES = {"ndcg_cut_5": "ndcg@5", "ndcg_cut_10": "ndcg@10", "recall_100": "recall@100", "map": "map"}


def compute_metrics(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(mean over the qrels' queries, per-query values). A query missing from ``run`` scores 0."""
    qrels = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    run = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items() if q in qrels}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.5,10", "recall.100", "map"}).evaluate(run)
    top10 = {q: dict(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:10]) for q, docs in run.items()}
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)

    per_query: dict[str, dict[str, float]] = {}
    for query_id in sorted(qrels):
        values = {name: full.get(query_id, {}).get(trec, 0.0) for trec, name in _TREC_NAMES.items()}
        values["mrr@10"] = mrr.get(query_id, {}).get("recip_rank", 0.0)
        per_query[query_id] = {name: values[name] for name in METRICS}
    count = len(per_query)
    mean = {name: (sum(v[name] for v in per_query.values()) / count if count else 0.0) for name in METRICS}
    return mean, per_query
