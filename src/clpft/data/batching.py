"""Batches without false negatives, every training row exactly once per epoch.

With a batch above 1, every positive and negative of a batch is a candidate for every query of it
(in-batch negatives). A row whose positive is another row's positive or hard negative would then be
pushed away from a passage that answers it: a false negative. sentence-transformers'
``NoDuplicatesBatchSampler`` guards against this by comparing whole column values as strings, which
fails for clpft's rows twice over: ``positives`` is a list column (one string for all of a query's
positives, so a shared positive goes unseen), and the negatives' own queries are a column too (every
row whose negatives have no own query carries the same ``[[], [], [], []]``, so those rows are
"duplicates" of each other and are deferred until the trainer stops the epoch without them).

``NoFalseNegativesBatchSampler`` compares the texts that matter, one by one:

    row r conflicts with row s  <=>  query(r) == query(s)
                                     or  positives(r) ∩ (positives(s) ∪ negatives(s)) ≠ ∅
                                     or  positives(s) ∩ (positives(r) ∪ negatives(r)) ≠ ∅

and fills each batch greedily from a seeded shuffle, deferring a conflicting row to the next batch
instead of dropping it, so every row is yielded exactly once per epoch. A shared *negative* is not a
conflict: it is a true negative for both rows.

The trainer reads ``len()`` once and then takes that many batches every epoch, so the number of
batches must not change between epochs. Each epoch reshuffles (seed + epoch); if a reshuffle packs into
a different number of batches than epoch 0, further reshuffles are tried, and as a last resort epoch
0's batches are reused in a new order.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Iterator

from sentence_transformers.base.sampler import DefaultBatchSampler

RESHUFFLES_PER_EPOCH = 8  # tries to pack an epoch into exactly epoch 0's number of batches


def _text_key(text: str) -> int:
    # A stable 64-bit digest, not hash(): every DDP process must pack the same batches, and Python
    # salts str hashes per process. A collision would only defer a row, never lose one.
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class NoFalseNegativesBatchSampler(DefaultBatchSampler):
    """A batch sampler (pass the class as ``SentenceTransformerTrainingArguments(batch_sampler=...)``)
    over a dataset with a ``query`` column, a ``positives`` (list) or ``positive`` column and
    ``negative_1..k`` columns, as ``clpft.collator.build_dataset`` writes it."""

    def __init__(
        self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None, seed: int = 0
    ):
        super().__init__(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
        )
        columns = dataset.column_names
        negative_columns = [c for c in columns if c.startswith("negative")]
        positives = dataset["positives"] if "positives" in columns else [[p] for p in dataset["positive"]]
        negatives = [dataset[c] for c in negative_columns]
        self.queries = [_text_key(q) for q in dataset["query"]]
        self.positives = [frozenset(_text_key(p) for p in row) for row in positives]
        self.passages = [
            self.positives[i] | {_text_key(column[i]) for column in negatives} for i in range(len(self.queries))
        ]
        self._epoch_zero = self._pack(self._order(0, 0))

    def _order(self, epoch: int, attempt: int) -> list[int]:
        order = list(range(len(self.queries)))
        random.Random(f"{self.seed}:{epoch}:{attempt}").shuffle(order)
        return order

    def _pack(self, order: list[int]) -> list[list[int]]:
        """Greedy packing: each batch takes the earliest rows (deferred ones first) that conflict with
        nothing already in it."""
        pending = deque(order)
        batches = []
        while pending:
            batch: list[int] = []
            batch_queries: set[int] = set()
            batch_positives: set[int] = set()
            batch_passages: set[int] = set()
            deferred = []
            while pending and len(batch) < self.batch_size:
                row = pending.popleft()
                if (
                    self.queries[row] in batch_queries
                    or not self.positives[row].isdisjoint(batch_passages)
                    or not self.passages[row].isdisjoint(batch_positives)
                ):
                    deferred.append(row)
                    continue
                batch.append(row)
                batch_queries.add(self.queries[row])
                batch_positives |= self.positives[row]
                batch_passages |= self.passages[row]
            pending.extendleft(reversed(deferred))  # O(deferred), keeping their order at the front
            batches.append(batch)
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        return batches

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches: a fresh packing with epoch 0's count, or epoch 0's batches reordered."""
        if epoch == 0:
            return self._epoch_zero
        for attempt in range(RESHUFFLES_PER_EPOCH):
            packed = self._pack(self._order(epoch, attempt))
            if len(packed) == len(self._epoch_zero):
                return packed
        reordered = list(self._epoch_zero)
        random.Random(f"{self.seed}:{epoch}:reorder").shuffle(reordered)
        return reordered

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.epoch)

    def __len__(self) -> int:
        return len(self._epoch_zero)
