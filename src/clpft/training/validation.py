"""The validation split: held-out training queries, and how they score a model during training.

``split_validation`` holds out a seeded share of the training *queries* (never the test split), one query
text being one query however many rows and ids carry it, and takes them out of every training row's
negatives' own queries; ``ValidationRanking`` scores a model on them the way the test does (dense retrieval,
pytrec_eval), with per-query values, so that the guard (clpft.training.guard) can tell a real gain from noise.

The documents the held-out queries rank never depend on a model's ranking: the guard compares the start
with trained states, and a corpus holding the start's own hard negatives (mined with the start) would meet
the start with its distractors and a trained state without most of its new ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any

import numpy as np

from clpft.data.texts import text_key
from clpft.data.trainset import TrainExample
from clpft.errors import ClpftError

VAL_CORPUS_DOCS = 1000  # documents the validation queries rank, at most (see sample_corpus)


def query_groups(examples: list[TrainExample]) -> list[int]:
    """For each row, the number of its query: rows that share a query id or a query text (``text_key``: case
    and spacing aside) are one query. A file in the paper's or FlagEmbedding's layout has one row per
    positive and no ids; a collection with a claim under two ids has two ids for one text."""
    parent = list(range(len(examples)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_of: dict[tuple[str, str], int] = {}
    for i, e in enumerate(examples):
        for key in (("text", text_key(e.query)), ("id", e.query_id)):
            if not key[1]:
                continue
            if key in first_of:
                parent[root(i)] = root(first_of[key])
            else:
                first_of[key] = i
    return [root(i) for i in range(len(examples))]


def split_validation(
    examples: list[TrainExample], fraction: float, seed: int
) -> tuple[list[TrainExample], list[TrainExample]]:
    """A seeded share of the training *queries* held out for validation (all rows of a query go one way,
    ``query_groups``).

    The held-out query texts are also taken out of every training row's negatives' own queries (compared by
    ``text_key``): mined from the training qrels, a held-out query is often a negative's own query, and
    training on it, beside the document it is relevant to, would leak the validation split into training.
    The training rows are copies; ``examples`` is not changed."""
    if not 0.0 <= fraction < 1.0:
        raise ClpftError(f"--val-fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return examples, []
    groups = query_groups(examples)
    # a group is named by its smallest query text, so the draw does not depend on the rows' order
    names: dict[int, str] = {}
    for group, e in zip(groups, examples):
        names[group] = min(names.get(group, text_key(e.query)), text_key(e.query))
    keys = sorted(set(names.values()))
    random.Random(f"{seed}:validation").shuffle(keys)
    held = set(keys[: max(1, round(fraction * len(keys)))])
    if len(held) == len(keys):
        raise ClpftError(f"--val-fraction {fraction} leaves no training queries ({len(keys)} in all)")
    held_out = [e for group, e in zip(groups, examples) if names[group] in held]
    held_texts = {text_key(e.query) for e in held_out}
    train = [_without_own_queries(e, held_texts) for group, e in zip(groups, examples) if names[group] not in held]
    return train, held_out


def _without_own_queries(example: TrainExample, texts: set[str]) -> TrainExample:
    """A copy of ``example`` whose negatives' own queries hold none of ``texts`` (``text_key``s); a negative
    left with none becomes one without a known query (source "none")."""
    if not any(text_key(q) in texts for queries in example.own_queries for q in queries):
        return example
    own = [[q for q in queries if text_key(q) not in texts] for queries in example.own_queries]
    sources = example.own_query_sources
    if sources is not None:
        sources = [source if queries else "none" for source, queries in zip(sources, own)]
    return dataclasses.replace(example, own_queries=own, own_query_sources=sources)


def count_own_queries(examples: list[TrainExample]) -> int:
    return sum(len(queries) for e in examples for queries in e.own_queries)


def sample_corpus(corpus: dict[str, str], judged: dict[str, str], max_docs: int, seed: int) -> dict[str, str]:
    """The validation queries' judged documents (``judged``: their positives), then a seeded uniform sample
    of the rest of ``corpus``, ``max_docs`` in all (the whole corpus when it is smaller).

    The guard encodes this corpus at every evaluation, so its size is the guard's cost (SciFact's 5,183
    documents: about a minute per evaluation on 2 cores in bf16). The sample depends on the seed only, never
    on a model's ranking, so no candidate the guard compares meets its own distractors more often than
    another: scores run higher than on the whole corpus (fewer distractors), equally for every candidate."""
    if len(corpus) <= max_docs:
        return corpus
    kept = {d: corpus[d] for d in judged if d in corpus}
    rest = sorted(d for d in corpus if d not in kept)
    random.Random(seed).shuffle(rest)
    kept |= {d: corpus[d] for d in rest[: max(0, max_docs - len(kept))]}
    return kept


class ValidationRanking:
    """The held-out queries rank a corpus with the model; ``__call__`` returns the test's metrics (means)
    and ``"per_query"``: each query's nDCG@10.

    One query text (``text_key``) is one validation query, relevant to every positive of every row that
    carries it. The documents ranked never depend on a model's ranking (see the module): with ``corpus``
    (document id -> text), the whole corpus, or past ``max_docs`` documents the queries' positives and a
    seeded uniform sample of the rest (``sample_corpus``); without it, the positives of every row of
    ``examples`` and of ``other_examples`` (the training rows: documents the qrels chose, each a real
    passage of the collection). The rows' mined negatives are never added: the start mined them. Encoding
    goes through ``clpft.mining.encode_texts`` (token-budget batches, the command's precision), search
    through ``exact_search`` and the metrics through pytrec_eval, as in ``clpft eval``."""

    def __init__(
        self,
        examples: list[TrainExample],
        corpus: dict[str, str] | None = None,
        *,
        other_examples: list[TrainExample] = (),
        query_max_tokens: int | None = None,
        passage_max_tokens: int | None = None,
        max_docs: int = VAL_CORPUS_DOCS,
        seed: int = 0,
        batch_size: int = 64,
    ) -> None:
        self.queries: dict[str, str] = {}
        self.qrels: dict[str, dict[str, int]] = {}
        id_of_text: dict[str, str] = {}
        judged: dict[str, str] = {}
        for i, e in enumerate(examples):
            query_id = id_of_text.setdefault(text_key(e.query), e.query_id or f"q{i}")
            self.queries.setdefault(query_id, e.query)
            if corpus is not None and (not e.pos_ids or any(d not in corpus for d in e.pos_ids)):
                raise ClpftError(
                    f"validation on the whole corpus: query {query_id!r} has positives that are not in it "
                    "(the training set needs pos_ids from this corpus)"
                )
            for k, text in enumerate(e.pos):
                doc = _doc_id(e.pos_ids, k, text)
                judged[doc] = text
                self.qrels.setdefault(query_id, {})[doc] = 1
        if corpus is None:
            pool = dict(judged)
            for e in other_examples:
                for k, text in enumerate(e.pos):
                    pool.setdefault(_doc_id(e.pos_ids, k, text), text)
            self.corpus = pool
        else:
            self.corpus = sample_corpus(corpus, judged, max_docs, seed)
        self.query_max_tokens, self.passage_max_tokens, self.batch_size = (
            query_max_tokens,
            passage_max_tokens,
            batch_size,
        )

    def __call__(self, model: Any) -> dict[str, Any]:
        from clpft.mining.encode import encode_texts

        was_training = model.training
        model.eval()
        try:
            docs = encode_texts(model, list(self.corpus.values()), "document", self.passage_max_tokens, self.batch_size)
            queries = encode_texts(model, list(self.queries.values()), "query", self.query_max_tokens, self.batch_size)
        finally:
            model.train(was_training)
        return self.score(queries, docs)

    def score(self, query_embeddings: np.ndarray, doc_embeddings: np.ndarray) -> dict[str, Any]:
        """The metrics of embeddings in ``self.queries`` and ``self.corpus`` order (what ``__call__`` encodes)."""
        from clpft.evaluation.metrics import compute_metrics
        from clpft.mining.search import exact_search

        doc_ids, query_ids = list(self.corpus), list(self.queries)
        scores, rows = exact_search(query_embeddings, doc_embeddings, 100)
        run = {q: {doc_ids[j]: float(s) for s, j in zip(scores[i], rows[i])} for i, q in enumerate(query_ids)}
        mean, per_query = compute_metrics(self.qrels, run)
        return {
            **{name: round(value, 6) for name, value in mean.items()},
            "per_query": {q: values["ndcg@10"] for q, values in per_query.items()},
        }


def _doc_id(given: list[str] | None, k: int, text: str) -> str:
    return given[k] if given and k < len(given) else "t:" + hashlib.sha1(text.encode()).hexdigest()[:16]
