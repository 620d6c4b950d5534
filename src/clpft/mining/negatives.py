"""Mine negatives for each training query, and attach each negative's own queries from the qrels.

ANCE-style (the paper's data selection): encode the corpus and the queries with the model about to
be tuned, rank the corpus for each query, and take the top-ranked documents that are not labelled
relevant. ``strategy="random"`` draws unlabelled documents uniformly instead (the weak baseline).
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
from sentence_transformers import SentenceTransformer

from clpft.data.beir import Dataset
from clpft.data.texts import text_key
from clpft.data.trainset import TrainExample
from clpft.errors import ClpftError
from clpft.faults import kill_point
from clpft.mining.encode import encode_texts
from clpft.mining.search import exact_search
from clpft.ownqueries.chain import QuerySources, fill_own_queries

logger = logging.getLogger(__name__)


@dataclass
class MiningStats:
    strategy: str
    queries: int
    negatives: int
    negatives_with_queries: int
    queries_with_fewer_negatives: int
    dropped_by_score_ratio: int
    seconds: float
    neg_query_sources: dict[str, int] = field(default_factory=dict)
    generation: list[str] = field(default_factory=list)
    # candidates skipped because their text (case and spacing aside) is one of the query's positives': a
    # collection's duplicated passage would otherwise train the query away from its own answer
    copies_of_positives_skipped: int = 0
    # training queries judged only with grade 0: nothing to train towards, so not used (counted, not dropped silently)
    queries_without_relevant: int = 0

    @property
    def share_with_queries(self) -> float:
        return self.negatives_with_queries / self.negatives if self.negatives else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "share_with_queries": round(self.share_with_queries, 4)}

    def summary(self) -> str:
        return (
            f"mined {self.negatives} {self.strategy} negatives for {self.queries} queries; "
            f"{self.negatives_with_queries} ({100 * self.share_with_queries:.1f}%) have at least one query of their own"
            + (
                f"; {self.queries_with_fewer_negatives} queries got fewer negatives than asked"
                if self.queries_with_fewer_negatives
                else ""
            )
            + (
                f"; {self.dropped_by_score_ratio} candidates dropped by --max-score-ratio"
                if self.dropped_by_score_ratio
                else ""
            )
            + (
                f"; {self.queries_without_relevant} training queries without a relevant document (only grade 0) "
                "not used"
                if self.queries_without_relevant
                else ""
            )
            + (
                f"; {self.copies_of_positives_skipped} candidates skipped as copies of a positive"
                if self.copies_of_positives_skipped
                else ""
            )
            + (
                f"; queries by source (negatives): {self.neg_query_sources}"
                if set(self.neg_query_sources) - {"qrels", "none"}
                else ""
            )
        )


def sample_queries(dataset: Dataset, max_queries: int | None, seed: int) -> list[str]:
    """The split's judged query ids with at least one relevant document, a seeded sample if capped."""
    ids = sorted(qid for qid in dataset.qrels if dataset.relevant(qid))
    if max_queries is not None and max_queries < len(ids):
        ids = sorted(random.Random(seed).sample(ids, max_queries))
    return ids


def queries_of_documents(dataset: Dataset) -> dict[str, list[str]]:
    """doc id -> the ids of the split's queries that it is relevant to (from the qrels)."""
    relevant_to: dict[str, list[str]] = defaultdict(list)
    for query_id in sorted(dataset.qrels):
        for doc_id in sorted(dataset.relevant(query_id)):
            relevant_to[doc_id].append(query_id)
    return relevant_to


def mine_negatives(
    model: SentenceTransformer | None,
    dataset: Dataset,
    num_negatives: int = 4,
    rank_from: int = 0,
    rank_to: int = 50,
    max_score_ratio: float | None = None,
    strategy: str = "ance",
    max_train_queries: int | None = None,
    seed: int = 42,
    query_max_tokens: int = 128,
    passage_max_tokens: int = 512,
    batch_size: int = 64,
    show_progress: bool = False,
    corpus_embeddings: np.ndarray | None = None,
    query_sources: QuerySources | None = None,
) -> tuple[list[TrainExample], MiningStats]:
    """Build one TrainExample per training query of ``dataset`` (which must be the *training* split:
    negatives' queries come from its qrels, so test queries never leak into training).

    ``corpus_embeddings`` (in ``dataset.corpus`` order) skips re-encoding a corpus already encoded
    with the same model. ``query_sources`` says where negatives' queries come from (default: the
    qrels only); generated ones are added after mining."""
    settings = query_sources or QuerySources()
    if strategy not in ("ance", "random"):
        raise ClpftError(f"unknown mining strategy {strategy!r} (use ance or random)")
    if num_negatives < 1:
        raise ClpftError("--num-negatives must be at least 1")
    if not 0 <= rank_from < rank_to:
        raise ClpftError(f"need 0 <= --rank-from < --rank-to, got {rank_from}..{rank_to}")
    if max_score_ratio is not None and max_score_ratio <= 0:
        raise ClpftError("--max-score-ratio must be positive")
    started = time.perf_counter()
    query_ids = sample_queries(dataset, max_train_queries, seed)
    if not query_ids:
        raise ClpftError(f"{dataset.path}: split {dataset.split!r} has no query with a relevant document")
    doc_ids = list(dataset.corpus)
    doc_index = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    relevant_to = queries_of_documents(dataset)
    rng = random.Random(seed)
    dropped = short = copies = 0
    passage_keys = {d: text_key(doc.full_text) for d, doc in dataset.corpus.items()}
    passages_per_key = Counter(passage_keys.values())

    if strategy == "ance":
        if model is None:
            raise ClpftError("ANCE mining needs a model")
        corpus_emb = corpus_embeddings
        if corpus_emb is None:
            corpus_emb = encode_texts(
                model,
                [dataset.corpus[d].full_text for d in doc_ids],
                "document",
                passage_max_tokens,
                batch_size,
                show_progress,
            )
        query_emb = encode_texts(
            model, [dataset.queries[q] for q in query_ids], "query", query_max_tokens, batch_size, show_progress
        )
        scores, ranked = exact_search(query_emb, corpus_emb, rank_to)
        kill_point("mine.searched")

    examples = []
    for row, query_id in enumerate(query_ids):
        relevant = dataset.relevant(query_id)
        positives = sorted(relevant, key=lambda d: (-dataset.qrels[query_id][d], d))
        positive_texts = {passage_keys[d] for d in positives}
        if strategy == "ance":
            limit = None
            if max_score_ratio is not None:
                pos_scores = corpus_emb[[doc_index[d] for d in positives]] @ query_emb[row]
                limit = max_score_ratio * float(pos_scores.max())
            negatives = []
            for rank in range(rank_from, ranked.shape[1]):
                doc_id = doc_ids[ranked[row, rank]]
                if doc_id in relevant:
                    continue
                if passage_keys[doc_id] in positive_texts:
                    copies += 1
                    continue
                if limit is not None and scores[row, rank] > limit:
                    dropped += 1
                    continue
                negatives.append(doc_id)
                if len(negatives) == num_negatives:
                    break
        else:
            copies_here = sum(passages_per_key[key] for key in positive_texts) - len(relevant)
            copies += copies_here
            wanted = min(num_negatives, len(doc_ids) - len(relevant) - copies_here)
            chosen: list[str] = []
            while len(chosen) < wanted:
                doc_id = doc_ids[rng.randrange(len(doc_ids))]
                if doc_id not in relevant and doc_id not in chosen and passage_keys[doc_id] not in positive_texts:
                    chosen.append(doc_id)
            negatives = chosen
        short += len(negatives) < num_negatives
        own = relevant_to if "qrels" in settings.backends else {}
        own_queries = [[dataset.queries[q] for q in own.get(d, []) if q != query_id] for d in negatives]
        examples.append(
            TrainExample(
                query=dataset.queries[query_id],
                pos=[dataset.corpus[d].full_text for d in positives],
                neg=[dataset.corpus[d].full_text for d in negatives],
                own_queries=own_queries,
                query_id=query_id,
                pos_ids=positives,
                neg_ids=negatives,
                own_query_sources=["qrels" if qs else "none" for qs in own_queries],
            )
        )
    summaries = fill_own_queries(examples, dataset, settings)
    total = sum(len(e.neg) for e in examples)
    with_queries = sum(1 for e in examples for qs in e.own_queries if qs)
    sources = Counter(part for e in examples for source in (e.own_query_sources or []) for part in source.split("+"))
    stats = MiningStats(
        strategy,
        len(examples),
        total,
        with_queries,
        short,
        dropped,
        round(time.perf_counter() - started, 2),
        dict(sorted(sources.items())),
        [s.line() for s in summaries],
        copies_of_positives_skipped=copies,
        queries_without_relevant=sum(1 for query_id in dataset.qrels if not dataset.relevant(query_id)),
    )
    # debug, not info: `clpft mine` and `clpft run` print this line themselves (it is a result, shown under --quiet)
    logger.debug(stats.summary())
    return examples, stats
