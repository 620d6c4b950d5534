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

Under DDP (``world_size`` W > 1) the loss scores every process's queries against the candidates of all
processes, so the rows that must be free of conflicts are a *step's* rows: W batches. accelerate deals the
sampler's batches out in turn (batch i to process i mod W), so the sampler packs global batches of up to
W x B rows and yields each as W consecutive batches, a round. accelerate yields a round in its loop only when
the round's last batch holds B rows (it keeps a shorter one for the very end, and a process's batch kept
past another round is lost), so every round but the last has B rows in its last batch and at least one in
every other (``_close_rounds``, ``_deal``). Every row is yielded once per epoch and every process runs the
same number of steps; the batches of a round that is not full differ in size, which the loss allows for
(clpft.losses.CLPLoss).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import deque
from collections.abc import Iterator

from sentence_transformers.base.sampler import DefaultBatchSampler

from clpft.data.texts import text_key
from clpft.errors import ClpftError

logger = logging.getLogger(__name__)

RESHUFFLES_PER_EPOCH = 8  # tries to pack an epoch into exactly epoch 0's number of batches


def _text_key(text: str) -> int:
    # Texts compare as clpft.data.texts.text_key does (case and spacing aside: a collection's copies of a
    # passage are one passage). A stable 64-bit digest, not hash(): every DDP process must pack the same
    # batches, and Python salts str hashes per process. A collision would only defer a row, never lose one.
    return int.from_bytes(hashlib.blake2b(text_key(text).encode("utf-8"), digest_size=8).digest(), "little")


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _even(rows: list[int], parts: int) -> list[list[int]]:
    """``rows`` in ``parts`` consecutive runs whose sizes differ by at most one."""
    size, extra = divmod(len(rows), parts)
    bounds = [0]
    for part in range(parts):
        bounds.append(bounds[-1] + size + (part < extra))
    return [rows[bounds[k] : bounds[k + 1]] for k in range(parts)]


class _Texts:
    """The query, positive and passage keys of a set of rows: whether another row fits beside them."""

    def __init__(self) -> None:
        self.queries: set[int] = set()
        self.positives: set[int] = set()
        self.passages: set[int] = set()

    @classmethod
    def of(cls, sampler: NoFalseNegativesBatchSampler, rows: list[int]) -> _Texts:
        texts = cls()
        for row in rows:
            texts.add(sampler, row)
        return texts

    def fits(self, sampler: NoFalseNegativesBatchSampler, row: int) -> bool:
        return (
            sampler.queries[row] not in self.queries
            and sampler.positives[row].isdisjoint(self.passages)
            and sampler.passages[row].isdisjoint(self.positives)
        )

    def add(self, sampler: NoFalseNegativesBatchSampler, row: int) -> None:
        self.queries.add(sampler.queries[row])
        self.positives |= sampler.positives[row]
        self.passages |= sampler.passages[row]


class NoFalseNegativesBatchSampler(DefaultBatchSampler):
    """A batch sampler (pass the class as ``SentenceTransformerTrainingArguments(batch_sampler=...)``)
    over a dataset with a ``query`` column, a ``positives`` (list) or ``positive`` column and
    ``negative_1..k`` columns, as ``clpft.training.collator.build_dataset`` writes it."""

    def __init__(
        self,
        dataset,
        batch_size: int,
        drop_last: bool,
        valid_label_columns=None,
        generator=None,
        seed: int = 0,
        world_size: int | None = None,
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
        # the processes that train together (None: torch.distributed's, 1 without it)
        self.world_size = world_size or _world_size()
        if self.world_size > 1:
            # sentence-transformers turns drop_last on under DDP, against uneven last batches that would hang
            # a process; this sampler's rounds give every process a batch and the loss allows uneven ones, so
            # nothing is dropped (accelerate reads this attribute too: with it, the last round is not dealt)
            self.drop_last = False
        self._epoch_zero = self._pack(self._order(0, 0))

    def _order(self, epoch: int, attempt: int) -> list[int]:
        order = list(range(len(self.queries)))
        random.Random(f"{self.seed}:{epoch}:{attempt}").shuffle(order)
        return order

    def _pack(self, order: list[int]) -> list[list[int]]:
        """Greedy packing: each (global) batch takes the earliest rows (deferred ones first) that conflict
        with nothing already in it; under DDP each global batch is then dealt out as W batches."""
        capacity = self.batch_size * self.world_size
        pending = deque(order)
        batches = []
        while pending:
            batch: list[int] = []
            seen = _Texts()
            deferred = []
            while pending and len(batch) < capacity:
                row = pending.popleft()
                if not seen.fits(self, row):
                    deferred.append(row)
                    continue
                batch.append(row)
                seen.add(self, row)
            pending.extendleft(reversed(deferred))  # O(deferred), keeping their order at the front
            batches.append(batch)
        if self.drop_last:
            batches = [b for b in batches if len(b) == capacity]
        if self.world_size == 1:
            return batches
        rounds = self._close_rounds(batches)
        return [part for i, rows in enumerate(rounds) for part in self._deal(rows, last=i == len(rounds) - 1)]

    def _close_rounds(self, batches: list[list[int]]) -> list[list[int]]:
        """Global batches that accelerate deals out whole (see the module): each but the last holds at least
        B + W - 1 rows (B for the round's last batch, one for each other process), the last at least W. The
        rows of global batches too small for that go where they fit: into the last one, into a global batch
        with room, or in place of a row of another global batch that fits the last one; a row that fits
        nowhere (a degenerate set where most rows share a positive) joins the last one all the same, is
        counted in ``unplaced`` and named in a warning."""
        capacity, least = self.batch_size * self.world_size, self.batch_size + self.world_size - 1
        rounds = [list(b) for b in batches if len(b) >= least]
        small_rows = [row for b in batches if len(b) < least for row in b]
        last: list[int] = []
        self.unplaced = 0
        for row in small_rows:
            last_texts = _Texts.of(self, last)
            if last_texts.fits(self, row):
                last.append(row)
                continue
            roomy = [b for b in rounds if len(b) < capacity and _Texts.of(self, b).fits(self, row)]
            if roomy:
                roomy[0].append(row)
            elif not self._swap_into(row, rounds, last, last_texts):
                last.append(row)
                self.unplaced += 1
        if not last and rounds:
            last = rounds.pop()
        # the last round needs a row per process: take them from the round before while it keeps enough
        while last and len(last) < self.world_size and rounds and len(rounds[-1]) > least:
            movable = [r for r in rounds[-1] if _Texts.of(self, last).fits(self, r)]
            if not movable:
                break
            rounds[-1].remove(movable[0])
            last.append(movable[0])
        if self.unplaced:
            logger.warning(
                "%d training rows share a step with a row whose positive they hold: under %d processes no "
                "step without a conflict was left for them (most rows share a positive; lower --batch-size)",
                self.unplaced,
                self.world_size,
            )
        if last and len(last) < self.world_size:
            raise ClpftError(
                f"{len(self.queries)} training rows cannot give each of {self.world_size} processes a row in "
                "the last step: use fewer processes"
            )
        return rounds + ([last] if last else [])

    def _swap_into(self, row: int, rounds: list[list[int]], last: list[int], last_texts: _Texts) -> bool:
        """Put ``row`` in a round in place of one of its rows that fits the last round (which takes it);
        ``last_texts``: the last round's texts, built once for all candidates."""
        for batch in rounds:
            for position, other in enumerate(batch):
                if not last_texts.fits(self, other):
                    continue
                rest = batch[:position] + batch[position + 1 :]
                if _Texts.of(self, rest).fits(self, row):
                    batch[position] = row
                    last.append(other)
                    return True
        return False

    def _deal(self, rows: list[int], last: bool) -> list[list[int]]:
        """One global batch as W consecutive batches. Before the last round, B rows in the round's last batch
        (accelerate yields a round in its loop only when that one is full) and the rest evenly over the others
        (B each in a full round); the last round evenly."""
        if last:
            return _even(rows, self.world_size)
        return _even(rows[: -self.batch_size], self.world_size - 1) + [rows[-self.batch_size :]]

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
