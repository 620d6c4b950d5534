"""Property-based: whatever bytes a data file holds, loading gives a result or a one-line DataError
naming the file, never another exception."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clpft.data import load_dataset, read_train_jsonl
from clpft.errors import DataError
from conftest import write_beir

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["_id", "title", "text", "query", "pos", "neg", "neg_q", "x"]), inner, max_size=4
        )
    ),
    max_leaves=8,
)
lines = st.one_of(
    st.binary(max_size=60),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["_id", "title", "text"]), json_values, max_size=3).map(
        lambda v: json.dumps(v).encode()
    ),
    st.just(b'\xef\xbb\xbf{"_id": "z", "text": "ok text"}'),
    st.just(b'{"_id": "long", "text": "' + b"a" * 5000 + b'"}'),
)
endings = st.sampled_from([b"\n", b"\r\n", b""])


def _check(error: DataError, path: Path) -> None:
    message = str(error)
    assert message.startswith(str(path)) and "\n" not in message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(lines, endings), max_size=5),
    st.sampled_from(["corpus.jsonl", "queries.jsonl", "qrels/train.tsv"]),
)
def test_beir_loader_never_crashes(content, target):
    with tempfile.TemporaryDirectory() as tmp:
        root = write_beir(
            Path(tmp) / "d",
            [{"_id": "d1", "title": "t", "text": "x y"}],
            [{"_id": "q1", "text": "q"}],
            {"train": [("q1", "d1", 1)]},
        )
        path = root / target
        path.write_bytes(path.read_bytes() + b"".join(line + end for line, end in content))
        try:
            dataset = load_dataset(root, "train")
        except DataError as error:
            _check(error, path if target != "qrels/train.tsv" else root / "qrels" / "train.tsv")
        else:
            assert "d1" in dataset.corpus or dataset.dropped_qrels >= 0
        shutil.rmtree(root)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(lines, endings), min_size=1, max_size=5))
def test_train_jsonl_loader_never_crashes(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.jsonl"
        path.write_bytes(b"".join(line + end for line, end in content))
        try:
            examples = read_train_jsonl(path)
        except DataError as error:
            _check(error, path)
        else:
            for example in examples:
                assert example.query.strip() and example.pos and len(example.own_queries) == len(example.neg)
