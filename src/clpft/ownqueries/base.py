"""The interface every query generator implements, and helpers they share."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from clpft.errors import ClpftError

BACKENDS = ("qrels", "llm", "doc2query", "extractive", "none")


def parse_backends(spec: str, flag: str = "--neg-queries") -> list[str]:
    """``"qrels,extractive"`` -> ["qrels", "extractive"], validated; "none" alone means no queries. ``flag``
    names the option in messages (``clpft synth`` calls it --backends)."""
    names = [part.strip() for part in spec.split(",") if part.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise ClpftError(
            f"{flag}: unknown backend {', '.join(unknown) or '(empty)'} (choose from {', '.join(BACKENDS)})"
        )
    if "none" in names and len(names) > 1:
        raise ClpftError(f"{flag}: 'none' cannot be combined with other backends")
    return [n for n in names if n != "none"]


@dataclass
class GenerationSummary:
    """What a generator did: shown to the user and stored in the run's statistics."""

    backend: str
    documents: int = 0
    from_cache: int = 0
    generated: int = 0
    calls: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = f"{self.backend}: {self.documents} documents, {self.from_cache} from cache, {self.generated} generated"
        if self.calls or self.failures:
            text += f"; {self.calls} calls, {self.retries} retries, {self.failures} failed"
        if self.prompt_tokens or self.completion_tokens:
            text += f"; tokens {self.prompt_tokens} prompt + {self.completion_tokens} completion"
        return text


class QueryGenerator:
    """Generates up to ``n`` short search queries per document."""

    name = "base"

    def identity(self) -> str:
        """What makes two generators' outputs interchangeable (backend, model, prompt): the cache key."""
        return self.name

    def generate(self, documents: list[str], n: int, summary: GenerationSummary) -> list[list[str] | None]:
        """One list per document (None when generation failed for it: not cached, retried next run)."""
        raise NotImplementedError


_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)


def normalise(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def clean_queries(queries: list[str], document: str, n: int) -> list[str]:
    """De-duplicate, drop empty ones and ones that copy the document verbatim, keep at most ``n``."""
    doc = normalise(document)
    seen: set[str] = set()
    kept = []
    for query in queries:
        query = _SPACES.sub(" ", query).strip().strip('"').strip()
        key = normalise(query)
        if not key or key in seen or len(_WORD.findall(key)) < 2:
            continue
        if len(key) >= 20 and key in doc:  # a copied sentence, not a query someone would type
            continue
        seen.add(key)
        kept.append(query)
        if len(kept) == n:
            break
    return kept
