"""BEIR loading and train.jsonl: good files load; bad ones fail with one line naming file and line."""

from __future__ import annotations

import json

import pytest

from clpft.data import TrainExample, available_splits, load_dataset, read_train_jsonl, write_train_jsonl
from clpft.errors import DataError
from conftest import SHARED_DATA


def test_loads_tiny_dataset(tiny_beir):
    train = load_dataset(tiny_beir, "train")
    assert len(train.corpus) == 12 and len(train.queries) == 8
    assert set(train.qrels) == {"q1", "q2", "q3", "q4", "q5", "q6"}
    assert train.relevant("q2") == {"d1", "d2"}
    assert train.corpus["d1"].full_text == "protein cell the study of protein cell in patients"
    test = load_dataset(tiny_beir, "test")
    assert test.relevant("q8") == {"d8"}  # grade 0 is judged, not relevant
    assert available_splits(tiny_beir) == ["test", "train"]


@pytest.mark.parametrize(
    "line,problem",
    [
        ('{"_id": "d13", "title": "x"', "malformed JSON"),
        ('{"title": "x", "text": "y"}', "missing field '_id'"),
        ('{"_id": "d1", "title": "x", "text": "y"}', "duplicate document id 'd1'"),
        ('["not", "an", "object"]', "expected a JSON object"),
        ('{"_id": "d13", "title": "x", "text": 5.5}', "field 'text' must be a string"),
    ],
)
def test_corpus_errors_name_file_and_line(tiny_beir, line, problem):
    path = tiny_beir / "corpus.jsonl"
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(DataError) as error:
        load_dataset(tiny_beir, "train")
    assert str(error.value).startswith(f"{path}:13: ")
    assert problem in str(error.value)
    assert "\n" not in str(error.value)


def test_query_errors(tiny_beir):
    path = tiny_beir / "queries.jsonl"
    path.write_text(path.read_text() + '{"_id": "q9"}\n')
    with pytest.raises(DataError, match=r"queries.jsonl:9: missing field 'text'"):
        load_dataset(tiny_beir, "train")


def test_empty_entries_are_reported_and_skipped(tiny_beir, caplog):
    corpus = tiny_beir / "corpus.jsonl"
    corpus.write_text(corpus.read_text() + '{"_id": "d13", "title": "", "text": "  "}\n')
    queries = tiny_beir / "queries.jsonl"
    queries.write_text(queries.read_text() + '{"_id": "q9", "text": ""}\n')
    dataset = load_dataset(tiny_beir, "train")
    assert "d13" not in dataset.corpus and "q9" not in dataset.queries
    assert f"{corpus}:13: document 'd13' (title and text) is empty; skipped" in caplog.text
    assert f"{queries}:9: query 'q9' is empty; skipped" in caplog.text


def test_non_utf8_bom_and_crlf(tiny_beir):
    path = tiny_beir / "queries.jsonl"
    text = path.read_text()
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert len(load_dataset(tiny_beir, "train").queries) == 8  # BOM and CRLF are fine
    path.write_bytes(text.encode() + b'{"_id": "q9", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"queries.jsonl:9: not valid UTF-8"):
        load_dataset(tiny_beir, "train")


def test_unknown_qrels_are_counted_and_dropped(tiny_beir, caplog):
    path = tiny_beir / "qrels" / "train.tsv"
    path.write_text(path.read_text() + "q99\td1\t1\nq1\td99\t1\n")
    dataset = load_dataset(tiny_beir, "train")
    assert dataset.dropped_qrels == 2
    assert "dropped 2 of 10 qrels rows (1 name unknown queries, 1 unknown documents)" in caplog.text
    assert "q99" not in dataset.qrels and "d99" not in dataset.qrels["q1"]


def test_bad_qrels_rows(tiny_beir):
    path = tiny_beir / "qrels" / "train.tsv"
    path.write_text(path.read_text() + "q1\td2\n")
    with pytest.raises(DataError, match=r"train.tsv:10: expected 3 tab-separated columns"):
        load_dataset(tiny_beir, "train")
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(DataError, match=r"train.tsv:2: score 'high' is not a whole number"):
        load_dataset(tiny_beir, "train")


def test_missing_split_and_folder(tiny_beir, tmp_path):
    with pytest.raises(DataError, match=r"split 'dev' does not exist \(available: test, train\)"):
        load_dataset(tiny_beir, "dev")
    with pytest.raises(DataError, match="dataset folder not found"):
        load_dataset(tmp_path / "nope", "test")


def test_train_jsonl_round_trip(tmp_path):
    examples = [
        TrainExample("q one", ["p1"], ["n1", "n2"], [["other q"], []], "1", ["d1"], ["d5", "d6"], ["qrels", "none"]),
        TrainExample("q two", ["p2", "p3"], [], [], "2", ["d2", "d3"], [], []),
    ]
    path = tmp_path / "train.jsonl"
    write_train_jsonl(path, examples)
    assert read_train_jsonl(path) == examples
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"query", "pos", "neg", "neg_q", "query_id", "pos_ids", "neg_ids", "neg_q_source"}


def test_paper_format_loads(tmp_path):
    path = tmp_path / "paper.jsonl"
    path.write_text(json.dumps({"query": "q", "pos": ["p"], "neg": ["n1", "n2"], "neg_q": ["query of n1", ""]}) + "\n")
    (example,) = read_train_jsonl(path)
    assert example.own_queries == [["query of n1"], []]
    path.write_text(json.dumps({"query": "q", "pos": ["p"], "neg": ["n1"]}) + "\n")  # FlagEmbedding, no own_queries
    assert read_train_jsonl(path)[0].own_queries == [[]]


@pytest.mark.parametrize(
    "obj,problem",
    [
        ({"pos": ["p"]}, "field 'query' must be a non-empty string"),
        ({"query": "q", "pos": []}, "at least one non-empty passage"),
        ({"query": "q", "pos": ["p"], "neg": ["n"], "neg_q": [["a"], ["b"]]}, "'neg_q' has 2 entries but 'neg' has 1"),
        ({"query": "q", "pos": ["p"], "neg": [1]}, "field 'neg' must be a list of strings"),
    ],
)
def test_train_jsonl_errors(tmp_path, obj, problem):
    path = tmp_path / "train.jsonl"
    good = json.dumps({"query": "q", "pos": ["p"]})
    path.write_text(good + "\n" + json.dumps(obj) + "\n")
    with pytest.raises(DataError) as error:
        read_train_jsonl(path)
    assert str(error.value).startswith(f"{path}:2: ") and problem in str(error.value)


@pytest.mark.skipif(not (SHARED_DATA / "scifact").exists(), reason="shared datasets not present")
@pytest.mark.parametrize(
    "name,split,queries", [("scifact", "test", 300), ("cranfield", "train", 140), ("xquad-hi", "test", 330)]
)
def test_shared_datasets_load(name, split, queries):
    dataset = load_dataset(SHARED_DATA / name, split)
    assert len(dataset.qrels) == queries and dataset.dropped_qrels == 0
