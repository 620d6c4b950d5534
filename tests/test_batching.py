"""Batches above 1: every training row exactly once per epoch, no positive of one row among the
positives or negatives of another row of its batch, and the optimizer steps reported are the batches run."""

from __future__ import annotations

import math
import random

import pytest

from clpft.data import TrainExample, load_dataset
from clpft.data.batching import NoFalseNegativesBatchSampler
from clpft.mining import mine_negatives
from clpft.training import TrainConfig, train_model
from clpft.training.collator import CLPDataCollator, build_dataset
from conftest import write_beir


def colliding_examples(n: int = 60, pool: int = 24, seed: int = 0) -> list[TrainExample]:
    """Rows whose positives (one or two) and negatives are drawn from one small pool of passages, so that
    a row's positive is often another row's positive or negative; one query in ten appears twice."""
    rng = random.Random(seed)
    passages = [f"passage {i} about protein cell" for i in range(pool)]
    rows = []
    for i in range(n):
        chosen = rng.sample(passages, 4)
        query = f"query {i % (n - n // 10)}"
        rows.append(TrainExample(query, chosen[: 1 + i % 2], chosen[2:], [[], []]))
    return rows


def conflicts(batch: list[dict]) -> list[tuple[int, int]]:
    found = []
    for a, row in enumerate(batch):
        for b, other in enumerate(batch):
            if a == b:
                continue
            other_passages = set(other["positives"]) | {other[c] for c in other if c.startswith("negative_")}
            if set(row["positives"]) & other_passages or row["query"] == other["query"]:
                found.append((a, b))
    return found


def record_batches(monkeypatch) -> list[list[dict]]:
    """The rows of every batch the trainer asks the collator for."""
    seen: list[list[dict]] = []
    original = CLPDataCollator.__call__

    def recording(self, features):
        seen.append([dict(f) for f in features])
        return original(self, features)

    monkeypatch.setattr(CLPDataCollator, "__call__", recording)
    return seen


@pytest.mark.parametrize("batch_size", [2, 8, 32])
def test_sampler_yields_every_row_once_per_epoch_without_conflicts(batch_size):
    dataset, _ = build_dataset(colliding_examples(), num_negatives=2)
    sampler = NoFalseNegativesBatchSampler(dataset, batch_size, drop_last=False, seed=3)
    for epoch in range(4):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)  # the trainer takes len() batches every epoch
        assert sorted(i for batch in batches for i in batch) == list(range(len(dataset)))
        for batch in batches:
            assert 1 <= len(batch) <= batch_size
            assert conflicts([dataset[i] for i in batch]) == []
    again = NoFalseNegativesBatchSampler(dataset, batch_size, drop_last=False, seed=3)
    again.set_epoch(3)
    assert list(again) == batches  # a pure function of (seed, epoch): a resume sees the same batches


def test_training_batches_hold_no_false_negatives(tiny_model, monkeypatch):
    seen = record_batches(monkeypatch)
    rows = colliding_examples()
    config = TrainConfig(batch_size=8, grad_accum=1, epochs=2, num_negatives=2, learning_rate=1e-4, val_fraction=0.0)
    result = train_model(tiny_model, rows, config, show_progress=False)
    assert len(seen) == sum(result.batches_per_epoch) == result.optimizer_steps
    for batch in seen:
        assert conflicts(batch) == [], [row["query"] for row in batch]
    per_epoch = len(seen) // 2
    for epoch in range(2):
        queries = sorted(row["query"] for batch in seen[epoch * per_epoch : (epoch + 1) * per_epoch] for row in batch)
        assert queries == sorted(r.query for r in rows)


@pytest.fixture
def mined_with_empty_own_queries(tmp_path):
    """A mined training set of 100 queries where most negatives have no query of their own (as on
    SciFact: 543 of 809 rows carry [[], [], [], []])."""
    corpus = [{"_id": f"d{i}", "title": "", "text": f"document {i} on heat flow"} for i in range(3000)]
    queries = [{"_id": f"q{i}", "text": f"question {i} on heat"} for i in range(100)]
    qrels = [(f"q{i}", f"d{i}", 1) for i in range(100)] + [(f"q{i}", f"d{100 + i % 7}", 1) for i in range(0, 100, 9)]
    folder = write_beir(tmp_path / "many-empty", corpus, queries, {"train": qrels})
    examples, _ = mine_negatives(None, load_dataset(folder, "train"), num_negatives=4, strategy="random", seed=1)
    empty = sum(1 for e in examples if not any(e.own_queries))
    assert empty >= 80  # the condition that broke sentence-transformers' no-duplicates sampler
    return examples


@pytest.mark.parametrize("batch_size,grad_accum", [(1, 4), (8, 1), (8, 3), (32, 1)])
def test_every_mined_row_is_trained_on_once_per_epoch(
    tiny_model, mined_with_empty_own_queries, monkeypatch, batch_size, grad_accum
):
    seen = record_batches(monkeypatch)
    examples = mined_with_empty_own_queries
    config = TrainConfig(
        batch_size=batch_size, grad_accum=grad_accum, epochs=1, num_negatives=4, learning_rate=1e-4, val_fraction=0.0
    )
    result = train_model(tiny_model, examples, config, show_progress=False)
    received = sorted(row["query"] for batch in seen for row in batch)
    assert received == sorted(e.query for e in examples)  # each row exactly once
    assert result.rows_per_epoch == [len(examples)]
    assert result.batches_per_epoch == [len(seen)]
    # what training.json reports: the steps the trainer planned are the steps it ran on the batches it ran
    assert result.steps_per_epoch == math.ceil(len(seen) / grad_accum) == result.optimizer_steps
