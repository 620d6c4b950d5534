"""Qrels grades: every row is used with its exact grade, counted in a warning, or rejected in one line
naming the file and the line; never changed silently."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clpft.data import load_dataset
from clpft.errors import DataError
from conftest import write_beir

CORPUS = [{"_id": f"d{i}", "title": "", "text": f"passage {i}"} for i in range(4)]
QUERIES = [{"_id": f"q{i}", "text": f"question {i}"} for i in range(4)]


def _folder(tmp_path, lines: list[str], split: str = "test"):
    folder = write_beir(tmp_path / "data", CORPUS, QUERIES, {})
    (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    "score,problem",
    [
        ("0.5", "not a whole number"),
        ("inf", "not a whole number"),
        ("1e400", "not a whole number"),
        ("nan", "not a whole number"),
        ("99999999999999999999", "out of range"),
    ],
)
def test_a_grade_that_is_not_a_whole_number_is_an_error_on_its_line(tmp_path, score, problem):
    folder = _folder(tmp_path, ["query-id\tcorpus-id\tscore", "q1\td1\t1", f"q2\td2\t{score}"])
    with pytest.raises(DataError, match=rf"test\.tsv:3: .*{problem}"):
        load_dataset(folder, "test")


def test_whole_grades_written_as_decimals_keep_their_value(tmp_path):
    dataset = load_dataset(_folder(tmp_path, ["q1\td1\t2.0", "q1\td2\t0", "q2\td3\t+1"]), "test")
    assert dataset.qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}


def test_a_pair_graded_twice(tmp_path):
    same = load_dataset(_folder(tmp_path, ["q1\td1\t1", "q1\td1\t1", "q1\td2\t2"]), "test")
    assert same.qrels == {"q1": {"d1": 1, "d2": 2}} and same.repeated_qrels == 1
    assert any("repeat an earlier" in note for note in same.notes)
    with pytest.raises(DataError, match=r"test\.tsv:3: .*graded 1 on line 1"):
        load_dataset(_folder(tmp_path, ["q1\td1\t1", "q1\td2\t1", "q1\td1\t2"]), "test")


def test_a_first_row_with_a_typo_is_not_taken_for_a_header(tmp_path):
    with pytest.raises(DataError, match=r"test\.tsv:1: score '1x'"):
        load_dataset(_folder(tmp_path, ["q1\td1\t1x", "q2\td2\t1"]), "test")
    # a header is recognised by its score column being a word
    assert load_dataset(_folder(tmp_path, ["qid\tdocid\trelevance", "q2\td2\t1"]), "test").qrels == {"q2": {"d2": 1}}


def test_header_only_and_folder_splits_say_what_is_wrong(tmp_path):
    with pytest.raises(DataError, match="no judgement rows"):
        load_dataset(_folder(tmp_path, ["query-id\tcorpus-id\tscore"]), "test")
    folder = _folder(tmp_path, ["q1\td1\t1"])
    (folder / "qrels" / "dev.tsv").mkdir()
    with pytest.raises(DataError, match="a folder, not a qrels file"):
        load_dataset(folder, "dev")


def test_training_queries_with_only_grade_zero_are_counted(tmp_path):
    from clpft.mining import mine_negatives

    folder = _folder(tmp_path, ["q1\td1\t1", "q2\td2\t0", "q3\td3\t0", "q3\td0\t0"], split="train")
    examples, stats = mine_negatives(None, load_dataset(folder, "train"), num_negatives=1, strategy="random")
    assert [e.query_id for e in examples] == ["q1"]
    assert stats.queries_without_relevant == 2 and "2 training queries without a relevant" in stats.summary()


def test_run_reports_test_queries_that_are_training_queries(tiny_model_dir, tiny_beir, tmp_path, capsys):
    from clpft.cli import main

    test_qrels = tiny_beir / "qrels" / "test.tsv"
    test_qrels.write_text(test_qrels.read_text() + "q1\td1\t1\nq2\td2\t1\n")
    argv = ["run", "--data", str(tiny_beir), "--out", str(tmp_path / "run"), "--model", str(tiny_model_dir)]
    assert main([*argv, "--num-negatives", "2", "--max-steps", "1", "--val-fraction", "0", "--quiet"]) == 0
    assert "2 of the test split's 4 queries are also train queries" in capsys.readouterr().out


ROW = st.tuples(
    st.sampled_from(["q0", "q1", "q2", "q3", "q9"]),  # q9: unknown
    st.sampled_from(["d0", "d1", "d2", "d3", "d9"]),  # d9: unknown
    st.one_of(
        st.integers(-3, 5).map(str),
        st.sampled_from(["1.0", "0.5", "2.50", "inf", "-inf", "nan", "1e3", "", "one", "3000000000"]),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=12), header=st.booleans())
def test_every_qrels_row_is_used_exactly_counted_or_rejected(tmp_path, rows, header):
    """Property: a file of random rows (unknown ids, grades of every kind, repeats) either loads, and then
    each row is in the qrels with its exact grade or counted among the dropped or repeated rows, or fails
    with one DataError naming the qrels file and a line."""
    lines = (["query-id\tcorpus-id\tscore"] if header else []) + ["\t".join(row) for row in rows]
    folder = _folder(tmp_path, lines)
    try:
        dataset = load_dataset(folder, "test")
    except DataError as error:
        assert error.path.endswith("test.tsv") and (error.line is not None or "no " in error.problem)
        assert "\n" not in str(error)
        return
    used = sum(len(judged) for judged in dataset.qrels.values())
    assert used + dataset.dropped_qrels + dataset.repeated_qrels == len(rows)
    for query, doc, score in rows:
        if query != "q9" and doc != "d9":
            assert dataset.qrels[query][doc] == int(float(score))
    json.dumps(dataset.qrels)  # plain ints
