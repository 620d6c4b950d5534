"""The training-set file, ``train.jsonl``: one JSON object per training query.

clpft writes::

    {"query": str, "pos": [str], "neg": [str], "neg_q": [[str]],
     "query_id": str, "pos_ids": [str], "neg_ids": [str], "neg_q_source": [str]}

``neg_q[j]`` holds the negative's own queries: the queries known to be relevant to ``neg[j]`` (possibly
none). Files written by the paper's public code (``query``/``pos``/``neg``/``neg_q`` with ``neg_q`` a flat
list holding one query per negative, ``""`` for none) load too, as do FlagEmbedding files without ``neg_q``.

In code the same things are ``TrainExample.own_queries`` and ``own_query_sources``: one name from the
file to the loss (``FILE_KEYS`` maps them to the file's keys, which stay as they are: other tools read them).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clpft.data.lines import read_jsonl
from clpft.errors import DataError
from clpft.files import atomic_file


@dataclass
class TrainExample:
    query: str
    pos: list[str]
    neg: list[str]
    own_queries: list[list[str]]
    query_id: str | None = None
    pos_ids: list[str] | None = None
    neg_ids: list[str] | None = None
    own_query_sources: list[str] | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        """The file's row (its keys, not the field names)."""
        return {FILE_KEYS.get(key, key): value for key, value in asdict(self).items() if value is not None}


# Fields whose key in train.jsonl differs from their name.
FILE_KEYS = {"own_queries": "neg_q", "own_query_sources": "neg_q_source"}


def _string_list(path: Path, number: int, obj: dict[str, Any], key: str, required: bool) -> list[str] | None:
    if key not in obj or obj[key] is None:
        if required:
            raise DataError(path, number, f"missing field {key!r}")
        return None
    value = obj[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DataError(path, number, f"field {key!r} must be a list of strings")
    return value


def _own_queries(path: Path, number: int, obj: dict[str, Any], num_neg: int) -> list[list[str]]:
    value = obj.get("neg_q")
    if value is None:
        return [[] for _ in range(num_neg)]
    if not isinstance(value, list):
        raise DataError(path, number, "field 'neg_q' must be a list")
    if len(value) != num_neg:
        raise DataError(path, number, f"'neg_q' has {len(value)} entries but 'neg' has {num_neg}")
    result = []
    for entry in value:
        if isinstance(entry, str):  # the paper's flat format: one query per negative
            result.append([entry] if entry.strip() else [])
        elif isinstance(entry, list) and all(isinstance(q, str) for q in entry):
            result.append([q for q in entry if q.strip()])
        else:
            raise DataError(path, number, "each 'neg_q' entry must be a string or a list of strings")
    return result


def read_train_jsonl(path: str | Path) -> list[TrainExample]:
    path = Path(path)
    examples = []
    for number, obj in read_jsonl(path):
        query = obj.get("query")
        if not isinstance(query, str) or not query.strip():
            raise DataError(path, number, "field 'query' must be a non-empty string")
        pos = _string_list(path, number, obj, "pos", required=True)
        if not pos or not all(p.strip() for p in pos):
            raise DataError(path, number, "field 'pos' must hold at least one non-empty passage")
        neg = _string_list(path, number, obj, "neg", required=False) or []
        ids = {key: _string_list(path, number, obj, key, required=False) for key in ("pos_ids", "neg_ids")}
        for key, texts in (("pos_ids", pos), ("neg_ids", neg)):
            if ids[key] is not None and len(ids[key]) != len(texts):
                raise DataError(path, number, f"{key!r} has {len(ids[key])} entries for {len(texts)} passages")
        query_id = obj.get("query_id")
        examples.append(
            TrainExample(
                query=query,
                pos=pos,
                neg=neg,
                own_queries=_own_queries(path, number, obj, len(neg)),
                query_id=None if query_id is None else str(query_id),
                pos_ids=ids["pos_ids"],
                neg_ids=ids["neg_ids"],
                own_query_sources=_string_list(path, number, obj, "neg_q_source", required=False),
            )
        )
    if not examples:
        raise DataError(path, None, "no training examples")
    return examples


def write_train_jsonl(path: str | Path, examples: list[TrainExample], overwrite: bool = True) -> None:
    with atomic_file(path, overwrite=overwrite) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")
