"""``clpft synth``: training queries for a corpus that has none, as a BEIR folder ``clpft run`` takes.

Each document gets up to ``queries_per_doc`` generated queries (through the same backends and cache
as negatives' queries); duplicates within a document, queries that copy the document verbatim, and
queries generated for more than one document (ambiguous as training pairs) are dropped."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from clpft.data.beir import load_corpus
from clpft.errors import ClpftError
from clpft.files import atomic_dir
from clpft.ownqueries.base import GenerationSummary, normalise
from clpft.ownqueries.cache import QueryCache
from clpft.ownqueries.chain import QuerySources, generate_cached, make_generator


def synthesize(
    data: str | Path,
    out: str | Path,
    settings: QuerySources,
    queries_per_doc: int = 3,
    max_docs: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Write ``out`` (corpus.jsonl, queries.jsonl, qrels/train.tsv); returns a summary."""
    backends = [b for b in settings.backends if b != "qrels"]
    if not backends:
        raise ClpftError("clpft synth needs a generating backend: llm, doc2query or extractive")
    from clpft.data.download import resolve_data

    corpus = load_corpus(resolve_data(data) / "corpus.jsonl")
    doc_ids = list(corpus)
    if max_docs is not None and max_docs < len(doc_ids):
        doc_ids = sorted(random.Random(settings.seed).sample(doc_ids, max_docs), key=list(corpus).index)

    queries: dict[str, list[str]] = {d: [] for d in doc_ids}
    summaries = []
    cache = QueryCache(settings.cache_path)
    try:
        for backend in backends:
            needy = [d for d in doc_ids if len(queries[d]) < queries_per_doc]
            if not needy:
                break
            summary = GenerationSummary(backend)
            answers = generate_cached(
                make_generator(backend, settings), [corpus[d] for d in needy], queries_per_doc, cache, summary
            )
            for doc_id, found in zip(needy, answers):
                have = {normalise(q) for q in queries[doc_id]}
                for query in found or []:
                    if len(queries[doc_id]) < queries_per_doc and normalise(query) not in have:
                        queries[doc_id].append(query)
                        have.add(normalise(query))
            summaries.append(summary)
    finally:
        cache.close()

    owners = Counter(normalise(q) for qs in queries.values() for q in qs)
    rows = [(d, q) for d in doc_ids for q in queries[d] if owners[normalise(q)] == 1]
    if not rows:
        raise ClpftError("no queries were generated (see the backend summary above)")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        with (tmp / "corpus.jsonl").open("w", encoding="utf-8") as handle:
            for doc_id, doc in corpus.items():
                handle.write(
                    json.dumps({"_id": doc_id, "title": doc.title, "text": doc.text}, ensure_ascii=False) + "\n"
                )
        with (tmp / "queries.jsonl").open("w", encoding="utf-8") as handle:
            for k, (_, query) in enumerate(rows):
                handle.write(json.dumps({"_id": f"synth-{k}", "text": query}, ensure_ascii=False) + "\n")
        (tmp / "qrels").mkdir()
        with (tmp / "qrels" / "train.tsv").open("w", encoding="utf-8") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            for k, (doc_id, _) in enumerate(rows):
                handle.write(f"synth-{k}\t{doc_id}\t1\n")
    return {
        "documents": len(doc_ids),
        "queries": len(rows),
        "dropped_ambiguous": sum(len(qs) for qs in queries.values()) - len(rows),
        "documents_without_queries": sum(1 for d in doc_ids if not queries[d]),
        "backends": [s.line() for s in summaries],
    }
