"""Training: the collator's label tensor, the freezing policy, and short real training runs."""

from __future__ import annotations

import pytest
import torch

from clpft.data import TrainExample
from clpft.errors import ClpftError
from clpft.moe import hf_model_of, upcycle
from clpft.moe.modeling_clpft_moe import MoELinear
from clpft.moe.preparation import set_trainable
from clpft.training import TrainConfig, train_model, validation_regression
from clpft.training.collator import CLPDataCollator, build_dataset
from conftest import SHARED_DATA


def examples(n: int = 6, negatives: int = 2) -> list[TrainExample]:
    words = ["protein cell", "cancer risk", "vitamin heart", "blood brain", "wing flow", "air pressure", "sun moon"]
    out = []
    for i in range(n):
        negs = [f"the study of {words[(i + j + 1) % len(words)]}" for j in range(negatives)]
        own = [[f"what is {words[(i + 1) % len(words)]}"] if j == 0 else [] for j in range(negatives)]
        out.append(
            TrainExample(f"what is {words[i % len(words)]}", [f"the study of {words[i % len(words)]}"], negs, own)
        )
    return out


def test_build_dataset_one_row_per_query_and_skips_short_rows(tiny_model):
    rows = examples(3)
    rows[0].pos.append("a second positive")
    rows[1].neg = rows[1].neg[:1]
    rows[1].own_queries = rows[1].own_queries[:1]
    dataset, skipped = build_dataset(rows, num_negatives=2)
    assert skipped == 1 and len(dataset) == 2
    assert dataset.column_names == ["query", "positives", "negative_1", "negative_2", "own_queries"]
    # the collator draws one positive per row and epoch, a function of (seed, epoch, query)
    collator = CLPDataCollator.for_model(tiny_model, seed=3)
    seen = set()
    for epoch in range(20):
        collator.epoch = epoch
        ids = collator([dataset[0]])["positive_input_ids"][0].tolist()
        seen.add(tuple(i for i in ids if i))
    assert len(seen) == 2
    collator.epoch = 5
    again = CLPDataCollator.for_model(tiny_model, seed=3)
    again.epoch = 5
    assert collator([dataset[0]])["positive_input_ids"].equal(again([dataset[0]])["positive_input_ids"])


def test_collator_maps_each_negative_to_its_queries(tiny_model):
    rows = [
        {"query": "q a", "positive": "p a", "negative_1": "n1", "negative_2": "n2", "own_queries": [["x", "y"], []]},
        {"query": "q b", "positive": "p b", "negative_1": "n3", "negative_2": "n4", "own_queries": [["y"], ["z"]]},
    ]
    batch = CLPDataCollator.for_model(tiny_model)(rows)
    # unique queries x, y, z -> rows 0, 1, 2; y is shared and tokenised once
    assert batch["label"].tolist() == [[[0, 1], [-1, -1]], [[1, -1], [2, -1]]]
    assert batch["own_queries_input_ids"].shape[0] == 3
    assert [k for k in batch if k.endswith("_input_ids")] == [
        "query_input_ids",
        "positive_input_ids",
        "negative_1_input_ids",
        "negative_2_input_ids",
        "own_queries_input_ids",
    ]
    plain = CLPDataCollator.for_model(tiny_model, with_own_queries=False)(rows)
    assert "own_queries_input_ids" not in plain and (plain["label"] == -1).all()


def test_collator_respects_length_limits(tiny_model):
    long = " ".join(["protein"] * 200)
    rows = [{"query": long, "positive": long, "negative_1": long, "own_queries": [[long]]}]
    batch = CLPDataCollator.for_model(tiny_model, query_max_tokens=8, passage_max_tokens=20)(rows)
    assert batch["query_input_ids"].shape[1] == 8 and batch["own_queries_input_ids"].shape[1] == 8
    assert batch["positive_input_ids"].shape[1] == 20


def test_freezing_policy(tiny_model):
    with pytest.raises(ClpftError, match="needs an MoE model"):
        set_trainable(tiny_model, "moe")
    total = sum(p.numel() for p in tiny_model.parameters())
    assert set_trainable(tiny_model, "all") == (total, total)
    hf = hf_model_of(tiny_model)
    dense = sum(p.numel() for layer in hf.encoder.layer for p in layer.intermediate.dense.parameters())
    assert set_trainable(tiny_model, "intermediate")[0] == dense
    upcycle(tiny_model)
    moe = sum(p.numel() for m in hf.modules() if isinstance(m, MoELinear) for p in m.parameters())
    trainable, total = set_trainable(tiny_model, "moe")
    assert trainable == moe and moe == 2 * dense + sum(
        m.router.weight.numel() for m in hf.modules() if isinstance(m, MoELinear)
    )


@pytest.mark.parametrize("loss,batch_size,gradcache", [("clp", 1, 0), ("clp", 3, 0), ("infonce", 2, 0), ("clp", 3, 2)])
def test_training_changes_only_moe_layers(tiny_model, loss, batch_size, gradcache):
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    config = TrainConfig(
        loss=loss,
        batch_size=batch_size,
        grad_accum=1,
        learning_rate=1e-3,
        epochs=1,
        num_negatives=2,
        gradcache_mini_batch=gradcache,
        train_only="moe",
        val_fraction=0.0,
    )
    result = train_model(tiny_model, examples(6), config, show_progress=False)
    # every row once; rows whose positive is another row's negative never share a batch, so at batch 3 the
    # six rows of examples() (row i's first negative is row i+1's positive) need 3 batches, not 2
    assert result.rows_per_epoch == [6]
    assert result.optimizer_steps == result.steps_per_epoch == result.batches_per_epoch[0] >= -(-6 // batch_size)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.loss_history)
    changed = {n for n, p in tiny_model.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert changed, "nothing trained"
    assert all("intermediate.dense" in n for n in changed), changed
    new = {n for n, _ in tiny_model.named_parameters()} - set(before)
    assert new and all("intermediate.dense" in n for n in new)


def test_the_default_preset_trains_with_gradcache_and_the_paper_preset_without(tiny_model):
    """GradCache (8 texts of a column at a time) is the clpft preset's; --preset paper and 0 keep the plain loss."""
    from clpft.losses import CachedCLPLoss, CLPLoss
    from clpft.training import make_loss

    default = make_loss(tiny_model, TrainConfig())
    assert isinstance(default, CachedCLPLoss) and default.mini_batch_size == 8
    assert default.penalty_weight == pytest.approx(0.1)
    for config in (TrainConfig(preset="paper"), TrainConfig(gradcache_mini_batch=0)):
        loss = make_loss(tiny_model, config)
        assert type(loss) is CLPLoss
    assert type(make_loss(tiny_model, TrainConfig(loss="mnrl"))).__name__ == "MultipleNegativesRankingLoss"


def test_hardness_strength_reaches_every_loss_it_applies_to(tiny_model):
    """--hardness-strength (off by default) is given to the CLP and InfoNCE losses, cached or not."""
    from clpft.cli.parser import build_parser
    from clpft.training import make_loss

    assert make_loss(tiny_model, TrainConfig()).hardness_strength == 0.0
    for config in (
        TrainConfig(hardness_strength=5.0),
        TrainConfig(hardness_strength=5.0, gradcache_mini_batch=0),
        TrainConfig(hardness_strength=5.0, loss="infonce", gradcache_mini_batch=0),
    ):
        assert make_loss(tiny_model, config).hardness_strength == 5.0
    args = build_parser().parse_args(["train", "--train", "t.jsonl", "--out", "o", "--hardness-strength", "5"])
    assert args.hardness_strength == 5.0


def test_train_all_without_moe(tiny_model):
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    config = TrainConfig(
        moe="none", train_only="all", grad_accum=1, learning_rate=1e-3, epochs=1, num_negatives=2, val_fraction=0.0
    )
    train_model(tiny_model, examples(4), config, show_progress=False)
    changed = [n for n, p in tiny_model.named_parameters() if not torch.equal(p, before[n])]
    assert any("attention" in n for n in changed) and not any(isinstance(m, MoELinear) for m in tiny_model.modules())


def test_moe_lr_gives_the_moe_layers_their_own_learning_rate(tiny_model_dir):
    import clpft

    for lr, moe_lr in ((1e-3, 0.0), (0.0, 1e-3)):
        model = clpft.load_model(tiny_model_dir)
        upcycle(model)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        config = TrainConfig(
            train_only="all",
            learning_rate=lr,
            moe_learning_rate=moe_lr,
            grad_accum=1,
            epochs=1,
            num_negatives=2,
            warmup_ratio=0.0,
            val_fraction=0.0,
        )
        train_model(model, examples(4), config, show_progress=False)
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        moe = {n for n in before if "intermediate.dense" in n}  # the upcycled layers: experts and routers
        assert moe and changed
        if moe_lr:
            assert changed <= moe
        else:
            assert not changed & moe and any("attention" in n for n in changed)
    with pytest.raises(ClpftError, match="--moe-lr"):
        train_model(
            clpft.load_model(tiny_model_dir),
            examples(2),
            TrainConfig(moe_learning_rate=1e-4, train_only="moe"),
            show_progress=False,
        )


def test_a_run_that_ends_below_the_untouched_model_is_flagged():
    # Cranfield's validation at the main job's budget (tuning.md, round 4): 0.2633 untrained, 0.2251 after
    fell = [{"step": 0, "ndcg@10": 0.2633}, {"step": 28, "ndcg@10": 0.27}, {"step": 56, "ndcg@10": 0.2251}]
    message = validation_regression(fell)
    assert message and "from 0.2633 before training to 0.2251 after" in message and "--preset paper" in message
    assert validation_regression([{"step": 0, "ndcg@10": 0.26}, {"step": 56, "ndcg@10": 0.26}]) is None
    assert (
        validation_regression([{"step": 28, "ndcg@10": 0.3}, {"step": 56, "ndcg@10": 0.2}]) is None
    )  # no step 0 (resumed)
    assert validation_regression([{"step": 0, "ndcg@10": 0.3}]) is None


def test_bad_training_options(tiny_model):
    with pytest.raises(ClpftError, match="--train-only moe needs"):
        train_model(tiny_model, examples(2), TrainConfig(moe="none", train_only="moe"), show_progress=False)
    with pytest.raises(ClpftError, match="no training example has 5 negatives"):
        train_model(tiny_model, examples(2), TrainConfig(num_negatives=5), show_progress=False)


def test_a_model_already_moe_is_reused_as_stated_or_refused(tiny_model, capsys):
    upcycle(tiny_model, where="intermediate", num_experts=3, experts_per_token=2)
    for asked in (
        {"num_experts": 2},
        {"experts_per_token": 1, "num_experts": 3},
        {"moe": "output", "num_experts": 3, "experts_per_token": 2},
    ):
        with pytest.raises(ClpftError, match="already MoE .--moe intermediate --num-experts 3 --experts-per-token 2."):
            train_model(tiny_model, examples(2), TrainConfig(num_negatives=2, **asked), show_progress=False)
    for asked in ({"num_experts": 3, "experts_per_token": 2}, {"moe": "none"}):
        train_model(tiny_model, examples(2), TrainConfig(num_negatives=2, max_steps=1, **asked), show_progress=False)
        assert (
            "the model is already MoE (--moe intermediate --num-experts 3 --experts-per-token 2): its experts and "
            "routers are trained as they are" in capsys.readouterr().out
        )
    assert all(m.num_experts == 3 for m in hf_model_of(tiny_model).modules() if isinstance(m, MoELinear))


def test_option_ranges_are_checked_when_the_config_is_built():
    for bad in (
        {"penalty_weight": 1.5},
        {"temperature": 0},
        {"batch_size": 0},
        {"warmup_ratio": 1.0},
        {"num_experts": 1, "experts_per_token": 2},
        {"epochs": float("nan")},
        {"max_steps": 0},
    ):
        with pytest.raises(ClpftError):
            TrainConfig(**bad)


def test_gradient_checkpointing_gives_the_same_update_and_bf16_runs(tiny_model_dir):
    import clpft

    trained = []
    for checkpointing in (False, True):
        model = clpft.load_model(tiny_model_dir)
        config = TrainConfig(
            grad_accum=1,
            learning_rate=1e-3,
            epochs=1,
            num_negatives=2,
            max_steps=2,
            gradient_checkpointing=checkpointing,
        )
        train_model(model, examples(4), config, show_progress=False)
        trained.append({n: p.detach().clone() for n, p in model.named_parameters()})
    assert trained[0].keys() == trained[1].keys()
    for name in trained[0]:
        torch.testing.assert_close(trained[0][name], trained[1][name], rtol=1e-5, atol=1e-6)

    model = clpft.load_model(tiny_model_dir)
    result = train_model(
        model,
        examples(4),
        TrainConfig(grad_accum=1, learning_rate=1e-3, epochs=1, num_negatives=2, max_steps=2, precision="bf16"),
        show_progress=False,
    )
    assert result.optimizer_steps == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in result.loss_history)
    with pytest.raises(ClpftError, match="--precision"):
        train_model(model, examples(2), TrainConfig(precision="fp8"), show_progress=False)


def test_tuning_benchmark_scores_runs_on_a_validation_split(tiny_model_dir, tiny_beir, tmp_path):
    """benchmarks/studies/tune_presets.py: each run is scored on held-out *training* queries (the test split is
    never read), lr 0 gives the base model's score, and finished runs are skipped on a second call."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    (tiny_beir / "qrels" / "test.tsv").write_text("not read\n")  # a test split it read would fail to parse
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "studies" / "tune_presets.py"
    out = tmp_path / "tune"
    command = [
        sys.executable,
        str(script),
        "--data",
        str(tiny_beir),
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--max-train-queries",
        "6",
        "--val-fraction",
        "0.5",
        "--run",
        "base:lr=0",
        "--run",
        "ance-clp-moe:lr=1e-3,num_negatives=2",
        "--run",
        "ance-clp-moe:lr=0,num_negatives=2",
        "--neg-queries",
        "qrels,extractive",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = {r["run"]: r for r in json.loads((out / "tuning.json").read_text())["runs"]}
    assert list(runs) == ["base:lr=0", "ance-clp-moe:lr=1e-3,num_negatives=2", "ance-clp-moe:lr=0,num_negatives=2"]
    assert all(r["val_queries"] == 3 and r["train_examples"] == 3 for r in runs.values())
    # an upcycled MoE that does not train computes what the base model computes
    assert runs["ance-clp-moe:lr=0,num_negatives=2"]["val_ndcg@10"] == pytest.approx(
        runs["base:lr=0"]["val_ndcg@10"], abs=1e-6
    )
    assert "Budget: 3 runs" in (out / "tuning.md").read_text()
    # --neg-queries reaches the mining: with the extractive fallback every negative has a query of its own
    assert "negatives' own queries from qrels,extractive" in (out / "tuning.md").read_text()
    mined = [json.loads(line) for line in (out / "tune.jsonl").read_text().splitlines()]
    assert all(queries for example in mined for queries in example["neg_q"])
    stamp = (out / "tuning.json").stat().st_mtime_ns
    assert subprocess.run(command, capture_output=True, timeout=600).returncode == 0
    assert (out / "tuning.json").stat().st_mtime_ns == stamp


@pytest.mark.skipif(not (SHARED_DATA / "cranfield").exists(), reason="shared datasets not present")
def test_held_out_queries_never_reach_a_training_row(tiny_model):
    """Cranfield's training split, mined with its own qrels (random negatives, so no model is needed: which
    negatives are drawn does not matter, only that their own queries come from the same qrels)."""
    from clpft.data import load_dataset
    from clpft.mining import mine_negatives
    from clpft.training.validation import split_validation

    examples, _ = mine_negatives(
        None, load_dataset(SHARED_DATA / "cranfield", "train"), num_negatives=4, strategy="random", seed=0
    )
    train, held_out = split_validation(examples, 0.2, seed=42)
    held_texts, held_ids = {e.query for e in held_out}, {e.query_id for e in held_out}
    leaked_before = sum(
        1 for e in examples if e.query not in held_texts for own in e.own_queries for q in own if q in held_texts
    )
    assert leaked_before > 20  # the leak this guards against is there in the mined file
    assert len(train) + len(held_out) == len(examples) and held_out
    for row in train:
        assert row.query not in held_texts and row.query_id not in held_ids
        assert not {q for own in row.own_queries for q in own} & held_texts
        assert [source == "none" for source in row.own_query_sources] == [not own for own in row.own_queries]
    # the other queries stay: only held-out ones are taken out
    kept = sum(len(own) for row in train for own in row.own_queries)
    assert kept == sum(len(own) for e in examples if e.query not in held_texts for own in e.own_queries) - leaked_before

    subset = examples[:40]
    result = train_model(
        tiny_model, subset, TrainConfig(num_negatives=4, val_fraction=0.2, max_steps=1), show_progress=False
    )
    _, held_small = split_validation(subset, 0.2, 42)
    texts = {e.query for e in held_small}
    expected = sum(1 for e in subset if e.query not in texts for own in e.own_queries for q in own if q in texts)
    assert result.val_own_queries_removed == expected
