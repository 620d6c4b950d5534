"""When two texts are the same text: one rule for the validation split, mining and the batch sampler."""

from __future__ import annotations


def text_key(text: str) -> str:
    """``text`` with case folded and white space collapsed: two texts with the same key are one text.

    Real collections repeat passages and queries with only case or spacing changed (SciFact has claims that
    appear under two ids); comparing ids, or raw strings, lets such a copy pass as a different text."""
    return " ".join(text.casefold().split())
