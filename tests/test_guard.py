"""Guarded training and merging: data that only hurts gives back the start bit for bit; the best state
seen is what is saved; α 0 merges to the start, α 1 to the tuned model; a merged MoE model loads the
three ways MoE models load."""

from __future__ import annotations

import pytest
import torch

import clpft
from clpft.data import TrainExample
from clpft.errors import ClpftError
from clpft.models import save_model
from clpft.training import TrainConfig, train_model
from clpft.training.guard import Candidate, Guard, blend, choose, trainable_state
from clpft.training.validation import split_validation
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
        config = TrainConfig(
            batch_size=1, grad_accum=1, learning_rate=1e-2, epochs=1, num_negatives=2, merge=merge, val_fraction=0.0
        )
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
    config = TrainConfig(
        batch_size=1, grad_accum=1, learning_rate=1e-2, epochs=1, num_negatives=2, merge=0.5, val_fraction=0.0
    )
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
        TrainConfig(merge="auto", val_fraction=0.0)
    assert TrainConfig(merge="auto", val_fraction=0.2).merge == "auto"
    # the default preset's auto, with the validation split (or the guard) turned off: no merge, no error
    assert TrainConfig().merge == "auto" and TrainConfig().val_fraction == 0.1
    assert TrainConfig(val_fraction=0.0).merge == "none" and TrainConfig(guard=False).merge == "none"
    assert TrainConfig(preset="paper").merge == "none" and TrainConfig(preset="paper").val_fraction == 0.0


def test_one_standard_error_rule_prefers_the_candidate_closest_to_the_start():

    queries = [f"q{i}" for i in range(40)]

    def scores(base, spread, seed):
        g = torch.Generator().manual_seed(seed)
        return {q: float(min(1.0, max(0.0, base + spread * torch.randn(1, generator=g).item()))) for q in queries}

    start = scores(0.40, 0.2, 0)
    tuned = {q: min(1.0, v + 0.20) for q, v in start.items()}  # a real gain: far beyond the noise
    # a merge that scores 0.002 lower on average, query by query up and down by 0.03: the same within noise
    half = {q: v - 0.002 + (0.03 if i % 2 else -0.03) for i, (q, v) in enumerate(tuned.items())}
    mean = lambda d: sum(d.values()) / len(d)  # noqa: E731

    candidates = [
        Candidate(mean(start), 0.0, "start", start),
        Candidate(mean(tuned), 1.0, "step 9", tuned),
        Candidate(mean(half), 0.5, "merge alpha=0.5 with step 9", half),
    ]
    assert choose(candidates).label == "merge alpha=0.5 with step 9"  # within one SE of the best, closer
    # a gain the validation split cannot tell from noise does not earn a move away from the start
    wobble = {q: v + (0.01 if i % 2 else -0.008) for i, (q, v) in enumerate(start.items())}
    assert choose([candidates[0], Candidate(mean(wobble), 1.0, "step 3", wobble)]).label == "start"
    # without per-query values: the best score, the start on ties
    plain = [Candidate(0.5, 0.0, "start"), Candidate(0.6, 1.0, "step 2"), Candidate(0.6, 0.5, "merge")]
    assert choose(plain).label == "step 2"
    assert choose([Candidate(0.5, 0.0, "start"), Candidate(0.5, 1.0, "step 2")]).label == "start"


def test_the_guard_evaluates_the_planned_steps_and_stays_within_its_budget():
    """An evaluation costing one step's work: with step 0, the last step and three merges to pay for, 10 of
    the 15 evaluations that 15% of 100 steps affords run in between, spread over the run."""
    from clpft.training.guard import plan_evaluations

    steps = 100
    planned = plan_evaluations(steps, evaluation_cost_in_steps=1.0, budget_share=0.15, closing_evaluations=4)
    assert planned == [9, 18, 27, 36, 45, 55, 64, 73, 82, 91]
    assert plan_evaluations(steps, 4.0, 0.15, 4) == []  # the reserved evaluations alone exceed the share
    assert plan_evaluations(steps, 0.01, 0.15, 4) == list(range(1, steps))  # at most every step

    scores = iter([0.5 + i / 1000 for i in range(100)])  # every state a little better: the merges are scored
    model = torch.nn.Linear(2, 1)
    guard = Guard(model, lambda: {"ndcg@10": next(scores)}, planned_steps=planned)
    guard.score_start()
    for step in range(1, steps + 1):
        guard.after_step(step)
    guard.finish(steps, "auto", training_seconds=float(steps))
    assert [h["step"] for h in guard.history] == [0, *planned, steps]
    assert 1 + len(planned) + 1 + 3 <= 0.15 * steps


def test_closing_evaluations_count_the_merges_finish_scores():
    from clpft.training.guard import MERGE_GRID, closing_merges

    assert closing_merges("auto") == len(MERGE_GRID)
    assert closing_merges(0.5) == 1
    assert closing_merges("none") == 0
    assert closing_merges("auto", select=False) == 0


def topic_rows() -> list[TrainExample]:
    """40 queries the tiny model does not rank perfectly at the start."""
    words = ["protein cell", "cancer risk", "vitamin heart", "blood brain", "wing flow", "air pressure", "sun moon"]
    topics = [f"{words[i % 7]} and {words[i // 7]}" for i in range(40)]
    return [
        TrainExample(
            f"what is {topic}", [f"the study of {topic}"], [f"the study of {topics[(i + 1) % 40]}"] * 2, [[], []]
        )
        for i, topic in enumerate(topics)
    ]


def test_a_slower_machine_evaluates_the_same_steps_and_saves_the_same_model(tiny_model_dir, monkeypatch):
    """The same training twice, once with every step slowed by a sleep (a busy machine): the guard plans its
    evaluations from counted work, so it scores the same steps and saves bit-identical weights. When it
    scheduled on time, the slowed run evaluated more often and kept another state."""
    import time

    from clpft.training import trainer as trainer_module

    words = ["protein cell", "cancer risk", "vitamin heart", "blood brain", "wing flow", "air pressure", "sun moon"]
    topics = [f"{words[i % 7]} and {words[i // 7]}" for i in range(40)]
    rows = [
        TrainExample(
            f"what is {topic}", [f"the study of {topic}"], [f"the study of {topics[(i + 1) % 40]}"] * 2, [[], []]
        )
        for i, topic in enumerate(topics)
    ]
    original = trainer_module.trainer_classes

    def train(delay: float):
        def slowed():
            trainer_class, epoch_callback, guard_callback = original()

            class SlowGuardCallback(guard_callback):
                def on_step_end(self, args, state, control, **kwargs):
                    time.sleep(delay)
                    return super().on_step_end(args, state, control, **kwargs)

            return trainer_class, epoch_callback, SlowGuardCallback

        monkeypatch.setattr(trainer_module, "trainer_classes", slowed)
        model = clpft.load_model(str(tiny_model_dir))
        config = TrainConfig(
            num_negatives=2,
            val_fraction=0.2,
            epochs=4,
            batch_size=4,
            learning_rate=1e-3,
            eval_budget=0.3,
            seed=3,
            merge_grid="0.5",
            ema=0.0,  # few closing evaluations: the budget leaves some for the steps between
        )
        result = train_model(model, rows, config, show_progress=False)
        return {name: value.clone() for name, value in model.state_dict().items()}, result

    quick_weights, quick = train(0.0)
    slow_weights, slow = train(0.3)
    assert [h["step"] for h in slow.val_history] == [h["step"] for h in quick.val_history]
    assert slow.guard["chosen"] == quick.guard["chosen"]
    assert all(torch.equal(quick_weights[name], slow_weights[name]) for name in quick_weights)
    assert slow.guard["plan"] == quick.guard["plan"] and quick.guard["plan"]["planned_steps"]


def test_the_best_rule_keeps_the_highest_score_where_one_se_stays_nearer_the_start():
    start = {f"q{i}": 0.4 + 0.01 * (i % 5) for i in range(40)}
    tuned = {q: v + (0.11 if i % 2 else -0.09) for i, (q, v) in enumerate(start.items())}  # +0.01, noisy
    mean = lambda d: sum(d.values()) / len(d)  # noqa: E731
    candidates = [Candidate(mean(start), 0.0, "start", start), Candidate(mean(tuned), 1.0, "step 4", tuned)]
    assert choose(candidates, "one-se").label == "start"
    assert choose(candidates, "best").label == "step 4"
    assert choose(candidates, "clear-best").label == "start"  # a gain within the noise: stay at the start
    # a clear gain: clear-best goes all the way to the best candidate, one-se stops at the nearest close one
    clear = {q: v + 0.2 + (0.01 if i % 2 else -0.01) for i, (q, v) in enumerate(start.items())}
    close = {q: v - 0.004 + (0.04 if i % 2 else -0.04) for i, (q, v) in enumerate(clear.items())}
    clear_candidates = [
        Candidate(mean(start), 0.0, "start", start),
        Candidate(mean(close), 0.5, "merge alpha=0.5 with step 4", close),
        Candidate(mean(clear), 1.0, "step 4", clear),
    ]
    assert choose(clear_candidates, "clear-best").label == "step 4"
    assert choose(clear_candidates, "one-se").label == "merge alpha=0.5 with step 4"
    with pytest.raises(ValueError, match="rule must be one of one-se, best, clear-best"):
        choose(candidates, "vote")


def test_the_moving_average_is_kept_and_chosen_when_it_scores_best():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    # step 0, steps 1..3 (the last one is the best step), then the average, then the merge grid's two merges
    scores = iter([0.5, 0.6, 0.61, 0.62, 0.8, 0.7, 0.75])
    guard = Guard(model, lambda: {"ndcg@10": next(scores)}, eval_steps=1, ema_decay=0.5, merge_grid=(0.3, 0.6))
    guard.score_start()
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(float(step))
        guard.after_step(step)
    # ema: 0 -> 0.5 -> 1.25 -> 2.125
    assert torch.allclose(guard.ema_state["weight"], torch.full((1, 2), 2.125))
    result = guard.finish(3, "auto", training_seconds=1.0, select=True)
    labels = [c["label"] for c in result.candidates]
    assert labels == [
        "start",
        "step 3",
        "average to step 3",
        "merge alpha=0.3 with average to step 3",
        "merge alpha=0.6 with average to step 3",
    ]
    assert result.chosen == "average to step 3" and result.final_score == 0.8
    assert torch.allclose(model.weight, torch.full((1, 2), 2.125))
    assert all(c["per_query"] is None for c in result.candidates)  # the scorer here gives no per-query values


def test_refit_trains_every_query_to_the_chosen_point_and_applies_the_chosen_merge(tiny_model_dir):
    """With the last step chosen and a fixed merge, --refit is a run on every row (held-out ones too) with no
    validation split, merged with the start by the same α."""
    rows = topic_rows()
    common = dict(
        num_negatives=2, epochs=2, batch_size=4, learning_rate=1e-3, seed=3, eval_budget=0.01, precision="fp32"
    )

    refit_model = clpft.load_model(str(tiny_model_dir))
    config = TrainConfig(**common, val_fraction=0.25, merge="auto", merge_grid="0.5", select="best", refit=True)
    result = train_model(refit_model, rows, config, show_progress=False)
    chosen = result.guard["chosen"]
    last = result.optimizer_steps
    assert chosen in (f"step {last}", f"merge alpha=0.5 with step {last}"), chosen  # training helps to the end
    assert result.guard["refit"]["rows"] == len(rows) and result.examples < len(rows)
    assert result.guard["refit"]["steps"] == result.guard["refit"]["planned_steps"]

    plain_model = clpft.load_model(str(tiny_model_dir))
    alpha = result.guard["merge_alpha"] if result.guard["merge_alpha"] is not None else "none"
    plain = TrainConfig(**common, val_fraction=0.0, merge=alpha)
    train_model(plain_model, rows, plain, show_progress=False)
    refit_weights, plain_weights = refit_model.state_dict(), plain_model.state_dict()
    assert max((refit_weights[k] - plain_weights[k]).abs().max().item() for k in plain_weights) < 1e-5

    unrefit = clpft.load_model(str(tiny_model_dir))
    train_model(unrefit, rows, TrainConfig(**common, val_fraction=0.25, merge="auto", merge_grid="0.5", select="best"))
    assert any(not torch.equal(unrefit.state_dict()[k], refit_weights[k]) for k in refit_weights)
