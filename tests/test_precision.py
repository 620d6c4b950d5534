"""--precision: auto resolves to bf16 only where the hardware has it, encoding follows the command's
setting, and the validation corpus sample keeps every judged document."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clpft import precision
from clpft.mining.encode import encode_texts
from clpft.training.validation import sample_corpus

TEXTS = ["alpha beta gamma delta", "the quick brown fox jumps", "retrieval of dense passages", "a b c d e f g"]


def test_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert precision.resolve("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert precision.resolve("auto", "cpu") == "fp32"
    assert precision.resolve("bf16", "cpu") == "bf16"  # asked for explicitly: given, native or not
    assert isinstance(precision.autocast("cpu", "auto"), type(precision.autocast("cpu", "fp32")))
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve("int4", "cpu")


def test_encoding_runs_at_the_commands_precision(tiny_model):
    with precision.use("fp32"):
        full = encode_texts(tiny_model, TEXTS, "document", 32)
        again = encode_texts(tiny_model, TEXTS, "document", 32)
    with precision.use("bf16"):
        half = encode_texts(tiny_model, TEXTS, "document", 32)
    assert full.dtype == half.dtype == np.float32
    np.testing.assert_array_equal(full, again)
    cosines = (full * half).sum(axis=1)
    assert not np.array_equal(full, half)  # bf16 products really ran
    assert cosines.min() > 0.99  # and changed the embeddings only by rounding
    assert precision.current() == "auto"  # the block's setting does not outlive it


def test_training_records_what_auto_resolved_to(mined, tiny_model_dir, tmp_path, monkeypatch):
    from clpft.cli import main

    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    out = tmp_path / "model"
    code = main(
        ["train", "--train", str(mined), "--out", str(out), "--model", str(tiny_model_dir), "--max-steps", "1"]
        + ["--quiet", "--num-negatives", "2"]
    )
    assert code == 0
    training = json.loads((out / "training.json").read_text())
    assert training["precision"] == "fp32"
    assert training["config"]["precision"] == "auto"


def test_validation_corpus_sample_keeps_the_judged_documents():
    corpus = {f"d{i}": f"text {i}" for i in range(100)}
    pool = {"d3": "text 3", "d97": "text 97", "t:gone": "not in the corpus"}
    sample = sample_corpus(corpus, pool, 10, seed=1)
    assert len(sample) == 10 and {"d3", "d97"} <= set(sample) and "t:gone" not in sample
    assert sample == sample_corpus(corpus, pool, 10, seed=1)
    assert sample_corpus(corpus, pool, 200, seed=1) is corpus


def test_bf16_autocast_reaches_the_guards_evaluations(monkeypatch):
    from clpft.training.guard import Guard

    seen = []
    model = torch.nn.Linear(2, 2)
    guard = Guard(
        model,
        lambda: (
            seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            or {"ndcg@10": 0.5}
        ),
        precision=lambda: precision.autocast("cpu", "bf16"),
    )
    guard.score_start()
    assert seen == [torch.bfloat16]


def test_a_model_trained_in_bf16_comes_back_computing_in_fp32(tiny_model_dir):
    """accelerate wraps forward() in its autocast for mixed precision; the trained model must not keep it."""
    import clpft
    from clpft.training import TrainConfig, train_model
    from test_training import examples as small_examples

    model = clpft.load_model(tiny_model_dir)
    config = TrainConfig(max_steps=1, num_negatives=2, val_fraction=0.0, precision="bf16", learning_rate=1e-3)
    train_model(model, small_examples(6), config, show_progress=False)
    from clpft.moe import upcycle

    copy = clpft.load_model(tiny_model_dir)
    upcycle(copy)
    copy.load_state_dict(model.state_dict())
    with precision.use("fp32"):
        got = encode_texts(model, TEXTS, "document", 32)
        want = encode_texts(copy, TEXTS, "document", 32)
    np.testing.assert_allclose(got, want, atol=1e-6)
