"""Queries without any model: the title, then the document's most typical sentences by tf-idf.

Weaker than generated queries (they are copied text, not questions someone would type), but free,
offline and deterministic: a fallback when no LLM or doc2query model is at hand."""

from __future__ import annotations

import math
import re
from collections import Counter

from clpft.data.beir import Document
from clpft.ownqueries.base import GenerationSummary, QueryGenerator, clean_queries

_SENTENCE_END = re.compile(r"(?<=[.!?。！？।])\s+")
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_WORDS = 16


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if len(_WORD.findall(s)) >= 3]


class ExtractiveGenerator(QueryGenerator):
    name = "extractive"

    def identity(self) -> str:
        return f"extractive|v1|max_words={MAX_WORDS}"

    def generate(self, documents: list[Document], n: int, summary: GenerationSummary) -> list[list[str] | None]:
        # Document frequencies over the documents at hand: words typical of one document score high.
        df: Counter[str] = Counter()
        for doc in documents:
            df.update(set(w.lower() for w in _WORD.findall(doc.full_text)))
        total = len(documents)

        def idf(word: str) -> float:
            return math.log((1 + total) / (1 + df[word])) + 1.0

        results: list[list[str] | None] = []
        for doc in documents:
            candidates = [doc.title] if len(_WORD.findall(doc.title)) >= 2 else []
            centroid = Counter(w.lower() for w in _WORD.findall(doc.text))
            weights = {w: c * idf(w) for w, c in centroid.items()}
            norm = math.sqrt(sum(v * v for v in weights.values())) or 1.0
            scored = []
            for index, sentence in enumerate(sentences(doc.text)):
                words = Counter(w.lower() for w in _WORD.findall(sentence))
                vector = {w: c * idf(w) for w, c in words.items()}
                s_norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
                score = sum(v * weights.get(w, 0.0) for w, v in vector.items()) / (norm * s_norm)
                scored.append((-score, index, " ".join(sentence.split()[:MAX_WORDS])))
            candidates += [text for _, _, text in sorted(scored)]
            results.append(clean_queries(candidates, "", n))  # copies are the point here
        return results
