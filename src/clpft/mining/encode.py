"""Encode queries and passages with a SentenceTransformer, each kind with its own length limit."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm

from clpft.faults import kill_point
from clpft.precision import autocast


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


# Tokens per encoding batch on a CPU (padded texts x longest). Measured on the two kinds of machine this
# project runs on: a 2-core AMD EPYC encoded fastest in small batches (1,024 tokens, ~1.25x
# SentenceTransformer.encode's 32 texts, 2026-11-27), a 2-core Xeon with AMX in large ones (SciFact
# passages at 256 tokens, texts/s at 1,024 / 4,096 / 16,384 tokens: bf16 5.9 / 12.1 / 18.3, fp32 5.1 / 8.8 /
# 10.0, 2026-12-02, benchmarks/studies/encode_budget.py, beside a running benchmark row): AMX's tile units want
# large matrices.
CPU_TOKEN_BUDGET = 1024
AMX_TOKEN_BUDGET = 16384


@functools.cache  # a CPU feature: asked once per process, not per encoding call
def cpu_token_budget() -> int:
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return AMX_TOKEN_BUDGET if amx else CPU_TOKEN_BUDGET


def token_budget_batches(lengths: Sequence[int], token_budget: int, max_batch: int = 256) -> list[list[int]]:
    """Indices grouped longest first into batches whose padded size (texts x longest) stays within
    ``token_budget``: long texts go in small batches, short ones in large batches, padding is minimal."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and ((len(current) + 1) * longest > token_budget or len(current) >= max_batch):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def token_lengths(tokenizer, texts: Sequence[str], limit: int, chunk: int = 2048) -> list[int]:
    """Each text's token count as the model will see it (special tokens in, cut at ``limit``), tokenized
    ``chunk`` texts at a time with only the counts kept: the token ids of a whole corpus at once (Python
    lists plus the fast tokenizer's per-text encodings) held ~68 KB a passage: `clpft mine` peaked at 2,377 MB
    on 20k passages, 1,280 MB with the counts taken this way (benchmarks/scale.py)."""
    lengths: list[int] = []
    for start in range(0, len(texts), chunk):
        encoded = tokenizer(
            list(texts[start : start + chunk]),
            truncation=True,
            max_length=limit,
            add_special_tokens=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        lengths.extend(len(ids) for ids in encoded["input_ids"])
    return lengths


def encode_texts(
    model: SentenceTransformer,
    texts: Sequence[str],
    kind: str,
    max_tokens: int | None,
    batch_size: int = 64,
    show_progress: bool = False,
    token_budget: int | None = None,
) -> np.ndarray:
    """L2-normalised float32 embeddings, shape (len(texts), dim). ``kind`` is "query" or "document":
    it picks the model's query or document prompt, if the model defines them (e5, bge, ...).

    Texts are ordered by their *token* length and batched by a token budget (padded texts x tokens),
    capped at ``batch_size`` texts per batch, rather than by a fixed count: on a CPU, small batches of long
    passages keep the attention buffers in cache (benchmarks/speed.py: ~1.25x SentenceTransformer.encode
    on 2 cores, same embeddings), and short queries still go many at a time. ``token_budget`` None: 1024
    tokens on a CPU (16,384 on one with AMX: ``cpu_token_budget``); on an accelerator ``batch_size``
    full-length texts (large batches pay off there).
    The precision is the enclosing ``clpft.precision.use`` block's (``auto`` when none)."""
    if kind not in ("query", "document"):
        raise ValueError(f"kind must be 'query' or 'document', got {kind!r}")
    # sentence-transformers 6 renamed the method; the old name still works there, with a warning.
    dim = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    encode = model.encode_query if kind == "query" else model.encode_document
    texts = list(texts)
    # bf16 autocast where the hardware has it (clpft.precision): about 2x on such CPUs, same rankings.
    with max_length(model, max_tokens), autocast(model.device.type):
        if model.tokenizer is None:
            batches = [list(range(i, min(i + batch_size, len(texts)))) for i in range(0, len(texts), batch_size)]
        else:
            limit = model.max_seq_length or 512
            if token_budget is None:
                token_budget = cpu_token_budget() if model.device.type == "cpu" else batch_size * limit
            lengths = token_lengths(model.tokenizer, texts, limit)
            batches = token_budget_batches(lengths, max(token_budget, limit), max_batch=batch_size)
        out = np.empty((len(texts), dim), dtype=np.float32)
        progress = tqdm(total=len(texts), desc=f"encoding {kind}s", unit="text", disable=not show_progress)
        for batch in batches:
            out[batch] = encode(
                [texts[i] for i in batch],
                batch_size=len(batch),
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
            progress.update(len(batch))
            kill_point("encode.batch")
        progress.close()
    return out
