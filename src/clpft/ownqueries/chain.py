"""Give each hard negative its own queries: the backends are tried in order, each only for the
negatives that still have fewer than ``queries_per_negative``; every answer goes through the cache."""

from __future__ import annotations

import logging

from clpft.data.beir import Dataset, Document
from clpft.data.trainset import TrainExample
from clpft.errors import ClpftError
from clpft.options import QuerySources  # declared with the other options
from clpft.ownqueries.base import GenerationSummary, QueryGenerator
from clpft.ownqueries.cache import QueryCache

logger = logging.getLogger(__name__)


def make_generator(name: str, settings: QuerySources) -> QueryGenerator:
    if name == "llm":
        from clpft.ownqueries.llm import LLMGenerator

        return LLMGenerator.from_prompt_file(
            settings.llm_prompt,
            base_url=settings.llm_base_url or "",
            model=settings.llm_model or "",
            concurrency=settings.llm_concurrency,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
            max_calls=settings.max_llm_calls,
        )
    if name == "doc2query":
        from clpft.ownqueries.doc2query import Doc2QueryGenerator

        return Doc2QueryGenerator(settings.doc2query_model or "", seed=settings.seed)
    if name == "extractive":
        from clpft.ownqueries.extractive import ExtractiveGenerator

        return ExtractiveGenerator()
    raise ClpftError(f"no generator for backend {name!r}")


def generate_cached(
    generator: QueryGenerator, documents: list[Document], n: int, cache: QueryCache, summary: GenerationSummary
) -> list[list[str] | None]:
    """Queries for each document: from the cache where present, else generated and cached at once.
    Failed documents (None) are not cached, so a later run tries them again."""
    key = generator.identity()
    results: list[list[str] | None] = [cache.get(key, d.full_text, n) for d in documents]
    missing = [i for i, r in enumerate(results) if r is None]
    summary.documents += len(documents)
    summary.from_cache += len(documents) - len(missing)
    # Generate in slices so that each finished slice is in the cache before the next starts.
    step = 64
    for start in range(0, len(missing), step):
        part = missing[start : start + step]
        generated = generator.generate([documents[i] for i in part], n, summary)
        for i, queries in zip(part, generated):
            if queries is not None:
                cache.put(key, documents[i].full_text, n, queries)
                summary.generated += 1
            results[i] = queries
    return results


def fill_own_queries(examples: list[TrainExample], dataset: Dataset, settings: QuerySources) -> list[GenerationSummary]:
    """Top up ``own_queries`` of every example in place with the non-qrels backends, recording provenance
    in ``own_query_sources`` ("qrels", "llm", "qrels+extractive", ..., "none")."""
    wanted = settings.queries_per_negative
    generators = [b for b in settings.backends if b != "qrels"]
    summaries = []
    if not generators:
        return summaries
    cache = QueryCache(settings.cache_path)
    try:
        for backend in generators:
            needy = sorted({d for e in examples for d, qs in zip(e.neg_ids or [], e.own_queries) if len(qs) < wanted})
            if not needy:
                break
            generator = make_generator(backend, settings)
            summary = GenerationSummary(backend)
            answers = dict(
                zip(needy, generate_cached(generator, [dataset.corpus[d] for d in needy], wanted, cache, summary))
            )
            for example in examples:
                sources = example.own_query_sources or ["qrels" if qs else "none" for qs in example.own_queries]
                for j, doc_id in enumerate(example.neg_ids or []):
                    have = example.own_queries[j]
                    new = [q for q in (answers.get(doc_id) or []) if q not in have][: max(0, wanted - len(have))]
                    if new and len(have) < wanted:
                        example.own_queries[j] = have + new
                        sources[j] = backend if sources[j] == "none" else f"{sources[j]}+{backend}"
                example.own_query_sources = sources
            logger.info(summary.line())
            for note in summary.notes:
                logger.warning("%s: %s", backend, note)
            summaries.append(summary)
    finally:
        cache.close()
    return summaries
