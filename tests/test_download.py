"""`beir:NAME` and `miracl:LANG` from local fixtures in the official formats (never the network)."""

from __future__ import annotations

import gzip
import json
import shutil
import zipfile

import pytest

from clpft.data import load_dataset
from clpft.errors import ClpftError


@pytest.fixture
def sources(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    # BEIR: NAME.zip holding NAME/{corpus.jsonl, queries.jsonl, qrels/test.tsv}
    (root / "beir").mkdir(parents=True)
    with zipfile.ZipFile(root / "beir" / "tiny.zip", "w") as z:
        z.writestr("tiny/corpus.jsonl", json.dumps({"_id": "d1", "title": "T", "text": "x y", "metadata": {}}) + "\n")
        z.writestr("tiny/queries.jsonl", json.dumps({"_id": "q1", "text": "what x", "metadata": {}}) + "\n")
        z.writestr("tiny/qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    # MIRACL: topics and TREC qrels per split, corpus in gzipped JSONL shards
    version = "miracl-v1.0-xx"
    base = root / "miracl" / "miracl" / "resolve" / "main" / version
    (base / "topics").mkdir(parents=True)
    (base / "qrels").mkdir()
    for split, qid, doc in (("train", "1", "10#0"), ("dev", "2", "11#1")):
        (base / "topics" / f"topics.{version}-{split}.tsv").write_text(f"{qid}\tquestion {qid}\n")
        (base / "qrels" / f"qrels.{version}-{split}.tsv").write_text(f"{qid}\tQ0\t{doc}\t1\n{qid}\tQ0\t10#1\t0\n")
    corpus = root / "miracl" / "miracl-corpus" / "resolve" / "main" / "miracl-corpus-v1.0-xx"
    corpus.mkdir(parents=True)
    for shard, docs in enumerate([["10#0", "10#1"], ["11#1"]]):
        with gzip.open(corpus / f"docs-{shard}.jsonl.gz", "wt", encoding="utf-8") as handle:
            for doc in docs:
                handle.write(json.dumps({"docid": doc, "title": f"title {doc}", "text": f"text of {doc}"}) + "\n")
    monkeypatch.setenv("CLPFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CLPFT_BEIR_URL", (root / "beir").as_uri())
    monkeypatch.setenv("CLPFT_MIRACL_URL", (root / "miracl").as_uri())
    return root


def test_beir_download_is_converted_and_cached(sources, tmp_path):
    dataset = load_dataset("beir:tiny", "test")
    assert dataset.relevant("q1") == {"d1"} and dataset.path == tmp_path / "cache" / "datasets" / "beir" / "tiny"
    shutil.rmtree(sources / "beir")  # the second time the cache answers
    assert load_dataset("beir:tiny", "test").relevant("q1") == {"d1"}


def test_miracl_download_maps_dev_to_test(sources):
    test = load_dataset("miracl:xx", "test")
    assert test.relevant("2") == {"11#1"} and test.queries["2"] == "question 2"
    assert len(test.corpus) == 3 and test.corpus["10#0"].title == "title 10#0"
    train = load_dataset("miracl:xx", "train")
    assert train.relevant("1") == {"10#0"} and train.qrels["1"]["10#1"] == 0


def test_unknown_public_dataset(sources):
    with pytest.raises(ClpftError, match="BEIR has no dataset 'nope'"):
        load_dataset("beir:nope", "test")
    with pytest.raises(ClpftError, match="MIRACL has no language 'zz'"):
        load_dataset("miracl:zz", "test")
