"""``train_model``: prepare the model (clpft.moe.preparation), carve the guard's validation split, build the
dataset, collator, loss and trainer, train, let the guard choose the saved state, and (``--refit``) train
again on every training query to the chosen point.

The loop itself is sentence-transformers' ``SentenceTransformerTrainer`` (a transformers Trainer, set up in
clpft.training.trainer); clpft adds what it does not have: the negatives' queries travel through the collator
to CLPLoss, queries and passages get their own length limits, only the chosen layers train, and the guard.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer

from clpft.data.batching import NoFalseNegativesBatchSampler
from clpft.data.trainset import TrainExample
from clpft.errors import ClpftError
from clpft.losses import CachedCLPLoss, CLPLoss, InfoNCELoss
from clpft.moe.modeling_clpft_moe import MoELinear
from clpft.moe.preparation import prepare_model
from clpft.options import TrainConfig, parse_grid
from clpft.precision import autocast
from clpft.precision import resolve as resolve_precision
from clpft.training import trainer as trainer_module
from clpft.training.checkpoints import last_complete_checkpoint, remove_checkpoint
from clpft.training.collator import CLPDataCollator, build_dataset
from clpft.training.guard import Guard, blend, closing_merges, load_state, plan_evaluations, trainable_state
from clpft.training.runtime import bound_malloc
from clpft.training.validation import ValidationRanking, count_own_queries, split_validation

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    trainable_parameters: int
    total_parameters: int
    examples: int
    skipped_queries: int
    optimizer_steps: int
    seconds: float
    loss_history: list[dict[str, float]]
    val_history: list[dict[str, float]] = field(default_factory=list)  # {"step", "ndcg@10", ...} per evaluation
    val_queries: int = 0
    world_size: int = 1  # processes that trained together (DDP under torchrun / accelerate launch)
    steps_per_epoch: int = 0  # optimizer steps the trainer plans per epoch: ceil(batches per epoch / grad_accum)
    batches_per_epoch: list[int] = field(default_factory=list)  # batches this process really trained on, by epoch
    rows_per_epoch: list[int] = field(default_factory=list)  # training rows in them (a resumed run: since the resume)
    val_own_queries_removed: int = 0  # held-out query texts taken out of training rows' negatives' own queries
    guard: dict[str, Any] = field(default_factory=dict)  # what was saved and why (clpft.training.guard.GuardResult)
    precision: str = "fp32"  # what --precision resolved to on this machine ("auto" -> "bf16" or "fp32")

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def make_loss(model: SentenceTransformer, config: TrainConfig) -> torch.nn.Module:
    hardness = config.hardness_strength
    if config.gradcache_mini_batch > 0 and config.loss in ("clp", "infonce"):
        weight = config.penalty_weight if config.loss == "clp" else 0.0
        return CachedCLPLoss(
            model, weight, config.temperature, mini_batch_size=config.gradcache_mini_batch, hardness_strength=hardness
        )
    if config.loss == "clp":
        return CLPLoss(
            model, penalty_weight=config.penalty_weight, temperature=config.temperature, hardness_strength=hardness
        )
    if config.loss == "infonce":
        return InfoNCELoss(model, temperature=config.temperature, hardness_strength=hardness)
    if config.loss == "mnrl":
        # sentence-transformers' own loss with its own defaults (scale 20): what users run otherwise.
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        return MultipleNegativesRankingLoss(model)
    raise ClpftError(f"--loss must be clp, infonce or mnrl, got {config.loss!r}")


@dataclass
class _Parts:
    """What one training needs besides the model: its rows, loss, collator and schedule."""

    dataset: Any
    skipped: int  # rows without enough negatives, left out
    loss: torch.nn.Module
    collator: CLPDataCollator
    world: int  # processes training together
    steps_per_epoch: int
    total_steps: int


def train_model(
    model: SentenceTransformer,
    examples: list[TrainExample],
    config: TrainConfig,
    show_progress: bool = True,
    val_corpus: dict[str, str] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` in place on ``examples`` as ``config`` says (upcycling it to MoE first if asked).
    With ``config.val_fraction`` the held-out queries rank ``val_corpus`` (id -> text) when given, else the
    pool of their positives and negatives."""
    from transformers import set_seed

    check_config(config)
    bound_malloc()  # as the `clpft` command does (CLPFT_MALLOC; clpft.training.runtime)
    set_seed(config.seed)
    trainable, total = prepare_model(model, config)
    print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.1f}%)", flush=True)
    rows, val_rows, evaluator, own_removed = carve_validation(examples, config, val_corpus)
    parts = training_parts(model, rows, config)
    resume_from = checkpoint_to_resume(config)
    precision = resolve_precision(config.precision, model.device.type)
    with contextlib.ExitStack() as stack:
        scratch = config.checkpoint_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="clpft-trainer-"))
        plan = (
            evaluation_plan(model, evaluator, parts.dataset, config, parts.total_steps, parts.collator.with_own_queries)
            if evaluator is not None and not config.eval_steps
            else {}
        )
        guard = Guard(
            model,
            (lambda: evaluator(model)) if evaluator is not None else None,
            precision=lambda: autocast(model.device.type, precision),
            planned_steps=plan.get("planned_steps", []),
            eval_steps=config.eval_steps,
            patience=config.patience,
            ema_decay=config.ema,
            merge_grid=parse_grid(config.merge_grid),
            rule=config.select,
        )
        trainer, seconds = run_training(model, parts, config, guard, scratch, precision, show_progress, resume_from)
        chosen = choose_saved_state(guard, trainer.state.global_step, config, seconds, plan, evaluator is not None)
        if config.refit and evaluator is not None and config.guard and chosen.chosen != "start":
            chosen.refit = _refit(model, examples, config, guard, chosen, parts.total_steps, precision, scratch)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    epochs_run = sorted(trainer.batches_by_epoch)
    return TrainResult(
        trainable,
        total,
        len(parts.dataset),
        parts.skipped,
        trainer.state.global_step,
        round(seconds, 2),
        loss_history(trainer),
        guard.history,
        len(val_rows),
        parts.world,
        steps_per_epoch=parts.steps_per_epoch,
        batches_per_epoch=[trainer.batches_by_epoch[e] for e in epochs_run],
        rows_per_epoch=[trainer.rows_by_epoch[e] for e in epochs_run],
        val_own_queries_removed=own_removed,
        guard=dataclasses.asdict(chosen),
        precision=precision,
    )


def check_config(config: TrainConfig) -> None:
    """What TrainConfig's own checks cannot see alone: the machine, MoE beside its learning rate, checkpoints."""
    # (the choices of --moe, --precision, --loss ... are TrainConfig's own check: clpft.options.check_choices)
    if config.precision == "fp16" and not torch.cuda.is_available():
        raise ClpftError("--precision fp16 needs a CUDA GPU (use bf16 on a CPU)")
    if config.moe_learning_rate is not None and (config.moe == "none" or config.train_only != "all"):
        raise ClpftError(
            "--moe-lr is the MoE layers' learning rate when every weight trains: it needs --moe intermediate "
            "or output and --train-only all (otherwise --lr is theirs)"
        )
    if config.save_steps and not config.checkpoint_dir:
        raise ClpftError("checkpoints (--save-steps) need a checkpoint folder")


def carve_validation(
    examples: list[TrainExample], config: TrainConfig, val_corpus: dict[str, str] | None
) -> tuple[list[TrainExample], list[TrainExample], ValidationRanking | None, int]:
    """(training rows, held-out rows, the ranking that scores the held-out queries or None, how many held-out
    query texts left the training rows' negatives' own queries)."""
    own_before = count_own_queries(examples)
    rows, val_rows = split_validation(examples, config.val_fraction, config.seed)
    own_removed = own_before - count_own_queries(rows) - count_own_queries(val_rows)
    if own_removed:
        print(
            f"validation: {own_removed} held-out query texts removed from the training rows' negatives' own queries",
            flush=True,
        )
    if not val_rows:
        return rows, val_rows, None, own_removed
    evaluator = ValidationRanking(
        val_rows,
        val_corpus,
        other_examples=rows,
        query_max_tokens=config.query_max_tokens,
        passage_max_tokens=config.passage_max_tokens,
        seed=config.seed,
    )
    print(f"validation: {len(val_rows)} held-out training queries (--val-fraction {config.val_fraction})", flush=True)
    return rows, val_rows, evaluator, own_removed


def training_parts(model: SentenceTransformer, rows: list[TrainExample], config: TrainConfig) -> _Parts:
    """The dataset, loss and collator for ``rows``, and the schedule's length in optimizer steps."""
    dataset, skipped = build_dataset(rows, config.num_negatives)
    loss = make_loss(model, config)
    collator = CLPDataCollator.for_model(
        model,
        config.query_max_tokens,
        config.passage_max_tokens,
        with_own_queries=getattr(loss, "uses_own_queries", False),
        max_queries_per_negative=config.max_queries_per_negative,
        seed=config.seed,
    )
    # The sampler decides the batches (with conflicts, more than len(dataset) / batch_size), the trainer
    # takes ceil(batches / world) per process (accelerate's even sharding) and steps every grad_accum.
    # torchrun sets WORLD_SIZE; the process group itself starts only with the training arguments.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    batches = (
        len(NoFalseNegativesBatchSampler(dataset, config.batch_size, False, seed=config.seed, world_size=world))
        if config.batch_size > 1
        else len(dataset)
    )
    steps_per_epoch = math.ceil(math.ceil(batches / world) / config.grad_accum)
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(steps_per_epoch * config.epochs)
    return _Parts(dataset, skipped, loss, collator, world, steps_per_epoch, total_steps)


def checkpoint_to_resume(config: TrainConfig) -> Path | None:
    """With --resume: the last complete checkpoint, or None (train from the start) when none was finished."""
    if not config.resume:
        return None
    if not config.checkpoint_dir or not Path(config.checkpoint_dir).is_dir():
        raise ClpftError(f"nothing to resume: no checkpoint folder {config.checkpoint_dir}")
    resume_from = resume_checkpoint(config.checkpoint_dir)
    if resume_from is None:  # killed while writing the first checkpoint: nothing was lost but its steps
        print(f"no complete checkpoint in {config.checkpoint_dir}: training from the start", flush=True)
    else:
        print(f"resuming from {resume_from}", flush=True)
    return resume_from


def run_training(
    model: SentenceTransformer,
    parts: _Parts,
    config: TrainConfig,
    guard: Guard,
    scratch: str,
    precision: str,
    show_progress: bool,
    resume_from: Path | None = None,
):
    """Train with sentence-transformers' trainer, the guard watching (step 0 scored first). Returns (trainer,
    seconds)."""
    from accelerate.utils import extract_model_from_parallel
    from transformers import set_seed

    args = _training_arguments(model, config, scratch, parts.total_steps, precision, show_progress)
    trainer = _trainer(model, args, parts.dataset, parts.loss, parts.collator, guard, show_progress)
    guard.score_start()  # before train(): on a resume, too, the model still holds the start's weights here
    started = time.perf_counter()
    set_seed(config.seed)  # dropout draws from here on depend on the seed alone, not on what ran before
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - started
    # accelerate wraps forward() in its autocast for mixed precision and leaves it there: unwrap it, so the
    # model handed back computes in the precision its caller asks for (an fp32 evaluation stays fp32).
    extract_model_from_parallel(model, keep_fp32_wrapper=False)
    return trainer, seconds


def choose_saved_state(guard: Guard, steps: int, config: TrainConfig, seconds: float, plan: dict, validated: bool):
    """The guard puts the chosen weights into the model; one line says what was saved (and a warning when it is
    the start, or, without the guard, when training ended below it). Returns the GuardResult."""
    chosen = guard.finish(steps, config.merge, seconds - guard.eval_seconds + guard.step_zero_seconds, config.guard)
    chosen.plan = plan
    if validated:
        final = chosen.final_score if chosen.final_score is not None else float("nan")
        print(
            f"validation: saved {chosen.chosen} (nDCG@10 {final:.4f}; step 0 {chosen.start_score:.4f}); "
            f"evaluation took {100 * chosen.eval_share:.0f}% of the training time",
            flush=True,
        )
        message = guard.message(chosen) if config.guard else validation_regression(guard.history)
        if message:
            logger.warning(message)
    return chosen


def loss_history(trainer) -> list[dict[str, float]]:
    """The trainer's logged training rows (loss, CLP's two terms, lr, gradient norm), without its other logs."""
    kept = ("step", "epoch", "loss", "infonce", "penalty", "learning_rate", "grad_norm")
    return [{k: v for k, v in entry.items() if k in kept} for entry in trainer.state.log_history if "loss" in entry]


def _refit(
    model: SentenceTransformer,
    every_example: list[TrainExample],
    config: TrainConfig,
    guard: Guard,
    chosen,
    planned_steps: int,
    precision: str,
    scratch: str,
) -> dict[str, Any]:
    """``--refit``: train again from the start on every training query, the held-out ones included, to the
    point of the schedule the guard chose (the same share of the same number of epochs), then apply the
    chosen merge. The held-out queries served to choose the stopping point and α; once chosen, a model that
    has also learned from them is the better one to hand over (as a refit after cross-validation is)."""
    uses_average = "average" in chosen.chosen
    stop_share = 1.0 if uses_average else chosen.best_step / planned_steps
    load_state(model, guard.start)
    refit_config = dataclasses.replace(config, save_steps=0)  # a refit is redone whole, never resumed
    parts = training_parts(model, every_example, refit_config)
    stop_at = max(1, round(stop_share * parts.total_steps))
    follower = Guard(model, None, ema_decay=config.ema if uses_average else 0.0, stop_at_step=stop_at)
    print(
        f"refit: {len(parts.dataset)} rows (every training query), {stop_at} of {parts.total_steps} steps", flush=True
    )
    trainer, seconds = run_training(model, parts, refit_config, follower, scratch, precision, show_progress=False)
    if uses_average:
        load_state(model, follower.ema_state)
    if chosen.merge_alpha is not None:
        load_state(model, blend(guard.start, trainable_state(model), chosen.merge_alpha))
    return {
        "rows": len(parts.dataset),
        "steps": trainer.state.global_step,
        "planned_steps": parts.total_steps,
        "seconds": round(seconds, 2),
    }


def _training_arguments(
    model: SentenceTransformer, config: TrainConfig, scratch: str, total_steps: int, precision: str, show_progress: bool
):
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    return SentenceTransformerTrainingArguments(
        output_dir=scratch,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        learning_rate_mapping=_moe_learning_rates(model, config.moe_learning_rate),
        warmup_steps=int(config.warmup_ratio * total_steps),
        weight_decay=config.weight_decay,
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=None,  # clpft rotates, counting complete checkpoints only (clpft.training.checkpoints)
        report_to="none",
        logging_steps=config.logging_steps or max(1, total_steps // 20),
        disable_tqdm=not show_progress,
        dataloader_drop_last=False,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,
        # In-batch negatives: no row's positive may be another row's positive or negative (clpft.data.batching).
        batch_sampler=NoFalseNegativesBatchSampler if config.batch_size > 1 else BatchSamplers.BATCH_SAMPLER,
        bf16=precision == "bf16",
        use_cpu=precision == "bf16" and not torch.cuda.is_available(),  # the trainer's way to allow CPU bf16
        fp16=precision == "fp16",
        # non-reentrant checkpointing: gradients still reach the trained layers when the embeddings are frozen
        **_checkpointing_args(config.gradient_checkpointing),
    )


def _trainer(model: SentenceTransformer, args, dataset, loss, collator: CLPDataCollator, guard: Guard, show_progress):
    """sentence-transformers' trainer with clpft's callbacks: the collator's epoch and the guard."""
    trainer_class, epoch_callback, guard_callback = trainer_module.trainer_classes()
    if not model.model_card_data.widget:
        # sentence-transformers' trainer otherwise scans up to 1,000 rows, behind a progress bar nothing
        # switches off, for the example its model card shows; the first row serves as well.
        first = dataset[0]
        model.model_card_data.widget = [
            {"source_sentence": first["query"], "sentences": [first["positives"][0], first["negative_1"]]}
        ]
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, loss=loss, data_collator=collator)
    trainer.add_callback(epoch_callback(collator))
    trainer.add_callback(guard_callback(guard))
    if not show_progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


def evaluation_plan(
    model: SentenceTransformer,
    evaluator: ValidationRanking,
    dataset,
    config: TrainConfig,
    total_steps: int,
    uses_own_queries: bool,
) -> dict[str, Any]:
    """The steps the guard evaluates (``clpft.training.guard.plan_evaluations``), from counted work rather than time, so
    that a busier or slower machine evaluates the same steps: an evaluation encodes the validation corpus and
    queries once (forward only); an optimizer step embeds ``batch_size x grad_accum`` rows (query, one
    positive, the negatives and, for CLP, their own queries) forward and backward, which costs about three
    forward passes, four with GradCache (it embeds every text twice). Token counts use the model's tokenizer
    and length limits, as encoding and the collator do."""
    from clpft.mining.encode import token_lengths

    tokenizer = model.tokenizer
    limit = model.max_seq_length or 512
    query_limit, passage_limit = min(config.query_max_tokens, limit), min(config.passage_max_tokens, limit)
    evaluation_tokens = sum(token_lengths(tokenizer, list(evaluator.corpus.values()), passage_limit)) + sum(
        token_lengths(tokenizer, list(evaluator.queries.values()), query_limit)
    )
    negatives = [c for c in dataset.column_names if c.startswith("negative_")]
    row_tokens = sum(token_lengths(tokenizer, dataset["query"], query_limit)) + sum(
        token_lengths(tokenizer, [positives[0] for positives in dataset["positives"]], passage_limit)
    )
    for column in negatives:
        row_tokens += sum(token_lengths(tokenizer, dataset[column], passage_limit))
    if uses_own_queries:
        own = [
            q for row in dataset["own_queries"] for queries in row for q in queries[: config.max_queries_per_negative]
        ]
        row_tokens += sum(token_lengths(tokenizer, own, query_limit)) if own else 0
    passes = 3 + (config.gradcache_mini_batch > 0)
    step_tokens = passes * row_tokens / len(dataset) * config.batch_size * config.grad_accum
    cost = evaluation_tokens / step_tokens
    closing = 1 + closing_merges(config.merge, config.guard, parse_grid(config.merge_grid), config.ema > 0)
    return {
        "evaluation_tokens": evaluation_tokens,
        "step_tokens": round(step_tokens),
        "evaluation_cost_in_steps": round(cost, 4),
        "budget_share": config.eval_budget,
        "planned_steps": plan_evaluations(total_steps, cost, config.eval_budget, closing),
    }


def resume_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint in ``folder``; newer incomplete ones (a crash while writing one) are
    named in one line each, with the reason, and removed so that they never count as checkpoints."""
    checkpoint, skipped = last_complete_checkpoint(folder)
    for path, reason in skipped:
        print(f"skipping {path}: {reason}; removed", flush=True)
        remove_checkpoint(path)
    return checkpoint


def _moe_learning_rates(model: SentenceTransformer, learning_rate: float | None) -> dict[str, float]:
    """sentence-transformers' ``learning_rate_mapping`` (parameter-name regex -> lr) that gives every MoE
    layer ``learning_rate``: the new layers can move faster than the pre-trained weights around them."""
    if learning_rate is None:
        return {}
    names = [name for name, module in model.named_modules() if isinstance(module, MoELinear)]
    # The trainer sees the loss's parameter names ("model.0.auto_model...."): match a whole dotted prefix.
    return {r"(^|\.)(" + "|".join(re.escape(name) for name in names) + r")\.": learning_rate}


def validation_regression(val_history: list[dict[str, float]]) -> str | None:
    """A warning when the trained model scores below the untouched one (step 0) on the validation split:
    the training pairs or the settings hurt this model on this data (on Cranfield, clpft's default preset
    did; benchmarks/results/tuning.md, round 4). None when there is no step 0 or no drop."""
    if len(val_history) < 2 or val_history[0]["step"] != 0:
        return None
    before, after = val_history[0]["ndcg@10"], val_history[-1]["ndcg@10"]
    if after >= before:
        return None
    return (
        f"validation nDCG@10 fell from {before:.4f} before training to {after:.4f} after: on the held-out "
        "queries the untouched model is better; try --preset paper or a lower --lr"
    )


def _checkpointing_args(enabled: bool) -> dict[str, Any]:
    # transformers renamed gradient_checkpointing to activation_checkpointing (the old name warns, then goes in v6).
    from sentence_transformers import SentenceTransformerTrainingArguments

    fields = SentenceTransformerTrainingArguments.__dataclass_fields__
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}
