"""The validation split: held-out training queries, and how they score a model during training.

``split_validation`` holds out a seeded share of the training *queries* (never the test split) and
takes them out of every training row's negatives' own queries; ``ValidationRanking`` scores a model
on them the way the test does (dense retrieval, pytrec_eval), with per-query values, so that the
guard (clpft.guard) can tell a real gain from noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any

from clpft.data.trainset import TrainExample
from clpft.errors import ClpftError

VAL_CORPUS_DOCS = 1000  # documents the validation queries rank, at most (see sample_corpus)


def split_validation(
    examples: list[TrainExample], fraction: float, seed: int
) -> tuple[list[TrainExample], list[TrainExample]]:
    """A seeded share of the training *queries* held out for validation (all rows of a query go one way).

    The held-out queries are also taken out of every training row's negatives' own queries: mined from
    the training qrels, a held-out query is often a negative's own query, and training on it, beside the
    document it is relevant to, would leak the validation split into training. The training rows are
    copies; ``examples`` is not changed."""
    if not 0.0 <= fraction < 1.0:
        raise ClpftError(f"--val-fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return examples, []
    keys = sorted({e.query_id or e.query for e in examples})
    random.Random(f"{seed}:validation").shuffle(keys)
    held = set(keys[: max(1, round(fraction * len(keys)))])
    if len(held) == len(keys):
        raise ClpftError(f"--val-fraction {fraction} leaves no training queries ({len(keys)} in all)")
    held_out = [e for e in examples if (e.query_id or e.query) in held]
    held_texts = {e.query for e in held_out}
    train = [_without_own_queries(e, held_texts) for e in examples if (e.query_id or e.query) not in held]
    return train, held_out


def _without_own_queries(example: TrainExample, texts: set[str]) -> TrainExample:
    """A copy of ``example`` whose negatives' own queries hold none of ``texts``; a negative left with
    none becomes one without a known query (source "none")."""
    if not any(q in texts for queries in example.own_queries for q in queries):
        return example
    own = [[q for q in queries if q not in texts] for queries in example.own_queries]
    sources = example.own_query_sources
    if sources is not None:
        sources = [source if queries else "none" for source, queries in zip(sources, own)]
    return dataclasses.replace(example, own_queries=own, own_query_sources=sources)


def count_own_queries(examples: list[TrainExample]) -> int:
    return sum(len(queries) for e in examples for queries in e.own_queries)


def sample_corpus(corpus: dict[str, str], pool: dict[str, str], max_docs: int, seed: int) -> dict[str, str]:
    """The validation queries' positives and hard negatives (``pool``), then a seeded sample of the rest of
    ``corpus``, ``max_docs`` in all (the whole corpus when it is smaller).

    The guard encodes this corpus at every evaluation, so its size is the guard's cost (SciFact's 5,183
    documents: about a minute per evaluation on 2 cores in bf16). Every document a validation query is
    judged against stays in, and the sample keeps the distractors the tuned model could wrongly
    promote, so scores move as whole-corpus scores do, a little higher (fewer distractors); the guard
    compares states with each other, never with the test."""
    if len(corpus) <= max_docs:
        return corpus
    kept = {d: corpus[d] for d in pool if d in corpus}
    rest = sorted(d for d in corpus if d not in kept)
    random.Random(seed).shuffle(rest)
    kept |= {d: corpus[d] for d in rest[: max(0, max_docs - len(kept))]}
    return kept


class ValidationRanking:
    """The held-out queries rank a corpus with the model; ``__call__`` returns the test's metrics (means)
    and ``"per_query"``: each query's nDCG@10.

    Without ``corpus`` the queries rank the pool of their positives and mined hard negatives: cheap, and
    sensitive to what the loss changes (hard negatives moving past positives), but blind to the rest of the
    corpus rising. With ``corpus`` (document id -> text) they rank it, capped at ``max_docs`` documents
    (``sample_corpus``), as the test ranks the whole corpus. Encoding goes through
    ``clpft.mining.encode_texts`` (token-budget batches, the command's precision), search through
    ``exact_search`` and the metrics through pytrec_eval, as in ``clpft eval``."""

    def __init__(
        self,
        examples: list[TrainExample],
        corpus: dict[str, str] | None = None,
        *,
        query_max_tokens: int | None = None,
        passage_max_tokens: int | None = None,
        max_docs: int = VAL_CORPUS_DOCS,
        seed: int = 0,
        batch_size: int = 64,
    ) -> None:
        self.queries: dict[str, str] = {}
        self.qrels: dict[str, dict[str, int]] = {}
        pool: dict[str, str] = {}
        for i, e in enumerate(examples):
            query_id = e.query_id or f"q{i}"
            self.queries[query_id] = e.query
            if corpus is not None and (not e.pos_ids or any(d not in corpus for d in e.pos_ids)):
                raise ClpftError(
                    f"validation on the whole corpus: query {query_id!r} has positives that are not in it "
                    "(the training set needs pos_ids from this corpus)"
                )
            for k, text in enumerate(e.pos):
                doc = _doc_id(e.pos_ids, k, text)
                pool[doc] = text
                self.qrels.setdefault(query_id, {})[doc] = 1
            for k, text in enumerate(e.neg):
                pool.setdefault(_doc_id(e.neg_ids, k, text), text)
        self.corpus = pool if corpus is None else sample_corpus(corpus, pool, max_docs, seed)
        self.query_max_tokens, self.passage_max_tokens, self.batch_size = (
            query_max_tokens,
            passage_max_tokens,
            batch_size,
        )

    def __call__(self, model: Any) -> dict[str, Any]:
        from clpft.evaluation.metrics import compute_metrics
        from clpft.mining.encode import encode_texts
        from clpft.mining.search import exact_search

        was_training = model.training
        model.eval()
        try:
            doc_ids, query_ids = list(self.corpus), list(self.queries)
            docs = encode_texts(
                model, [self.corpus[d] for d in doc_ids], "document", self.passage_max_tokens, self.batch_size
            )
            queries = encode_texts(
                model, [self.queries[q] for q in query_ids], "query", self.query_max_tokens, self.batch_size
            )
        finally:
            model.train(was_training)
        scores, rows = exact_search(queries, docs, 100)
        run = {q: {doc_ids[j]: float(s) for s, j in zip(scores[i], rows[i])} for i, q in enumerate(query_ids)}
        mean, per_query = compute_metrics(self.qrels, run)
        return {
            **{name: round(value, 6) for name, value in mean.items()},
            "per_query": {q: values["ndcg@10"] for q, values in per_query.items()},
        }


def _doc_id(given: list[str] | None, k: int, text: str) -> str:
    return given[k] if given and k < len(given) else "t:" + hashlib.sha1(text.encode()).hexdigest()[:16]
