"""Negatives' own queries from generators: the LLM backend against a fake OpenAI-compatible server
on 127.0.0.1 (never the network), doc2query with a tiny random T5, the extractive fallback, the cache,
provenance, and `clpft synth`."""

from __future__ import annotations

import json
import logging

import pytest

from clpft.cli import main
from clpft.data import load_dataset
from clpft.data.beir import Document
from clpft.mining import mine_negatives
from clpft.ownqueries import GenerationSummary, QueryCache, QuerySources, parse_backends
from clpft.ownqueries.chain import generate_cached
from clpft.ownqueries.extractive import ExtractiveGenerator
from clpft.ownqueries.llm import LLMGenerator, parse_queries
from fake_openai import FakeOpenAI

SECRET = "sk-test-secret-0123456789"
DOCS = [
    Document("Glial coverage", "Glial cells clear glutamate near synapses. Coverage changes with lactation."),
    Document("", "Vitamin D lowers the risk of fractures in older patients. The effect is small."),
    Document("Wing flow", "Boundary layer separation on swept wings at high speed. Shock waves move aft."),
]


@pytest.fixture
def fake_llm(monkeypatch):
    monkeypatch.setenv("CLPFT_API_KEY", SECRET)
    server = FakeOpenAI()
    yield server
    server.close()


def llm(server, **kwargs):
    options = dict(base_url=server.url, model="fake-model", timeout=0.5, max_retries=2)
    options.update(kwargs)
    return LLMGenerator(**options)


@pytest.mark.parametrize(
    "answer,want",
    [
        ('["a query", "another query"]', ["a query", "another query"]),
        ('```json\n["a query", "b query"]\n```', ["a query", "b query"]),
        ('{"queries": ["x y", "z w"]}', ["x y", "z w"]),
        (
            "Here are three queries:\n1. first query\n2) second query\n- third query",
            ["first query", "second query", "third query"],
        ),
        ('Sure! ["only this", "and this"] Hope it helps.', ["only this", "and this"]),
    ],
)
def test_parse_queries(answer, want):
    assert parse_queries(answer) == want


def test_llm_answers_are_cached_and_a_rerun_makes_no_calls(fake_llm, tmp_path):
    cache_path = tmp_path / "cache.sqlite"
    summary = GenerationSummary("llm")
    first = generate_cached(llm(fake_llm), DOCS, 2, QueryCache(cache_path), summary)
    assert all(len(q) == 2 for q in first) and summary.generated == 3
    assert summary.prompt_tokens == 150 and summary.completion_tokens == 36
    assert fake_llm.auth == [f"Bearer {SECRET}"] * 3
    calls = len(fake_llm.requests)
    again = GenerationSummary("llm")
    second = generate_cached(llm(fake_llm), DOCS, 2, QueryCache(cache_path), again)
    assert second == first and len(fake_llm.requests) == calls and again.from_cache == 3


def test_retry_after_429_then_success(fake_llm):
    fake_llm.script = ["429", "429"]
    summary = GenerationSummary("llm")
    (queries,) = llm(fake_llm, concurrency=1).generate(DOCS[:1], 2, summary)
    assert len(queries) == 2 and summary.calls == 3 and summary.retries == 2 and summary.failures == 0


@pytest.mark.parametrize("mode", ["500", "bad", "slow"])
def test_failures_are_counted_not_cached_and_retried_next_run(fake_llm, tmp_path, mode):
    fake_llm.default = mode
    cache = QueryCache(tmp_path / "c.sqlite")
    summary = GenerationSummary("llm")
    result = generate_cached(llm(fake_llm, timeout=0.3), DOCS[:2], 2, cache, summary)
    assert result == [None, None] and summary.failures == 2 and summary.calls == 6  # 3 tries each
    assert summary.notes and all(SECRET not in note for note in summary.notes)
    fake_llm.default = "ok"
    healed = generate_cached(llm(fake_llm), DOCS[:2], 2, cache, GenerationSummary("llm"))
    assert all(healed)


def test_max_calls_is_a_hard_cap(fake_llm):
    fake_llm.default = "500"
    summary = GenerationSummary("llm")
    llm(fake_llm, max_calls=4, concurrency=2).generate(DOCS, 2, summary)
    assert len(fake_llm.requests) == 4 and summary.calls == 4
    assert any("max-llm-calls" in note for note in summary.notes)


def test_extractive_queries():
    (glial, vitamin, wing) = ExtractiveGenerator().generate(DOCS, 2, GenerationSummary("extractive"))
    assert glial[0] == "Glial coverage" and len(glial) == 2
    assert vitamin and vitamin[0].startswith("Vitamin D lowers")


def test_doc2query_with_tiny_t5(tmp_path):
    from transformers import BertTokenizerFast, T5Config, T5ForConditionalGeneration

    from clpft.ownqueries.doc2query import Doc2QueryGenerator
    from conftest import _vocab

    tokenizer = BertTokenizerFast(vocab=_vocab())
    config = T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=16,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        d_kv=8,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=3,
    )
    T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    generator = Doc2QueryGenerator(str(tmp_path / "t5"), max_new_tokens=6, seed=1)
    first = generator.generate(DOCS, 2, GenerationSummary("doc2query"))
    assert len(first) == 3 and all(isinstance(q, list) and len(q) <= 2 for q in first)
    assert sum(len(q) for q in first) > 0
    assert (
        Doc2QueryGenerator(str(tmp_path / "t5"), max_new_tokens=6, seed=1).generate(DOCS, 2, GenerationSummary("d"))
        == first
    )


def test_mining_tops_up_with_generated_queries_and_records_provenance(tiny_beir, tmp_path):
    dataset = load_dataset(tiny_beir, "train")
    settings = QuerySources(backends=parse_backends("qrels,extractive"), cache_path=str(tmp_path / "c.sqlite"))
    examples, stats = mine_negatives(None, dataset, num_negatives=9, strategy="random", query_sources=settings)
    plain, _ = mine_negatives(None, dataset, num_negatives=9, strategy="random")
    for mixed, qrels_only in zip(examples, plain):
        for own, source, before in zip(mixed.own_queries, mixed.own_query_sources, qrels_only.own_queries):
            assert own and source in ("qrels", "extractive")
            assert (source == "qrels") == bool(before)
            if before:
                assert own == before  # qrels queries are kept as they are
    assert stats.negatives_with_queries == stats.negatives
    assert set(stats.neg_query_sources) == {"qrels", "extractive"}
    none, _ = mine_negatives(
        None, dataset, strategy="random", query_sources=QuerySources(backends=parse_backends("none"))
    )
    assert all(not qs for e in none for qs in e.own_queries)


def test_key_never_written_or_logged(fake_llm, tiny_beir, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "train.jsonl"
    assert (
        main(
            [
                "mine",
                "--data",
                str(tiny_beir),
                "--out",
                str(out),
                "--strategy",
                "random",
                "--neg-queries",
                "qrels,llm",
                "--llm-base-url",
                fake_llm.url,
                "--llm-model",
                "fake-model",
            ]
        )
        == 0
    )
    sources = {s for line in out.read_text().splitlines() for s in json.loads(line)["neg_q_source"]}
    assert "llm" in sources or "qrels+llm" in sources
    everything = (
        out.read_text() + caplog.text + capsys.readouterr().out + (tmp_path / "train.jsonl.stats.json").read_text()
    )
    everything += (tmp_path / "train.jsonl.neg_queries.sqlite").read_bytes().decode("latin-1")
    assert SECRET not in everything


def test_synth_writes_a_beir_folder_run_accepts(tiny_beir, tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--data", str(tiny_beir), "--out", str(out), "--backends", "extractive", "--quiet"]) == 0
    dataset = load_dataset(out, "train")
    assert len(dataset.qrels) >= 12 and len(dataset.corpus) == 12
    texts = [q.lower() for q in dataset.queries.values()]
    assert len(texts) == len(set(texts))
    assert main(["synth", "--data", str(tiny_beir), "--out", str(out), "--quiet"]) == 2  # exists
    assert main(["synth", "--data", str(tiny_beir), "--out", str(out), "--overwrite", "--quiet"]) == 0
    assert "12 from cache" in capsys.readouterr().out
