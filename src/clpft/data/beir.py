"""Load a BEIR-layout retrieval folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

Every problem in the files is reported as one line, ``file:line: problem``. Qrels rows that name a
query or document missing from the other files are counted, reported and dropped (BEIR's own
datasets have a few), since one stale row should not stop a run.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from clpft.data.lines import read_jsonl, read_lines, string_field
from clpft.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Document:
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """What the encoder sees: title and text, as BEIR's evaluation joins them."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


@dataclass
class Dataset:
    """One split of a retrieval dataset. ``qrels[query_id][doc_id] = grade`` (grade > 0 means relevant)."""

    path: Path
    split: str
    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    dropped_qrels: int = 0  # rows naming a query or document the other files do not have
    repeated_qrels: int = 0  # rows repeating an earlier (query, document) pair with the same grade
    notes: list[str] = field(default_factory=list)

    @property
    def split_queries(self) -> dict[str, str]:
        """The queries that have judgements in this split."""
        return {qid: self.queries[qid] for qid in self.qrels}

    def relevant(self, query_id: str) -> set[str]:
        return {doc for doc, grade in self.qrels.get(query_id, {}).items() if grade > 0}


def available_splits(path: str | Path) -> list[str]:
    qrels_dir = Path(path) / "qrels"
    return sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []


def _skip_empty(path: Path, number: int, what: str, skipped: list[int]) -> None:
    """Empty entries exist in real collections (Cranfield has two empty abstracts): nothing to encode,
    so they are skipped, each reported as file:line, rather than stopping the run."""
    skipped.append(number)
    if len(skipped) <= 5:
        logger.warning("%s:%d: %s is empty; skipped", path, number, what)


def load_corpus(path: Path) -> dict[str, Document]:
    corpus: dict[str, Document] = {}
    skipped: list[int] = []
    for number, obj in read_jsonl(path):
        doc_id = string_field(path, number, obj, "_id")
        title = string_field(path, number, obj, "title", allow_empty=True) if obj.get("title") is not None else ""
        text = string_field(path, number, obj, "text", allow_empty=True)
        if doc_id in corpus:
            raise DataError(path, number, f"duplicate document id {doc_id!r}")
        if not (title.strip() or text.strip()):
            _skip_empty(path, number, f"document {doc_id!r} (title and text)", skipped)
            continue
        corpus[doc_id] = Document(title=title, text=text)
    if len(skipped) > 5:
        logger.warning("%s: skipped %d empty documents in all", path, len(skipped))
    if not corpus:
        raise DataError(path, None, "no documents")
    return corpus


def load_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    skipped: list[int] = []
    for number, obj in read_jsonl(path):
        query_id = string_field(path, number, obj, "_id")
        text = string_field(path, number, obj, "text", allow_empty=True)
        if query_id in queries:
            raise DataError(path, number, f"duplicate query id {query_id!r}")
        if not text.strip():
            _skip_empty(path, number, f"query {query_id!r}", skipped)
            continue
        queries[query_id] = text
    if not queries:
        raise DataError(path, None, "no queries")
    return queries


# a header line names its columns: a score column such as "score" or "relevance", or a query-id column such as
# "query-id" or "qid"; any other first line is data (a typo in it is an error, not a header to skip)
HEADER_SCORES = {"score", "scores", "relevance", "rel", "label", "grade", "judgement", "judgment", "relevancy"}
HEADER_QUERY_ID = re.compile(r"(query|qid|topic)", re.IGNORECASE)
GRADE = re.compile(r"[+-]?\d+(\.0*)?")  # a whole number, "1.0" included
MAX_GRADE = 2**31 - 1  # pytrec_eval keeps grades in a C int


@dataclass
class Qrels:
    """A qrels file as read: ``grades[query_id][doc_id]``, the rows read, and the rows that repeat an earlier
    (query, document) pair with the same grade (counted, not used twice)."""

    grades: dict[str, dict[str, int]]
    rows: int
    repeated: int = 0


def load_qrels(path: Path) -> Qrels:
    """Read ``query-id<TAB>corpus-id<TAB>score`` rows, with an optional header line (naming its columns: a
    score column such as ``score``, or a query-id column such as ``query-id``). Every row is used with its
    exact grade, or counted (a repeat of a pair with the same grade), or rejected as ``file:line: problem``:
    a grade that is not a whole number (0.5, inf), out of range, or a pair graded twice with different
    grades. Nothing is rounded or overwritten silently."""
    grades: dict[str, dict[str, int]] = {}
    line_of: dict[tuple[str, str], int] = {}
    rows = repeated = 0
    first = True
    for number, text in read_lines(path):
        is_first, first = first, False
        parts = text.split("\t")
        if len(parts) != 3:
            raise DataError(
                path, number, f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(parts)}"
            )
        query_id, doc_id, score = (part.strip() for part in parts)
        if is_first and not GRADE.fullmatch(score):
            if score.casefold() in HEADER_SCORES or HEADER_QUERY_ID.search(query_id):
                continue  # the header line
        if not GRADE.fullmatch(score):
            raise DataError(
                path, number, f"score {score!r} is not a whole number (grades: 0 not relevant, > 0 relevant)"
            )
        grade = int(score.split(".")[0])
        if abs(grade) > MAX_GRADE:
            raise DataError(path, number, f"score {score} is out of range (at most {MAX_GRADE})")
        if not query_id or not doc_id:
            raise DataError(path, number, "empty query-id or corpus-id")
        rows += 1
        earlier = grades.setdefault(query_id, {}).get(doc_id)
        if earlier is not None:
            if earlier != grade:
                raise DataError(
                    path,
                    number,
                    f"query {query_id!r} and document {doc_id!r} were graded {earlier} on line "
                    f"{line_of[query_id, doc_id]}; a pair has one grade",
                )
            repeated += 1
            continue
        grades[query_id][doc_id] = grade
        line_of[query_id, doc_id] = number
    return Qrels(grades, rows, repeated)


def load_dataset(path: str | Path, split: str = "test") -> Dataset:
    """Load ``path`` (a BEIR folder, or ``beir:NAME`` / ``miracl:LANG``, fetched once) with the qrels of ``split``."""
    from clpft.data.download import resolve_data

    root = resolve_data(path)
    if not root.is_dir():
        raise DataError(root, None, "dataset folder not found")
    splits = available_splits(root)
    qrels_path = root / "qrels" / f"{split}.tsv"
    if qrels_path.is_dir():
        raise DataError(qrels_path, None, f"split {split!r}: this is a folder, not a qrels file")
    if not qrels_path.is_file():
        have = ", ".join(splits) if splits else "none"
        raise DataError(qrels_path, None, f"split {split!r} does not exist (available: {have})")
    corpus = load_corpus(root / "corpus.jsonl")
    queries = load_queries(root / "queries.jsonl")
    read = load_qrels(qrels_path)
    rows = read.rows

    qrels: dict[str, dict[str, int]] = {}
    unknown_queries = unknown_docs = 0
    for query_id, judged in read.grades.items():
        if query_id not in queries:
            unknown_queries += len(judged)
            continue
        known = {doc: grade for doc, grade in judged.items() if doc in corpus}
        unknown_docs += len(judged) - len(known)
        if known:
            qrels[query_id] = known
    dataset = Dataset(root, split, corpus, queries, qrels, dropped_qrels=unknown_queries + unknown_docs)
    dataset.repeated_qrels = read.repeated
    if read.repeated:
        note = f"{qrels_path}: {read.repeated} rows repeat an earlier (query, document) pair with its grade; used once"
        dataset.notes.append(note)
        logger.warning(note)
    if dataset.dropped_qrels:
        note = (
            f"{qrels_path}: dropped {dataset.dropped_qrels} of {rows} qrels rows "
            f"({unknown_queries} name unknown queries, {unknown_docs} unknown documents)"
        )
        dataset.notes.append(note)
        logger.warning(note)
    if not qrels:
        problem = (
            "no judgement rows (only a header)"
            if rows == 0
            else "no usable judgements (every row names an unknown query or document)"
        )
        raise DataError(qrels_path, None, problem)
    return dataset
