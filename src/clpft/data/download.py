"""``--data beir:NAME`` and ``--data miracl:LANG``: fetch a public dataset from its official source
once, convert it to the BEIR layout in a cache folder, and reuse it from then on.

- BEIR: the zip files published by the BEIR authors (``BEIR_URL``/NAME.zip).
- MIRACL: the official topics, qrels and corpus files of the ``miracl/miracl`` and
  ``miracl/miracl-corpus`` dataset repositories (splits train and dev; clpft's ``test`` split is
  MIRACL's dev split, on which the paper reports).

The cache is ``$CLPFT_CACHE`` (default ``~/.cache/clpft``)/datasets. The base URLs can be replaced
with ``CLPFT_BEIR_URL`` and ``CLPFT_MIRACL_URL`` (mirrors, or local files in tests: ``file://``).
A download is converted into a temporary folder and renamed into place, so an interrupted one is
simply redone.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from clpft.errors import ClpftError

logger = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"
MIRACL_URL = "https://huggingface.co/datasets/miracl"
MIRACL_SPLITS = {"train": "train", "test": "dev", "dev": "dev"}


def cache_root() -> Path:
    return Path(os.environ.get("CLPFT_CACHE", Path.home() / ".cache" / "clpft")) / "datasets"


def _fetch(url: str, target: Path) -> bool:
    """Download ``url`` to ``target``; False when the source says the file does not exist."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as handle:
            shutil.copyfileobj(response, handle)
        return True
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise ClpftError(f"cannot download {url}: HTTP {error.code}") from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, FileNotFoundError):
            return False
        raise ClpftError(
            f"cannot download {url}: {error.reason} (no network? download once on a connected machine "
            f"and copy {cache_root()})"
        ) from error


def _beir(name: str, folder: Path, scratch: Path) -> None:
    base = os.environ.get("CLPFT_BEIR_URL", BEIR_URL).rstrip("/")
    archive = scratch / f"{name}.zip"
    if not _fetch(f"{base}/{name}.zip", archive):
        raise ClpftError(f"BEIR has no dataset {name!r} at {base}")
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(scratch / "unzipped")
    except zipfile.BadZipFile as error:
        raise ClpftError(f"{base}/{name}.zip is not a valid zip file") from error
    inner = next((p.parent for p in (scratch / "unzipped").rglob("corpus.jsonl")), None)
    if inner is None:
        raise ClpftError(f"{base}/{name}.zip holds no corpus.jsonl")
    shutil.move(str(inner), folder)


def _miracl(lang: str, folder: Path, scratch: Path) -> None:
    base = os.environ.get("CLPFT_MIRACL_URL", MIRACL_URL).rstrip("/")
    version = f"miracl-v1.0-{lang}"
    folder.mkdir(parents=True)
    (folder / "qrels").mkdir()
    queries: dict[str, str] = {}
    for ours, theirs in MIRACL_SPLITS.items():
        topics = scratch / f"topics-{theirs}.tsv"
        qrels = scratch / f"qrels-{theirs}.tsv"
        if not _fetch(f"{base}/miracl/resolve/main/{version}/topics/topics.{version}-{theirs}.tsv", topics):
            continue
        if not _fetch(f"{base}/miracl/resolve/main/{version}/qrels/qrels.{version}-{theirs}.tsv", qrels):
            continue
        for line in topics.read_text(encoding="utf-8").splitlines():
            if line.strip():
                qid, text = line.split("\t", 1)
                queries[qid] = text
        with (folder / "qrels" / f"{ours}.tsv").open("w", encoding="utf-8") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            for line in qrels.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) == 4:  # TREC: qid Q0 docid relevance
                    handle.write(f"{parts[0]}\t{parts[2]}\t{parts[3]}\n")
    if not queries:
        raise ClpftError(f"MIRACL has no language {lang!r} at {base}")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for qid, text in queries.items():
            handle.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as out:
        shard = 0
        while _fetch(
            f"{base}/miracl-corpus/resolve/main/miracl-corpus-v1.0-{lang}/docs-{shard}.jsonl.gz", scratch / "shard.gz"
        ):
            with gzip.open(scratch / "shard.gz", "rt", encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        doc = json.loads(line)
                        out.write(
                            json.dumps(
                                {"_id": doc["docid"], "title": doc.get("title", ""), "text": doc["text"]},
                                ensure_ascii=False,
                            )
                            + "\n"
                        )
            shard += 1
        if shard == 0:
            raise ClpftError(f"MIRACL has no corpus for {lang!r} at {base}")


SOURCES = {"beir": _beir, "miracl": _miracl}


def resolve_data(spec: str | os.PathLike) -> Path:
    """A local folder as is; ``beir:NAME`` / ``miracl:LANG`` downloaded and converted once, then cached."""
    text = str(spec)
    source, sep, name = text.partition(":")
    if not sep or source not in SOURCES or not name or "/" in name:
        return Path(spec)
    folder = cache_root() / source / name
    if (folder / "corpus.jsonl").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=folder.parent) as tmp:
        scratch = Path(tmp)
        staged = scratch / "dataset"
        logger.warning("downloading %s into %s", text, folder)
        SOURCES[source](name, staged, scratch)
        os.replace(staged, folder)
    return folder
