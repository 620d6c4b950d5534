"""SQLite cache of generated queries, keyed by generator identity and document text.

Each document's queries are committed as soon as they exist, so a crashed or interrupted run loses
nothing it already paid for, and a rerun makes no repeated calls."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from clpft.errors import ClpftError
from clpft.faults import kill_point


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class QueryCache:
    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        target = ":memory:" if self.path is None else str(self.path)
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(target, check_same_thread=False)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS queries (generator TEXT, doc_hash TEXT, n INTEGER, queries TEXT, "
                "PRIMARY KEY (generator, doc_hash, n))"
            )
            self._db.commit()
        except (sqlite3.Error, OSError) as error:
            raise ClpftError(f"cannot open query cache {target}: {error}") from error

    def get(self, generator: str, document: str, n: int) -> list[str] | None:
        row = self._db.execute(
            "SELECT queries FROM queries WHERE generator = ? AND doc_hash = ? AND n = ?",
            (generator, text_hash(document), n),
        ).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, generator: str, document: str, n: int, queries: list[str]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO queries VALUES (?, ?, ?, ?)",
            (generator, text_hash(document), n, json.dumps(queries, ensure_ascii=False)),
        )
        self._db.commit()
        kill_point("neg_queries.cached")

    def close(self) -> None:
        self._db.close()
