"""Exact top-k inner-product search: faiss when installed, else chunked torch matmuls.

Memory stays bounded by the chunk sizes, never (queries x corpus).
"""

from __future__ import annotations

import numpy as np
import torch


def _faiss_search(queries: np.ndarray, corpus: np.ndarray, k: int, query_chunk: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    # faiss.knn searches the corpus array in place (blocked GEMM + heaps): unlike IndexFlatIP.add it keeps
    # no second copy of the corpus, so a 1M x 1024 float32 corpus (4 GB) needs 4 GB, not 8.
    scores, ids = [], []
    for start in range(0, len(queries), query_chunk):
        s, i = faiss.knn(queries[start : start + query_chunk], corpus, k, metric=faiss.METRIC_INNER_PRODUCT)
        scores.append(s)
        ids.append(i)
    return np.concatenate(scores), np.concatenate(ids)


def _torch_search(
    queries: np.ndarray, corpus: np.ndarray, k: int, query_chunk: int, corpus_chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    corpus_t = torch.from_numpy(corpus)
    all_scores, all_ids = [], []
    for q_start in range(0, len(queries), query_chunk):
        q = torch.from_numpy(queries[q_start : q_start + query_chunk])
        best_scores = torch.full((len(q), 0), float("-inf"))
        best_ids = torch.zeros((len(q), 0), dtype=torch.long)
        for c_start in range(0, len(corpus_t), corpus_chunk):
            block = q @ corpus_t[c_start : c_start + corpus_chunk].T
            s, i = block.topk(min(k, block.shape[1]), dim=1)
            merged_scores = torch.cat([best_scores, s], dim=1)
            merged_ids = torch.cat([best_ids, i + c_start], dim=1)
            best_scores, pos = merged_scores.topk(min(k, merged_scores.shape[1]), dim=1)
            best_ids = merged_ids.gather(1, pos)
        all_scores.append(best_scores.numpy())
        all_ids.append(best_ids.numpy())
    return np.concatenate(all_scores), np.concatenate(all_ids)


def exact_search(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    backend: str = "auto",
    query_chunk: int = 1024,
    corpus_chunk: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` corpus rows by inner product for each query: (scores, indices), each (n_queries, k'),
    k' = min(k, corpus size), best first. ``backend``: "auto" (faiss if importable), "faiss", "torch"."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    k = min(k, len(corpus))
    if len(queries) == 0 or k == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    if backend == "auto":
        try:
            import faiss  # noqa: F401

            backend = "faiss"
        except ImportError:
            backend = "torch"
    if backend == "faiss":
        return _faiss_search(queries, corpus, k, query_chunk)
    if backend == "torch":
        return _torch_search(queries, corpus, k, query_chunk, corpus_chunk)
    raise ValueError(f"unknown search backend {backend!r}")
