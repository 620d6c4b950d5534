"""The training rows as sentence-transformers' trainer reads them: ``build_dataset`` lays the mined rows out
as columns, and ``CLPDataCollator`` tokenizes a batch of them (queries and passages with their own length
limits) together with the negatives' own queries, which CLPLoss reads through the index tensor it builds.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import torch
from sentence_transformers import SentenceTransformer

from clpft.data.texts import text_key
from clpft.data.trainset import TrainExample
from clpft.errors import ClpftError

logger = logging.getLogger(__name__)

OWN_QUERIES = "own_queries"  # the column with each negative's own queries, and the collator's feature name


def build_dataset(examples: list[TrainExample], num_negatives: int = 4):
    """A ``datasets.Dataset`` with one row per training query: columns query, positives (all of the
    query's positives; the collator draws one per row and epoch, as FlagEmbedding does, so a query
    counts once per epoch as in the paper), negative_1..negative_k and own_queries (one list of
    queries per negative).

    A negative whose text (``text_key``: case and spacing aside) is one of the row's own positives is left
    out (a file mined elsewhere from a collection with duplicated passages has them): training on it would
    push the query away from its answer. Rows need exactly k negatives (the loss stacks them); examples
    with fewer are skipped and counted, extra negatives beyond k are not used."""
    from datasets import Dataset

    columns: dict[str, list] = {"query": [], "positives": []}
    for j in range(num_negatives):
        columns[f"negative_{j + 1}"] = []
    columns[OWN_QUERIES] = []
    skipped = copies = 0
    for example in examples:
        positive_texts = {text_key(p) for p in example.pos}
        if any(text_key(n) in positive_texts for n in example.neg):
            kept = [j for j, n in enumerate(example.neg) if text_key(n) not in positive_texts]
            copies += len(example.neg) - len(kept)
            example = dataclasses.replace(
                example,
                neg=[example.neg[j] for j in kept],
                own_queries=[example.own_queries[j] if j < len(example.own_queries) else [] for j in kept],
            )
        if len(example.neg) < num_negatives:
            skipped += 1
            continue
        columns["query"].append(example.query)
        columns["positives"].append(list(example.pos))
        for j in range(num_negatives):
            columns[f"negative_{j + 1}"].append(example.neg[j])
        columns[OWN_QUERIES].append([list(qs) for qs in example.own_queries[:num_negatives]])
    if copies:
        logger.warning("left out %d negatives that are copies of their own row's positive", copies)
    if skipped:
        logger.warning("skipped %d training queries with fewer than %d negatives", skipped, num_negatives)
    if not columns["query"]:
        raise ClpftError(f"no training example has {num_negatives} negatives (lower --num-negatives)")
    return Dataset.from_dict(columns), skipped


@dataclass
class CLPDataCollator:
    """Tokenises a batch of rows from ``build_dataset`` for CLPLoss.

    The negatives' queries of the whole batch are de-duplicated and tokenised as one extra column;
    the label tensor (B, k, M) says which of those rows belong to each negative (-1 = none)."""

    preprocess_fn: Any
    query_max_tokens: int | None = None
    passage_max_tokens: int | None = None
    query_prompt: str | None = None
    passage_prompt: str | None = None
    with_own_queries: bool = True
    max_queries_per_negative: int = 8
    seed: int = 42
    valid_label_columns: list[str] = field(default_factory=list)  # read by the trainer

    epoch: int = 0  # set by EpochCallback, so a resumed run draws the same positives

    def choose_positive(self, query: str, positives: list[str]) -> str:
        """One positive per query and epoch, a pure function of (seed, epoch, query): reproducible
        and unchanged by a resume, unlike a running random generator."""
        if len(positives) == 1:
            return positives[0]
        return random.Random(f"{self.seed}:{self.epoch}:{query}").choice(positives)

    @classmethod
    def for_model(
        cls,
        model: SentenceTransformer,
        query_max_tokens: int | None = 128,
        passage_max_tokens: int | None = 512,
        with_own_queries: bool = True,
        max_queries_per_negative: int = 8,
        seed: int = 42,
    ) -> CLPDataCollator:
        limit = model.max_seq_length
        prompts = getattr(model, "prompts", None) or {}
        return cls(
            preprocess_fn=model.preprocess,
            query_max_tokens=min(query_max_tokens, limit) if limit and query_max_tokens else query_max_tokens or limit,
            passage_max_tokens=min(passage_max_tokens, limit)
            if limit and passage_max_tokens
            else passage_max_tokens or limit,
            query_prompt=prompts.get("query"),
            # the names sentence-transformers' encode_document looks for, in its order
            passage_prompt=prompts.get("document") or prompts.get("passage") or prompts.get("corpus"),
            with_own_queries=with_own_queries,
            max_queries_per_negative=max_queries_per_negative,
            seed=seed,
        )

    def _tokenize(self, batch: dict, column: str, texts: list[str], prompt: str | None, limit: int | None) -> None:
        kwargs = {"max_length": limit} if limit else {}
        for key, value in self.preprocess_fn(texts, prompt=prompt, **kwargs).items():
            batch[f"{column}_{key}"] = value

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        negative_columns = sorted(
            (c for c in features[0] if c.startswith("negative_")), key=lambda c: int(c.split("_")[1])
        )
        batch: dict[str, Any] = {}
        self._tokenize(batch, "query", [f["query"] for f in features], self.query_prompt, self.query_max_tokens)
        positives = [
            f["positive"] if "positive" in f else self.choose_positive(f["query"], f["positives"]) for f in features
        ]
        self._tokenize(batch, "positive", positives, self.passage_prompt, self.passage_max_tokens)
        for column in negative_columns:
            self._tokenize(batch, column, [f[column] for f in features], self.passage_prompt, self.passage_max_tokens)

        rows: dict[str, int] = {}
        slots: list[list[list[int]]] = []
        for f in features:
            per_negative = []
            for queries in (f.get(OWN_QUERIES) or [[] for _ in negative_columns])[: len(negative_columns)]:
                ids = []
                if self.with_own_queries:
                    for text in queries[: self.max_queries_per_negative]:
                        ids.append(rows.setdefault(text, len(rows)))
                per_negative.append(ids)
            slots.append(per_negative)
        width = max([1] + [len(ids) for per in slots for ids in per])
        labels = torch.full((len(features), len(negative_columns), width), -1, dtype=torch.long)
        for i, per in enumerate(slots):
            for j, ids in enumerate(per):
                labels[i, j, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        if rows:
            self._tokenize(batch, "own_queries", list(rows), self.query_prompt, self.query_max_tokens)
        batch["label"] = labels
        return batch
