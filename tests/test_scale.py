"""benchmarks/scale.py: the padded corpus keeps the real passages and copies their word-count distribution;
the projection's line fit."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_benchmark


def load():
    return load_benchmark("scale")


def write_source(folder: Path) -> None:
    folder.mkdir()
    docs = [{"_id": f"d{i}", "title": "t " * (i % 3 + 1), "text": "alpha beta gamma " * (i + 1)} for i in range(5)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "alpha"}) + "\n")
    (folder / "qrels").mkdir()
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\n")


def test_padded_corpus_keeps_real_passages_and_their_lengths(tmp_path):
    scale = load()
    write_source(tmp_path / "src")
    folder = scale.build_dataset(tmp_path / "src", 40, tmp_path / "big")
    rows = [json.loads(line) for line in (folder / "corpus.jsonl").open()]
    assert len(rows) == 40 and len({r["_id"] for r in rows}) == 40
    assert [r["_id"] for r in rows[:5]] == [f"d{i}" for i in range(5)]
    real_lengths = {len(r["text"].split()) for r in rows[:5]}
    assert {len(r["text"].split()) for r in rows[5:]} <= real_lengths  # each copies a real passage's shape
    assert {w for r in rows[5:] for w in r["text"].split()} <= {"alpha", "beta", "gamma", "t"}
    assert (folder / "qrels" / "train.tsv").read_text() == (tmp_path / "src" / "qrels" / "train.tsv").read_text()
    assert not (folder / "corpus.jsonl.tmp").exists()


def test_line_fit():
    scale = load()
    intercept, slope = scale.fit([(1000, 30.0), (2000, 50.0), (3000, 70.0)])
    assert abs(intercept - 10.0) < 1e-9 and abs(slope - 0.02) < 1e-12
    assert scale.fit([(100, 5.0)]) == (0.0, 0.05)
