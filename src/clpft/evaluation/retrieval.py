"""Dense retrieval over a BEIR split: encode corpus and queries, exact search, metrics."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sentence_transformers import SentenceTransformer

from clpft.data.beir import Dataset
from clpft.evaluation.metrics import compute_metrics
from clpft.faults import kill_point
from clpft.mining.encode import encode_texts
from clpft.mining.search import exact_search


def encode_corpus(
    model: SentenceTransformer,
    dataset: Dataset,
    passage_max_tokens: int = 512,
    batch_size: int = 64,
    show_progress: bool = False,
) -> np.ndarray:
    """Embeddings of every document, in ``dataset.corpus`` order."""
    texts = [doc.full_text for doc in dataset.corpus.values()]
    return encode_texts(model, texts, "document", passage_max_tokens, batch_size, show_progress)


def retrieve(
    model: SentenceTransformer,
    dataset: Dataset,
    top_k: int = 100,
    query_max_tokens: int = 128,
    passage_max_tokens: int = 512,
    batch_size: int = 64,
    corpus_embeddings: np.ndarray | None = None,
    show_progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Top-``top_k`` documents with cosine scores for every judged query of the split."""
    if corpus_embeddings is None:
        corpus_embeddings = encode_corpus(model, dataset, passage_max_tokens, batch_size, show_progress)
    query_ids = sorted(dataset.qrels)
    query_emb = encode_texts(
        model, [dataset.queries[q] for q in query_ids], "query", query_max_tokens, batch_size, show_progress
    )
    scores, indices = exact_search(query_emb, corpus_embeddings, top_k)
    doc_ids = list(dataset.corpus)
    return {
        query_id: {doc_ids[j]: float(s) for s, j in zip(scores[row], indices[row])}
        for row, query_id in enumerate(query_ids)
    }


def evaluate_model(
    model: SentenceTransformer,
    dataset: Dataset,
    top_k: int = 100,
    query_max_tokens: int = 128,
    passage_max_tokens: int = 512,
    batch_size: int = 64,
    corpus_embeddings: np.ndarray | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """{"split", "num_queries", "metrics": {...}, "per_query": {qid: {...}}, "seconds"}."""
    started = time.perf_counter()
    run = retrieve(
        model, dataset, top_k, query_max_tokens, passage_max_tokens, batch_size, corpus_embeddings, show_progress
    )
    kill_point("evaluate.encoded")
    mean, per_query = compute_metrics(dataset.qrels, run)
    return {
        "split": dataset.split,
        "num_queries": len(per_query),
        "metrics": {name: round(value, 6) for name, value in mean.items()},
        "per_query": per_query,
        "seconds": round(time.perf_counter() - started, 2),
    }
