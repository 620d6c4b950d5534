"""Encode queries and passages with a SentenceTransformer, each kind with its own length limit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
from sentence_transformers import SentenceTransformer


@contextlib.contextmanager
def max_length(model: SentenceTransformer, limit: int | None) -> Iterator[None]:
    """Temporarily cap the model's max_seq_length (never raise it above the model's own limit)."""
    original = model.max_seq_length
    if limit is not None and original is not None:
        model.max_seq_length = min(limit, original)
    try:
        yield
    finally:
        model.max_seq_length = original


def encode_texts(
    model: SentenceTransformer,
    texts: Sequence[str],
    kind: str,
    max_tokens: int | None,
    batch_size: int = 64,
    show_progress: bool = False,
) -> np.ndarray:
    """L2-normalised float32 embeddings, shape (len(texts), dim). ``kind`` is "query" or "document":
    it picks the model's query or document prompt, if the model defines them (e5, bge, ...)."""
    if kind not in ("query", "document"):
        raise ValueError(f"kind must be 'query' or 'document', got {kind!r}")
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    encode = model.encode_query if kind == "query" else model.encode_document
    with max_length(model, max_tokens):
        embeddings = encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
    return np.ascontiguousarray(embeddings, dtype=np.float32)
