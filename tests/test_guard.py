"""Guarded training and merging: data that only hurts gives back the start bit for bit; the best state
seen is what is saved; α 0 merges to the start, α 1 to the tuned model; a merged MoE model loads the
three ways MoE models load."""

from __future__ import annotations

import pytest
import torch

import clpft
from clpft.data import TrainExample
from clpft.errors import ClpftError
from clpft.guard import Guard, blend, trainable_state
from clpft.models import save_model
from clpft.training import TrainConfig, split_validation, train_model
from test_moe import TEXTS, assert_loads_three_ways

TOPICS = [
    "protein cell",
    "cancer risk",
    "vitamin heart",
    "blood brain",
    "wing flow",
    "air pressure",
    "shock boundary",
    "heat speed",
    "water light",
    "sun moon",
    "gene mice",
    "drug treatment",
    "glial cells",
    "bone fracture",
    "star light",
    "rain cloud",
    "iron ore",
    "salt water",
    "lung cough",
    "skin burn",
]


def examples() -> list[TrainExample]:
    rows = []
    for i, topic in enumerate(TOPICS):
        others = [TOPICS[(i + k) % len(TOPICS)] for k in (3, 7)]
        rows.append(
            TrainExample(
                f"what causes {topic}",
                [f"a study of {topic} and its causes"],
                [f"a study of {o} and its causes" for o in others],
                [[], []],
                query_id=f"q{i}",
            )
        )
    return rows


def hurtful_examples(fraction: float, seed: int) -> list[TrainExample]:
    """Held-out rows as they are; every training row taught the wrong document as its positive."""
    rows = examples()
    _, held = split_validation(rows, fraction, seed)
    held_ids = {e.query_id for e in held}
    for row in rows:
        if row.query_id not in held_ids:
            row.pos, row.neg = [row.neg[0]], [row.pos[0], row.neg[1]]
    return rows


def test_a_run_on_data_that_only_hurts_returns_the_start_bit_for_bit(caplog):
    model = clpft.load_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(
        moe="none",
        train_only="all",
        learning_rate=1e-3,
        batch_size=2,
        grad_accum=1,
        epochs=2,
        num_negatives=2,
        val_fraction=0.3,
        eval_steps=2,
    )
    result = train_model(model, hurtful_examples(0.3, config.seed), config, show_progress=False)
    assert result.guard["chosen"] == "start"
    later = [h["ndcg@10"] for h in result.val_history if h["step"] > 0]
    assert later and max(later) < result.val_history[0]["ndcg@10"]  # training did hurt
    after = model.state_dict()
    assert all(torch.equal(after[k], start[k]) for k in start)
    assert "no trained state beat the untouched model on the validation split" in caplog.text


def test_the_best_state_seen_is_the_one_saved():
    model = torch.nn.Linear(3, 1)
    scores = iter([0.5, 0.7, 0.9, 0.6])  # step 0, then steps 1, 2, 3
    guard = Guard(model, lambda: {"ndcg@10": next(scores)}, eval_steps=1)
    guard.score_start()
    states = {}
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.add_(1.0)
        states[step] = model.weight.detach().clone()
        guard.after_step(step)
    result = guard.finish(3, "none", training_seconds=1.0)
    assert (result.chosen, result.best_step, result.final_score) == ("step 2", 2, 0.9)
    assert torch.equal(model.weight, states[2])


def test_early_stop_after_patience_evaluations_without_a_new_best():
    model = torch.nn.Linear(2, 1)
    scores = iter([0.5, 0.6, 0.55, 0.58])
    guard = Guard(model, lambda: {"ndcg@10": next(scores)}, eval_steps=1, patience=2)
    guard.score_start()
    assert [guard.after_step(s) for s in (1, 2, 3)] == [False, False, True]
    assert guard.early_stopped_at == 3


def test_merge_alpha_zero_is_the_start_and_one_the_tuned_model():
    model = torch.nn.Linear(4, 3)
    start = trainable_state(model)
    with torch.no_grad():
        model.weight.mul_(3.7).add_(0.1)
    tuned = trainable_state(model)
    assert all(torch.equal(blend(start, tuned, 0.0)[k], start[k]) for k in start)
    assert all(torch.equal(blend(start, tuned, 1.0)[k], tuned[k]) for k in start)
    half = blend(start, tuned, 0.5)
    assert torch.allclose(half["weight"], (start["weight"] + tuned["weight"]) / 2)


def test_merged_training_runs_are_the_start_at_zero_and_the_tuned_run_at_one(tiny_model_dir):
    from test_training import examples as small_examples

    def trained(merge):
        model = clpft.load_model(tiny_model_dir)
        config = TrainConfig(batch_size=1, grad_accum=1, learning_rate=1e-2, epochs=1, num_negatives=2, merge=merge)
        result = train_model(model, small_examples(6), config, show_progress=False)
        return model, result

    none, _ = trained("none")
    one, result_one = trained(1.0)
    zero, result_zero = trained(0.0)
    fresh = clpft.load_model(tiny_model_dir)
    from clpft.moe import upcycle

    assert result_one.guard["merge_alpha"] == 1.0 and result_zero.guard["merge_alpha"] == 0.0
    tuned, ones, zeros = none.state_dict(), one.state_dict(), zero.state_dict()
    assert all(torch.equal(tuned[k], ones[k]) for k in tuned)
    assert any(not torch.equal(tuned[k], zeros[k]) for k in tuned)
    # α 0: every weight is the upcycled start's (the experts are copies of the dense layer, so it computes the
    # dense model's embeddings)
    upcycle(fresh)
    assert torch.allclose(
        zero.encode(TEXTS, convert_to_tensor=True), fresh.encode(TEXTS, convert_to_tensor=True), atol=1e-6
    )


def test_a_merged_moe_model_loads_three_ways(tiny_model_dir, tmp_path):
    from test_training import examples as small_examples

    model = clpft.load_model(tiny_model_dir)
    config = TrainConfig(batch_size=1, grad_accum=1, learning_rate=1e-2, epochs=1, num_negatives=2, merge=0.5)
    result = train_model(model, small_examples(6), config, show_progress=False)
    assert result.guard["chosen"] == "merge alpha=0.5 with the last step"
    want = model.encode(TEXTS, convert_to_tensor=True)
    assert_loads_three_ways(save_model(model, tmp_path / "merged"), want, tmp_path)


def test_merge_options():
    assert TrainConfig(merge="0.3").merge == 0.3
    for bad in ("1.5", "sometimes", -0.1):
        with pytest.raises(ClpftError, match="--merge must be auto, none or a number"):
            TrainConfig(merge=bad)
    with pytest.raises(ClpftError, match="--merge auto chooses"):
        TrainConfig(merge="auto")
    assert TrainConfig(merge="auto", val_fraction=0.2).merge == "auto"
