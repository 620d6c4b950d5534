"""Training: dataset and collator for CLP, the freezing policy, and sentence-transformers' trainer.

The loop itself is sentence-transformers' ``SentenceTransformerTrainer`` (a transformers Trainer);
clpft adds what it does not have: the negatives' queries travel through the collator to CLPLoss,
queries and passages get their own length limits, and only the chosen layers train.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import random
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer

from clpft.checkpoints import last_complete_checkpoint, mark_complete, remove_checkpoint, rotate
from clpft.data.batching import NoFalseNegativesBatchSampler
from clpft.data.trainset import TrainExample
from clpft.errors import ClpftError
from clpft.faults import kill_point
from clpft.guard import Guard
from clpft.losses import CachedCLPLoss, CLPLoss, InfoNCELoss
from clpft.modeling_clpft_moe import MoELinear, encoder_layers
from clpft.moe import hf_model_of, moe_settings, upcycle
from clpft.options import TrainConfig

logger = logging.getLogger(__name__)

NEG_QUERIES = "neg_queries"
KEEP_CHECKPOINTS = 2  # complete checkpoints kept while training (older ones are removed)


def build_dataset(examples: list[TrainExample], num_negatives: int = 4):
    """A ``datasets.Dataset`` with one row per training query: columns query, positives (all of the
    query's positives; the collator draws one per row and epoch, as FlagEmbedding does, so a query
    counts once per epoch as in the paper), negative_1..negative_k and neg_queries (one list of
    queries per negative).

    Rows need exactly k negatives (the loss stacks them); examples with fewer are skipped and
    counted, extra negatives beyond k are not used."""
    from datasets import Dataset

    columns: dict[str, list] = {"query": [], "positives": []}
    for j in range(num_negatives):
        columns[f"negative_{j + 1}"] = []
    columns[NEG_QUERIES] = []
    skipped = 0
    for example in examples:
        if len(example.neg) < num_negatives:
            skipped += 1
            continue
        columns["query"].append(example.query)
        columns["positives"].append(list(example.pos))
        for j in range(num_negatives):
            columns[f"negative_{j + 1}"].append(example.neg[j])
        columns[NEG_QUERIES].append([list(qs) for qs in example.neg_q[:num_negatives]])
    if skipped:
        logger.warning("skipped %d training queries with fewer than %d negatives", skipped, num_negatives)
    if not columns["query"]:
        raise ClpftError(f"no training example has {num_negatives} negatives (lower --num-negatives)")
    return Dataset.from_dict(columns), skipped


@dataclass
class CLPDataCollator:
    """Tokenises a batch of rows from ``build_dataset`` for CLPLoss.

    The negatives' queries of the whole batch are de-duplicated and tokenised as one extra column;
    the label tensor (B, k, M) says which of those rows belong to each negative (-1 = none)."""

    preprocess_fn: Any
    query_max_tokens: int | None = None
    passage_max_tokens: int | None = None
    query_prompt: str | None = None
    passage_prompt: str | None = None
    with_negative_queries: bool = True
    max_queries_per_negative: int = 8
    seed: int = 42
    valid_label_columns: list[str] = field(default_factory=list)  # read by the trainer

    epoch: int = 0  # set by EpochCallback, so a resumed run draws the same positives

    def choose_positive(self, query: str, positives: list[str]) -> str:
        """One positive per query and epoch, a pure function of (seed, epoch, query): reproducible
        and unchanged by a resume, unlike a running random generator."""
        if len(positives) == 1:
            return positives[0]
        return random.Random(f"{self.seed}:{self.epoch}:{query}").choice(positives)

    @classmethod
    def for_model(
        cls,
        model: SentenceTransformer,
        query_max_tokens: int | None = 128,
        passage_max_tokens: int | None = 512,
        with_negative_queries: bool = True,
        max_queries_per_negative: int = 8,
        seed: int = 42,
    ) -> CLPDataCollator:
        limit = model.max_seq_length
        prompts = getattr(model, "prompts", None) or {}
        return cls(
            preprocess_fn=model.preprocess,
            query_max_tokens=min(query_max_tokens, limit) if limit and query_max_tokens else query_max_tokens or limit,
            passage_max_tokens=min(passage_max_tokens, limit)
            if limit and passage_max_tokens
            else passage_max_tokens or limit,
            query_prompt=prompts.get("query"),
            passage_prompt=prompts.get("document") or prompts.get("passage"),
            with_negative_queries=with_negative_queries,
            max_queries_per_negative=max_queries_per_negative,
            seed=seed,
        )

    def _tokenize(self, batch: dict, column: str, texts: list[str], prompt: str | None, limit: int | None) -> None:
        kwargs = {"max_length": limit} if limit else {}
        for key, value in self.preprocess_fn(texts, prompt=prompt, **kwargs).items():
            batch[f"{column}_{key}"] = value

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        negative_columns = sorted(
            (c for c in features[0] if c.startswith("negative_")), key=lambda c: int(c.split("_")[1])
        )
        batch: dict[str, Any] = {}
        self._tokenize(batch, "query", [f["query"] for f in features], self.query_prompt, self.query_max_tokens)
        positives = [
            f["positive"] if "positive" in f else self.choose_positive(f["query"], f["positives"]) for f in features
        ]
        self._tokenize(batch, "positive", positives, self.passage_prompt, self.passage_max_tokens)
        for column in negative_columns:
            self._tokenize(batch, column, [f[column] for f in features], self.passage_prompt, self.passage_max_tokens)

        rows: dict[str, int] = {}
        slots: list[list[list[int]]] = []
        for f in features:
            per_negative = []
            for queries in (f.get(NEG_QUERIES) or [[] for _ in negative_columns])[: len(negative_columns)]:
                ids = []
                if self.with_negative_queries:
                    for text in queries[: self.max_queries_per_negative]:
                        ids.append(rows.setdefault(text, len(rows)))
                per_negative.append(ids)
            slots.append(per_negative)
        width = max([1] + [len(ids) for per in slots for ids in per])
        labels = torch.full((len(features), len(negative_columns), width), -1, dtype=torch.long)
        for i, per in enumerate(slots):
            for j, ids in enumerate(per):
                labels[i, j, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        if rows:
            self._tokenize(batch, "negq", list(rows), self.query_prompt, self.query_max_tokens)
        batch["label"] = labels
        return batch


class NonFiniteLoss(ClpftError):
    pass


def _trainer_class():
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import TrainerCallback

    class EpochCallback(TrainerCallback):
        def __init__(self, collator: CLPDataCollator) -> None:
            self.collator = collator

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.collator.epoch = int(state.epoch or 0)

    class Trainer(SentenceTransformerTrainer):
        """sentence-transformers' trainer that stops at the first NaN/inf loss instead of training on,
        counts the batches and rows it really trains on per epoch, and logs CLP's two terms apart."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.batches_by_epoch: dict[int, int] = {}
            self.rows_by_epoch: dict[int, int] = {}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            result = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
            terms = getattr(self.loss, "last_terms", None)
            if model.training and terms:
                self.track_loss_components(terms)  # sentence-transformers logs them beside "loss"
            return result

        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
                kill_point("checkpoint.unmarked")
                mark_complete(folder)
                rotate(folder.parent, keep=KEEP_CHECKPOINTS)

        def _save_optimizer_and_scheduler(self, output_dir):
            kill_point("checkpoint.model_written")  # mid-checkpoint: weights on disk, optimizer not yet
            super()._save_optimizer_and_scheduler(output_dir)

        def training_step(self, model, inputs, *args, **kwargs):
            epoch = self.data_collator.epoch
            self.batches_by_epoch[epoch] = self.batches_by_epoch.get(epoch, 0) + 1
            self.rows_by_epoch[epoch] = self.rows_by_epoch.get(epoch, 0) + len(inputs["query_input_ids"])
            loss = super().training_step(model, inputs, *args, **kwargs)
            if not torch.isfinite(loss).all():
                raise NonFiniteLoss(
                    f"the loss became {loss.item()} at step {self.state.global_step + 1}; stopped "
                    "(lower --lr, raise --temperature, or check the training data); "
                    "the last checkpoint, if any, is kept"
                )
            return loss

    class GuardCallback(TrainerCallback):
        def __init__(self, guard) -> None:
            self.guard = guard

        def on_train_begin(self, args, state, control, **kwargs):
            self.guard.begin()

        def on_step_end(self, args, state, control, **kwargs):
            if self.guard.after_step(state.global_step):
                control.should_training_stop = True

    return Trainer, EpochCallback, GuardCallback


def set_trainable(model: SentenceTransformer, train_only: str) -> tuple[int, int]:
    """Freeze everything except what ``train_only`` names: "all", "intermediate" (the FFN intermediate
    dense layers, MoE or not) or "moe" (the MoE layers: experts and routers). Returns (trainable, total)."""
    hf_model = hf_model_of(model)
    if train_only not in ("all", "intermediate", "moe"):
        raise ClpftError(f"--train-only must be all, intermediate or moe, got {train_only!r}")
    if train_only == "all":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        if train_only == "moe":
            modules = [m for m in hf_model.modules() if isinstance(m, MoELinear)]
            if not modules:
                raise ClpftError("--train-only moe needs an MoE model (--moe intermediate or output)")
        else:
            modules = [layer.intermediate.dense for layer in encoder_layers(hf_model)]
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


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
    guard: dict[str, Any] = field(default_factory=dict)  # what was saved and why (clpft.guard.GuardResult)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def split_validation(
    examples: list[TrainExample], fraction: float, seed: int
) -> tuple[list[TrainExample], list[TrainExample]]:
    """A seeded share of the training *queries* held out for validation (all rows of a query go one way).

    The held-out queries are also taken out of every training row's negatives' own queries: mined from
    the training qrels, a held-out query is often a negative's own query, and training on it, beside the
    document it is relevant to, would leak the validation split into training. The training rows are
    copies; ``examples`` is not changed."""
    if not 0.0 <= fraction < 1.0:
        raise ClpftError(f"--val-fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return examples, []
    keys = sorted({e.query_id or e.query for e in examples})
    random.Random(f"{seed}:validation").shuffle(keys)
    held = set(keys[: max(1, round(fraction * len(keys)))])
    if len(held) == len(keys):
        raise ClpftError(f"--val-fraction {fraction} leaves no training queries ({len(keys)} in all)")
    held_out = [e for e in examples if (e.query_id or e.query) in held]
    held_texts = {e.query for e in held_out}
    train = [_without_own_queries(e, held_texts) for e in examples if (e.query_id or e.query) not in held]
    return train, held_out


def _without_own_queries(example: TrainExample, texts: set[str]) -> TrainExample:
    """A copy of ``example`` whose negatives' own queries hold none of ``texts``; a negative left with
    none becomes one without a known query (source "none")."""
    if not any(q in texts for queries in example.neg_q for q in queries):
        return example
    own = [[q for q in queries if q not in texts] for queries in example.neg_q]
    sources = example.neg_q_source
    if sources is not None:
        sources = [source if queries else "none" for source, queries in zip(sources, own)]
    return dataclasses.replace(example, neg_q=own, neg_q_source=sources)


def count_own_queries(examples: list[TrainExample]) -> int:
    return sum(len(queries) for e in examples for queries in e.neg_q)


def validation_evaluator(
    examples: list[TrainExample], model: SentenceTransformer, batch_size: int = 32, corpus: dict[str, str] | None = None
):
    """sentence-transformers' InformationRetrievalEvaluator over the validation queries.

    Without ``corpus`` it ranks the pool of their positives and mined hard negatives: cheap enough to run
    often, and sensitive to what the loss changes (hard negatives moving past positives), but blind to the
    rest of the corpus rising. With ``corpus`` (document id -> text) it ranks the whole corpus, as the test
    does: slower (the corpus is encoded at every evaluation)."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    def doc_id(given: list[str] | None, k: int, text: str) -> str:
        return given[k] if given and k < len(given) else "t:" + hashlib.sha1(text.encode()).hexdigest()[:16]

    queries, pool, relevant = {}, {}, {}
    for i, e in enumerate(examples):
        qid = e.query_id or f"q{i}"
        queries[qid] = e.query
        if corpus is not None:
            if not e.pos_ids or any(d not in corpus for d in e.pos_ids):
                raise ClpftError(
                    f"validation on the whole corpus: query {qid!r} has positives that are not in it "
                    "(the training set needs pos_ids from this corpus)"
                )
        for k, text in enumerate(e.pos):
            pool[doc_id(e.pos_ids, k, text)] = text
            relevant.setdefault(qid, set()).add(doc_id(e.pos_ids, k, text))
        for k, text in enumerate(e.neg):
            pool.setdefault(doc_id(e.neg_ids, k, text), text)
    return InformationRetrievalEvaluator(
        queries,
        corpus if corpus is not None else pool,
        relevant,
        name="val",
        ndcg_at_k=[5, 10],
        mrr_at_k=[10],
        accuracy_at_k=[1],
        precision_recall_at_k=[10],
        map_at_k=[100],
        batch_size=batch_size,
        write_csv=False,
        score_functions={"cosine": cos_sim},  # a fixed name, so the metric keys do not depend on the model
    )


def make_loss(model: SentenceTransformer, config: TrainConfig) -> torch.nn.Module:
    if config.gradcache_mini_batch > 0 and config.loss in ("clp", "infonce"):
        weight = config.penalty_weight if config.loss == "clp" else 0.0
        return CachedCLPLoss(model, weight, config.temperature, mini_batch_size=config.gradcache_mini_batch)
    if config.loss == "clp":
        return CLPLoss(model, penalty_weight=config.penalty_weight, temperature=config.temperature)
    if config.loss == "infonce":
        return InfoNCELoss(model, temperature=config.temperature)
    if config.loss == "mnrl":
        # sentence-transformers' own loss with its own defaults (scale 20): what users run otherwise.
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        return MultipleNegativesRankingLoss(model)
    raise ClpftError(f"--loss must be clp, infonce or mnrl, got {config.loss!r}")


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
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import set_seed

    if config.moe not in ("none", "intermediate", "output"):
        raise ClpftError(f"--moe must be none, intermediate or output, got {config.moe!r}")
    if config.precision not in ("fp32", "bf16", "fp16"):
        raise ClpftError(f"--precision must be fp32, bf16 or fp16, got {config.precision!r}")
    if config.precision == "fp16" and not torch.cuda.is_available():
        raise ClpftError("--precision fp16 needs a CUDA GPU (use bf16 on a CPU)")
    if config.moe == "none" and config.train_only == "moe" and not moe_settings(model):
        raise ClpftError("--train-only moe needs --moe intermediate or output (or use --train-only all/intermediate)")
    if config.moe_learning_rate is not None and (config.moe == "none" or config.train_only != "all"):
        raise ClpftError(
            "--moe-lr is the MoE layers' learning rate when every weight trains: it needs --moe intermediate "
            "or output and --train-only all (otherwise --lr is theirs)"
        )
    set_seed(config.seed)
    existing = moe_settings(model)
    if existing:
        print(reuse_moe_message(existing, config), flush=True)
    elif config.moe != "none":
        try:
            upcycle(model, where=config.moe, num_experts=config.num_experts, experts_per_token=config.experts_per_token)
        except ValueError as error:
            raise ClpftError(f"cannot upcycle this model to MoE: {error}") from error
    trainable, total = set_trainable(model, config.train_only)
    print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.1f}%)", flush=True)

    own_before = count_own_queries(examples)
    examples, val_examples = split_validation(examples, config.val_fraction, config.seed)
    own_removed = own_before - count_own_queries(examples) - count_own_queries(val_examples)
    if own_removed:
        print(
            f"validation: {own_removed} held-out query texts removed from the training rows' negatives' own queries",
            flush=True,
        )
    evaluator = validation_evaluator(val_examples, model, corpus=val_corpus) if val_examples else None
    if val_examples:
        print(
            f"validation: {len(val_examples)} held-out training queries (--val-fraction {config.val_fraction})",
            flush=True,
        )
    dataset, skipped = build_dataset(examples, config.num_negatives)
    loss = make_loss(model, config)
    collator = CLPDataCollator.for_model(
        model,
        config.query_max_tokens,
        config.passage_max_tokens,
        with_negative_queries=getattr(loss, "uses_negative_queries", False),
        max_queries_per_negative=config.max_queries_per_negative,
        seed=config.seed,
    )
    # The sampler decides the batches (with conflicts, more than len(dataset) / batch_size), the trainer
    # takes ceil(batches / world) per process (accelerate's even sharding) and steps every grad_accum.
    batches = (
        len(NoFalseNegativesBatchSampler(dataset, config.batch_size, False, seed=config.seed))
        if config.batch_size > 1
        else len(dataset)
    )
    # torchrun sets WORLD_SIZE; the process group itself starts only with the training arguments below.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = math.ceil(math.ceil(batches / world) / config.grad_accum)
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(steps_per_epoch * config.epochs)
    if config.save_steps and not config.checkpoint_dir:
        raise ClpftError("checkpoints (--save-steps) need a checkpoint folder")
    resume_from = None
    if config.resume:
        if not config.checkpoint_dir or not Path(config.checkpoint_dir).is_dir():
            raise ClpftError(f"nothing to resume: no checkpoint folder {config.checkpoint_dir}")
        resume_from = resume_checkpoint(config.checkpoint_dir)
        if resume_from is None:  # killed while writing the first checkpoint: nothing was lost but its steps
            print(f"no complete checkpoint in {config.checkpoint_dir}: training from the start", flush=True)
        else:
            print(f"resuming from {resume_from}", flush=True)
    with contextlib.ExitStack() as stack:
        scratch = config.checkpoint_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="clpft-trainer-"))
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            num_train_epochs=config.epochs,
            max_steps=config.max_steps,
            per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=config.grad_accum,
            learning_rate=config.learning_rate,
            learning_rate_mapping=_moe_learning_rates(model, config.moe_learning_rate),
            warmup_steps=int(config.warmup_ratio * total_steps),
            weight_decay=0.0,
            seed=config.seed,
            data_seed=config.seed,
            save_strategy="steps" if config.save_steps else "no",
            save_steps=config.save_steps or 500,
            save_total_limit=None,  # clpft rotates, counting complete checkpoints only (clpft.checkpoints)
            report_to="none",
            logging_steps=config.logging_steps or max(1, total_steps // 20),
            disable_tqdm=not show_progress,
            dataloader_drop_last=False,
            dataloader_pin_memory=torch.cuda.is_available(),
            remove_unused_columns=False,
            # In-batch negatives: no row's positive may be another row's positive or negative (clpft.data.batching).
            batch_sampler=NoFalseNegativesBatchSampler if config.batch_size > 1 else BatchSamplers.BATCH_SAMPLER,
            bf16=config.precision == "bf16",
            use_cpu=config.precision == "bf16" and not torch.cuda.is_available(),  # the trainer's way to allow CPU bf16
            fp16=config.precision == "fp16",
            # non-reentrant checkpointing: gradients still reach the trained layers when the embeddings are frozen
            **_checkpointing_args(config.gradient_checkpointing),
        )
        trainer_class, epoch_callback, guard_callback = _trainer_class()
        trainer = trainer_class(model=model, args=args, train_dataset=dataset, loss=loss, data_collator=collator)
        trainer.add_callback(epoch_callback(collator))
        # The guard (clpft.guard) scores the held-out queries at step 0 and on its time budget, and keeps the
        # best state.
        guard = Guard(
            model,
            (lambda: _val_metrics(evaluator(model))) if evaluator is not None else None,
            budget_share=config.eval_budget,
            eval_steps=config.eval_steps,
            patience=config.patience,
        )
        trainer.add_callback(guard_callback(guard))
        if not show_progress:
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        guard.score_start()  # before train(): on a resume, too, the model still holds the start's weights here
        started = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        seconds = time.perf_counter() - started
        history = [
            {
                k: v
                for k, v in entry.items()
                if k in ("step", "epoch", "loss", "infonce", "penalty", "learning_rate", "grad_norm")
            }
            for entry in trainer.state.log_history
            if "loss" in entry
        ]
        steps = trainer.state.global_step
        chosen = guard.finish(
            steps, config.merge, seconds - guard.eval_seconds + guard.step_zero_seconds, select=config.guard
        )
        val_history = guard.history
        final = chosen.final_score if chosen.final_score is not None else float("nan")
        if evaluator is not None:
            print(
                f"validation: saved {chosen.chosen} (nDCG@10 {final:.4f}; step 0 {chosen.start_score:.4f}); "
                f"evaluation took {100 * chosen.eval_share:.0f}% of the training time",
                flush=True,
            )
            message = guard.message(chosen) if config.guard else validation_regression(val_history)
            if message:
                logger.warning(message)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    epochs_run = sorted(trainer.batches_by_epoch)
    return TrainResult(
        trainable,
        total,
        len(dataset),
        skipped,
        steps,
        round(seconds, 2),
        history,
        val_history,
        len(val_examples),
        world,
        steps_per_epoch=steps_per_epoch,
        batches_per_epoch=[trainer.batches_by_epoch[e] for e in epochs_run],
        rows_per_epoch=[trainer.rows_by_epoch[e] for e in epochs_run],
        val_own_queries_removed=own_removed,
        guard=dataclasses.asdict(chosen),
    )


def reuse_moe_message(existing: dict[str, Any], config: TrainConfig) -> str:
    """The line that says a model already MoE is trained with its own experts; a ClpftError when the
    options ask for other MoE settings (upcycling twice is not possible, and silently ignoring the
    options would train another model than the one asked for)."""
    own = (existing["where"], existing["num_experts"], existing["experts_per_token"])
    described = f"--moe {own[0]} --num-experts {own[1]} --experts-per-token {own[2]}"
    asked = (config.moe, config.num_experts, config.experts_per_token)
    if config.moe != "none" and asked != own:
        raise ClpftError(
            f"the model is already MoE ({described}) but the options ask for --moe {asked[0]} --num-experts "
            f"{asked[1]} --experts-per-token {asked[2]}: pass the model's own settings, --moe none to train it as it "
            "is, or start from a dense model"
        )
    return f"the model is already MoE ({described}): its experts and routers are trained as they are"


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


def _val_metrics(entry: dict[str, float]) -> dict[str, float]:
    # the evaluator's "val_cosine_ndcg@10" -> "ndcg@10"
    prefix = "val_cosine_"
    return {k[len(prefix) :]: round(float(v), 6) for k, v in entry.items() if k.startswith(prefix)}
