"""The packaged all-MiniLM-L6-v2 on a small slice of the real SciFact data, end to end."""

from __future__ import annotations

import json
import random

import pytest

from clpft.cli import main
from clpft.cli.pipeline import RunOptions, run
from clpft.data import load_dataset
from clpft.training import TrainConfig
from conftest import SHARED_DATA, write_beir

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "scifact").exists(), reason="shared datasets not present")


@pytest.fixture(scope="module")
def scifact_slice(tmp_path_factory):
    """12 train + 10 test queries, their relevant documents and 80 others (a few MB less to encode)."""
    train = load_dataset(SHARED_DATA / "scifact", "train")
    test = load_dataset(SHARED_DATA / "scifact", "test")
    rng = random.Random(0)
    train_q = rng.sample(sorted(train.qrels), 12)
    test_q = rng.sample(sorted(test.qrels), 10)
    docs = {d for q in train_q for d in train.qrels[q]} | {d for q in test_q for d in test.qrels[q]}
    docs |= set(rng.sample(sorted(train.corpus), 80))
    corpus = [{"_id": d, "title": train.corpus[d].title, "text": train.corpus[d].text} for d in sorted(docs)]
    queries = [{"_id": q, "text": train.queries[q]} for q in train_q + test_q]
    qrels = {
        "train": [(q, d, g) for q in train_q for d, g in train.qrels[q].items()],
        "test": [(q, d, g) for q in test_q for d, g in test.qrels[q].items()],
    }
    return write_beir(tmp_path_factory.mktemp("scifact") / "slice", corpus, queries, qrels)


def test_run_with_packaged_model_and_eval_agree(scifact_slice, tmp_path):
    out = tmp_path / "run"
    report = run(RunOptions(data=str(scifact_slice), out=str(out), quiet=True, train=TrainConfig(epochs=1)))
    assert {"metrics.json", "train.jsonl", "model", "manifest.json", "base_metrics.json"} <= {
        p.name for p in out.iterdir()
    }
    assert report["mining"]["queries"] == 12 and report["mining"]["negatives"] == 48
    # the default: every weight trains beside the upcycled MoE layers (MiniLM has 22.7M weights dense), guarded
    assert report["training"]["trainable_parameters"] == report["training"]["total_parameters"] > 25_000_000
    # 10% of the 12 training queries (--val-fraction 0.1) are held out for the guard
    assert report["training"]["val_queries"] == 1 and report["training"]["guard"]["chosen"]
    base = report["base"]["metrics"]
    assert 0.3 < base["ndcg@10"] <= 1.0  # the real pretrained model retrieves well

    # `clpft eval` on the saved model gives exactly the run's fine-tuned numbers
    metrics_file = tmp_path / "eval.json"
    assert (
        main(
            ["eval", "--data", str(scifact_slice), "--model", str(out / "model"), "--out", str(metrics_file), "--quiet"]
        )
        == 0
    )
    evaluated = json.loads(metrics_file.read_text())
    for name, value in report["finetuned"]["metrics"].items():
        assert evaluated["metrics"][name] == pytest.approx(value, abs=1e-6)
    # and on the base model, exactly the run's "before" numbers
    assert main(["eval", "--data", str(scifact_slice), "--out", str(tmp_path / "base.json"), "--quiet"]) == 0
    base_eval = json.loads((tmp_path / "base.json").read_text())["metrics"]
    for name, value in base.items():
        assert base_eval[name] == pytest.approx(value, abs=1e-6)
