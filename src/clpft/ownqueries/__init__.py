"""Queries for documents that have none: the negatives' own queries of CLP, and training queries
for corpora without any (``clpft synth``).

Backends share one interface (``QueryGenerator``) and one SQLite cache:

- ``llm``: any OpenAI-compatible chat-completions endpoint (the paper used an LLM);
- ``doc2query``: a local seq2seq model folder (T5-style doc2query);
- ``extractive``: no model at all, the title or the document's most typical sentence (weaker);
- ``qrels`` and ``none`` are handled by the mining step itself.

May import: clpft.data and the shared modules (errors, files, faults, manifest, models, options, presets,
precision).
"""

from clpft.ownqueries.base import GenerationSummary, QueryGenerator, parse_backends
from clpft.ownqueries.cache import QueryCache
from clpft.ownqueries.chain import QuerySources, fill_own_queries, make_generator

__all__ = [
    "GenerationSummary",
    "QuerySources",
    "QueryCache",
    "QueryGenerator",
    "fill_own_queries",
    "make_generator",
    "parse_backends",
]
