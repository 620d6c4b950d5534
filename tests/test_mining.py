"""Search and negative mining: exact top-k (faiss = torch = brute force), ANCE picks the top-ranked
unlabelled documents in the rank window, negatives' queries come from training qrels only."""

from __future__ import annotations

import numpy as np
import pytest

from clpft.data import load_dataset
from clpft.errors import ClpftError
from clpft.mining import encode_texts, exact_search, mine_negatives


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_exact_search_matches_brute_force(backend):
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((1000, 24)).astype(np.float32)
    queries = rng.standard_normal((37, 24)).astype(np.float32)
    scores, ids = exact_search(queries, corpus, 10, backend=backend, query_chunk=16, corpus_chunk=128)
    want = np.argsort(-(queries @ corpus.T), axis=1)[:, :10]
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ corpus.T, want, 1), rtol=1e-5)


def test_exact_search_k_larger_than_corpus():
    scores, ids = exact_search(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), 50, backend="torch")
    assert ids.shape == (3, 3) and list(ids[:, 0]) == [0, 1, 2]


def brute_force_negatives(model, dataset, query_id, rank_from, rank_to, k):
    doc_ids = list(dataset.corpus)
    docs = encode_texts(model, [dataset.corpus[d].full_text for d in doc_ids], "document", 64)
    query = encode_texts(model, [dataset.queries[query_id]], "query", 64)[0]
    ranked = [doc_ids[i] for i in np.argsort(-(docs @ query), kind="stable")][rank_from:rank_to]
    return [d for d in ranked if d not in dataset.relevant(query_id)][:k]


@pytest.mark.parametrize("rank_from,rank_to", [(0, 50), (2, 8)])
def test_ance_takes_top_ranked_unlabelled_documents(tiny_model, tiny_beir, rank_from, rank_to):
    dataset = load_dataset(tiny_beir, "train")
    examples, stats = mine_negatives(tiny_model, dataset, num_negatives=3, rank_from=rank_from, rank_to=rank_to)
    assert [e.query_id for e in examples] == ["q1", "q2", "q3", "q4", "q5", "q6"]
    for example in examples:
        assert not set(example.neg_ids) & dataset.relevant(example.query_id)
        assert example.neg_ids == brute_force_negatives(tiny_model, dataset, example.query_id, rank_from, rank_to, 3)
        assert example.pos_ids == sorted(dataset.relevant(example.query_id))
    assert stats.negatives == sum(len(e.neg) for e in examples)


def test_negatives_queries_come_from_training_qrels_only(tiny_model, tiny_beir):
    dataset = load_dataset(tiny_beir, "train")
    examples, stats = mine_negatives(None, dataset, num_negatives=11 - 2, strategy="random", seed=1)
    by_id = {e.query_id: e for e in examples}
    texts = dataset.queries
    for example in examples:
        for doc_id, own, source in zip(example.neg_ids, example.own_queries, example.own_query_sources):
            expected = [
                texts[q] for q in sorted(dataset.qrels) if doc_id in dataset.relevant(q) and q != example.query_id
            ]
            assert own == expected
            assert source == ("qrels" if own else "none")
    # d1 answers q1 and q2: as a negative of q3 it carries both as its own queries
    q3 = by_id["q3"]
    assert q3.own_queries[q3.neg_ids.index("d1")] == [texts["q1"], texts["q2"]]
    assert stats.negatives_with_queries == sum(1 for e in examples for own in e.own_queries if own)


@pytest.mark.parametrize("entry", ["mine", "run"])
def test_test_queries_never_reach_the_mined_file(tiny_model_dir, tiny_beir, tmp_path, entry):
    """Through `clpft mine` and `clpft run` on a folder that holds a test split too (q7, q8, relevant to d7-d9):
    the mined negatives include d7-d9, so test queries would be their own queries if the test qrels were
    read, and q7, q8 would be rows if the test split were mined."""
    from clpft.cli import main
    from clpft.data import read_train_jsonl

    common = ["--model", str(tiny_model_dir), "--strategy", "random", "--num-negatives", "9", "--seed", "1", "--quiet"]
    if entry == "mine":
        train_file = tmp_path / "train.jsonl"
        assert main(["mine", "--data", str(tiny_beir), "--out", str(train_file), *common]) == 0
    else:
        assert main(["run", "--data", str(tiny_beir), "--out", str(tmp_path / "run"), "--max-steps", "1", *common]) == 0
        train_file = tmp_path / "run" / "train.jsonl"
    examples = read_train_jsonl(train_file)
    test = load_dataset(tiny_beir, "test")
    test_docs = {d for q in test.qrels for d in test.relevant(q)} | {d for q in test.qrels for d in test.qrels[q]}
    assert any(set(e.neg_ids) & test_docs for e in examples)  # the precondition that makes this test able to fail
    test_texts = {test.queries[q] for q in test.qrels}
    assert {e.query_id for e in examples} == {"q1", "q2", "q3", "q4", "q5", "q6"}
    assert not {q for e in examples for own in e.own_queries for q in own} & test_texts


def test_random_negatives_are_seeded_and_unlabelled(tiny_beir):
    dataset = load_dataset(tiny_beir, "train")
    first, _ = mine_negatives(None, dataset, num_negatives=4, strategy="random", seed=7)
    second, _ = mine_negatives(None, dataset, num_negatives=4, strategy="random", seed=7)
    assert [e.neg_ids for e in first] == [e.neg_ids for e in second]
    for e in first:
        assert len(set(e.neg_ids)) == 4 and not set(e.neg_ids) & dataset.relevant(e.query_id)


def test_max_score_ratio_drops_candidates_above_the_positive(tiny_model, tiny_beir):
    dataset = load_dataset(tiny_beir, "train")
    plain, _ = mine_negatives(tiny_model, dataset, num_negatives=3)
    strict, stats = mine_negatives(tiny_model, dataset, num_negatives=3, max_score_ratio=0.5)
    assert stats.dropped_by_score_ratio > 0
    doc_ids = list(dataset.corpus)
    docs = encode_texts(tiny_model, [dataset.corpus[d].full_text for d in doc_ids], "document", 64)
    for example in strict:
        query = encode_texts(tiny_model, [example.query], "query", 64)[0]
        best = max(float(docs[doc_ids.index(d)] @ query) for d in example.pos_ids)
        assert all(float(docs[doc_ids.index(d)] @ query) <= 0.5 * best + 1e-6 for d in example.neg_ids)


def test_max_train_queries_is_a_seeded_sample(tiny_beir):
    dataset = load_dataset(tiny_beir, "train")
    a, _ = mine_negatives(None, dataset, strategy="random", max_train_queries=3, seed=5)
    b, _ = mine_negatives(None, dataset, strategy="random", max_train_queries=3, seed=5)
    assert len(a) == 3 and [e.query_id for e in a] == [e.query_id for e in b]


def test_bad_options(tiny_beir):
    dataset = load_dataset(tiny_beir, "train")
    with pytest.raises(ClpftError, match="rank"):
        mine_negatives(None, dataset, strategy="random", rank_from=5, rank_to=5)
    with pytest.raises(ClpftError, match="strategy"):
        mine_negatives(None, dataset, strategy="bm25")


def test_token_budget_batches_cover_every_text_once_within_budget():
    from clpft.mining.encode import token_budget_batches

    lengths = [5, 300, 40, 40, 7, 256, 1, 90, 90, 90]
    batches = token_budget_batches(lengths, token_budget=200, max_batch=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 200
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat, reverse=True)  # longest first: similar lengths share a batch


def test_token_lengths_in_chunks_are_the_whole_corpus_lengths(tiny_model):
    from clpft.mining.encode import token_lengths

    texts = [("word " * n).strip() for n in (1, 30, 3, 12, 7, 60, 2, 25, 0)]
    whole = [len(ids) for ids in tiny_model.tokenizer(texts, truncation=True, max_length=20)["input_ids"]]
    assert max(whole) == 20 and min(whole) == 2  # some cut at the limit, the empty text is [CLS] [SEP]
    assert token_lengths(tiny_model.tokenizer, texts, 20, chunk=2) == whole
    assert token_lengths(tiny_model.tokenizer, [], 20) == []


def test_budgeted_encoding_equals_sentence_transformers(tiny_model):
    import numpy as np

    from clpft import precision
    from clpft.mining.encode import encode_texts

    texts = [("word " * n).strip() for n in (1, 30, 3, 12, 7, 60, 2, 25)]
    with precision.use("fp32"):  # the batching alone changes nothing (bf16 is test_precision's)
        ours = encode_texts(tiny_model, texts, "document", None, batch_size=4, token_budget=40)
    theirs = tiny_model.encode_document(texts, batch_size=32, normalize_embeddings=True)
    assert np.allclose(ours, theirs, atol=1e-5)


def test_speed_benchmark_search_part(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
    out = tmp_path / "speed.json"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--only",
            "search",
            "--search",
            "faiss:3000:16,torch:3000:16",
            "--search-queries",
            "64",
            "--top-k",
            "10",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [r["backend"] for r in report["search"]] == ["faiss", "torch"]
    assert all(r["docs"] == 3000 and r["seconds"] >= 0 for r in report["search"])
    assert "Mining search" in out.with_suffix(".md").read_text()


def _with_copies_of_positives(folder):
    """The tiny dataset plus, for every training positive, a copy of its passage under another id with case
    and spacing changed (real collections hold such duplicates)."""
    import json

    corpus_file = folder / "corpus.jsonl"
    docs = [json.loads(line) for line in corpus_file.read_text().splitlines()]
    copies = [
        {"_id": f"copy-{d['_id']}", "title": d["title"].upper(), "text": "  " + d["text"].replace(" ", "  ")}
        for d in docs
        if d["_id"] in {"d1", "d2", "d3", "d4", "d5", "d6"}
    ]
    corpus_file.write_text("".join(json.dumps(d) + "\n" for d in docs + copies))
    return folder


@pytest.mark.parametrize("strategy", ["ance", "random"])
def test_a_copy_of_a_positive_is_never_a_negative(tiny_model_dir, tiny_beir, tmp_path, strategy):
    """Through `clpft mine`: the copies are skipped and counted in train.jsonl.stats.json."""
    import json

    from clpft.cli import main
    from clpft.data.texts import text_key

    data = _with_copies_of_positives(tiny_beir)
    out = tmp_path / "train.jsonl"
    argv = ["mine", "--data", str(data), "--out", str(out), "--model", str(tiny_model_dir), "--quiet"]
    assert main([*argv, "--strategy", strategy, "--num-negatives", "16"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row in rows:
        positives = {text_key(p) for p in row["pos"]}
        assert not positives & {text_key(n) for n in row["neg"]}, row["query_id"]
    stats = json.loads((tmp_path / "train.jsonl.stats.json").read_text())
    # ANCE ranks the whole corpus past 16 negatives here, so it meets every copy; each query's own copies
    expected = sum(len(row["pos"]) for row in rows)
    assert stats["copies_of_positives_skipped"] == expected


def test_a_rows_negative_that_copies_its_positive_is_left_out_of_training():
    """A file mined elsewhere (FlagEmbedding's layout) with a positive's copy among the negatives."""
    from clpft.data.trainset import TrainExample
    from clpft.training.collator import build_dataset

    rows = [
        TrainExample("q one", ["The answer."], ["the  ANSWER.", "n1", "n2"], [["x"], ["y"], []]),
        TrainExample("q two", ["Other."], ["n3", "n4", "n5"], [[], [], []]),
    ]
    dataset, skipped = build_dataset(rows, num_negatives=2)
    assert skipped == 0
    assert [dataset[0]["negative_1"], dataset[0]["negative_2"]] == ["n1", "n2"]
    assert dataset[0]["own_queries"] == [["y"], []]
    short, skipped = build_dataset(rows, num_negatives=3)
    assert skipped == 1 and short["query"] == ["q two"]
