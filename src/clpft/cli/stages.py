"""The method's stages, each a function that takes options and paths, writes its outputs atomically and
returns what it wrote: ``mine`` (train.jsonl + its stats), ``train`` (a model folder with training.json,
the model card's clpft section and the loss plot), ``evaluate`` (metrics.json).

`clpft mine|train|eval` are these functions behind a parser; `clpft run` composes them and adds resume;
`clpft ablation` runs them through `clpft run` and `clpft train`. So every rule lives here once: where
outputs go, what an existing output means, how length limits are capped, how training queries are
sampled, the stats' schema, and where checkpoints are kept (``checkpoints_of``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clpft.data.trainset import TrainExample, read_train_jsonl, write_train_jsonl
from clpft.errors import ClpftError
from clpft.files import write_json
from clpft.options import MiningOptions


def check_output(path: str | Path, *, overwrite: bool, resume: bool = False) -> None:
    """The one output-exists rule: a path that exists (a non-empty folder, or a file) is replaced only with
    ``overwrite``, continued only with ``resume``."""
    path = Path(path)
    taken = path.is_file() or (path.is_dir() and any(path.iterdir()))
    if taken and not (overwrite or resume):
        hint = "pass --resume to continue it, --overwrite to replace it" if path.is_dir() else "pass --overwrite"
        raise ClpftError(f"{path} already exists and is not empty ({hint})")


def checkpoints_of(model_folder: str | Path) -> Path:
    """Where a model folder's training checkpoints are kept while it trains: beside it, MODEL.checkpoints
    (removed once the model is saved)."""
    folder = Path(model_folder)
    return folder.with_name(folder.name + ".checkpoints")


def token_limits(model: Any, query_max_tokens: int, passage_max_tokens: int) -> tuple[int, int]:
    """The query and passage length limits, capped by the model's own max_seq_length (when it has one)."""
    limit = getattr(model, "max_seq_length", None) or 10**9
    return min(query_max_tokens, limit), min(passage_max_tokens, limit)


def sample_ids(ids: Sequence[str], k: int | None, seed: int) -> list[str]:
    """The one way training queries are sampled (mining's --max-train-queries and training's): a seeded
    sample of ``k`` of the sorted ids, in sorted order; all of them when ``k`` is None or not smaller."""
    ids = sorted(ids)
    if k is None or k >= len(ids):
        return ids
    return sorted(random.Random(seed).sample(ids, k))


def sample_examples(examples: list[TrainExample], k: int | None, seed: int) -> list[TrainExample]:
    """Training rows of a seeded sample of ``k`` queries (``sample_ids`` over the rows' query ids)."""
    keys = {e.query_id or e.query for e in examples}
    kept = set(sample_ids(list(keys), k, seed))
    return [e for e in examples if (e.query_id or e.query) in kept]


def exact_precision():
    """fp32 for what follows when the command's precision is ``auto`` (test evaluations and the corpus
    encoding they share with mining); the named precision otherwise."""
    from clpft import precision

    return precision.use("fp32") if precision.current() == "auto" else contextlib.nullcontext()


# ------------------------------------------------------------------------------------------------- mine
def stats_path(train_file: str | Path) -> Path:
    return Path(f"{train_file}.stats.json")


def mine(
    model: Any,
    dataset: Any,
    options: MiningOptions,
    out: str | Path,
    *,
    corpus_embeddings: Any = None,
    show_progress: bool = True,
):
    """Mine ``dataset`` (the training split) into ``out`` (train.jsonl) and ``out.stats.json``; returns
    (examples, stats). ``corpus_embeddings`` reuses an encoding of the corpus by the same model."""
    from clpft.mining import mine_negatives

    query_max, passage_max = (
        token_limits(model, options.query_max_tokens, options.passage_max_tokens)
        if model is not None
        else (options.query_max_tokens, options.passage_max_tokens)
    )
    examples, stats = mine_negatives(
        model,
        dataset,
        num_negatives=options.num_negatives,
        rank_from=options.rank_from,
        rank_to=options.rank_to,
        max_score_ratio=options.max_score_ratio,
        strategy=options.strategy,
        max_train_queries=options.max_train_queries,
        seed=options.seed,
        query_max_tokens=query_max,
        passage_max_tokens=passage_max,
        batch_size=options.encode_batch_size,
        show_progress=show_progress,
        corpus_embeddings=corpus_embeddings if options.strategy == "ance" else None,
        query_sources=options.query_sources,
    )
    write_train_jsonl(out, examples)
    write_json(stats_path(out), stats.to_json())
    return examples, stats


def read_mined(train_file: str | Path):
    """(examples, stats) written by ``mine``."""
    from clpft.mining import MiningStats

    saved = json.loads(stats_path(train_file).read_text(encoding="utf-8"))
    fields = {f.name for f in dataclasses.fields(MiningStats)}
    return read_train_jsonl(train_file), MiningStats(**{k: v for k, v in saved.items() if k in fields})


# ------------------------------------------------------------------------------------------------ train
IDENTITY_FILE = "clpft_training_identity.json"  # in a checkpoint folder: what the checkpoints were trained on


def training_identity(config: Any, train_file: str | Path | None, base_model: str) -> dict[str, Any]:
    """What decides a trained model: the model it starts from, the resolved training options (not where
    checkpoints go or whether this is a resume) and the training file's sha256. ``train --resume``
    continues or accepts a model only when it matches (a different --train file or --lr is another model)."""
    from clpft.manifest import sha256_of

    identity = {
        k: v for k, v in dataclasses.asdict(config).items() if k not in ("checkpoint_dir", "resume", "show_progress")
    }
    identity["train_file_sha256"] = sha256_of(Path(train_file)) if train_file else None
    identity["base_model"] = base_model
    return json.loads(json.dumps(identity, default=str))


def training_state(model_dir: Path, identity: dict[str, Any], resume: bool) -> str:
    """Where a training into ``model_dir`` stands: "finished" (the model is saved), "checkpoint" (with --resume,
    a complete checkpoint to continue from) or "start". With --resume, a folder trained, or checkpointed, on
    other inputs is refused in one line. Shared by ``clpft train --resume`` and ``clpft run --resume``."""
    from clpft.training import resume_checkpoint

    if not resume:
        return "start"
    saved, recorded = model_dir / "training.json", checkpoints_of(model_dir) / IDENTITY_FILE
    if saved.is_file():
        refuse_other_inputs(model_dir, "was trained", identity, json.loads(saved.read_text()).get("identity"))
        return "finished"
    if recorded.is_file():
        refuse_other_inputs(model_dir, "has checkpoints trained", identity, json.loads(recorded.read_text()))
    checkpoints = checkpoints_of(model_dir)
    # resume_checkpoint names (and removes) checkpoints a crash left half-written
    return "checkpoint" if checkpoints.is_dir() and resume_checkpoint(checkpoints) is not None else "start"


def refuse_other_inputs(out: Path, what: str, identity: dict[str, Any], before: dict[str, Any] | None) -> None:
    changed = identity_changes(identity, before)
    if changed:
        raise ClpftError(
            f"{out} {what} on other inputs (they differ in {', '.join(changed)}); pass --overwrite to replace "
            "it, or the same --train and options to continue it"
        )


def identity_changes(now: dict[str, Any], before: dict[str, Any] | None) -> list[str]:
    """The keys whose values differ (every key when ``before`` is missing: a model from an older clpft)."""
    if before is None:
        return ["(no record of its inputs)"]
    return sorted(k for k in now.keys() | before.keys() if now.get(k) != before.get(k))


def train(
    model: Any,
    examples: list[TrainExample],
    config: Any,
    out: str | Path,
    *,
    base_model: str,
    source: str,
    val_corpus: dict[str, str] | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    metrics: tuple[dict[str, float], dict[str, float]] | None = None,
    eval_split: str | None = None,
    train_file: str | Path | None = None,
    card: bool = True,
):
    """Fine-tune ``model`` on ``examples`` as ``config`` says and save it to ``out`` with training.json,
    the model card's clpft section (unless ``card`` is False: ``clpft run`` writes it once, with the test
    metrics) and training_loss.png, all in one atomic step; returns the TrainResult.
    Checkpoints (``config.save_steps``) go to ``checkpoints_of(out)``, removed once the model is saved."""
    import os

    from clpft.cli.model_card import add_to_model_card, card_section
    from clpft.models import save_model
    from clpft.training import train_model
    from clpft.training.checkpoints import remove_all
    from clpft.training.plots import plot_loss
    from clpft.training.runtime import peak_rss_mb

    identity = training_identity(config, train_file, base_model)
    # beside the checkpoints this run will write (a resume with no checkpoint folder is an error of its own)
    will_checkpoint = config.save_steps and not (config.resume and not Path(config.checkpoint_dir).is_dir())
    if will_checkpoint and int(os.environ.get("RANK", "0")) == 0:
        write_json(Path(config.checkpoint_dir) / IDENTITY_FILE, identity)
    result = train_model(model, examples, config, show_progress=show_progress, val_corpus=val_corpus)

    if int(os.environ.get("RANK", "0")) != 0:
        return result  # under torchrun / accelerate launch only the first process writes the model

    def extras(folder: Path) -> None:  # written into the model folder before it appears
        write_json(
            folder / "training.json",
            {
                **result.to_json(),
                "peak_rss_mb": peak_rss_mb(),
                "config": dataclasses.asdict(config),
                "identity": identity,
            },
        )
        if card:
            add_to_model_card(folder, card_section(base_model, dataclasses.asdict(config), source, metrics, eval_split))
        plot_loss(result.loss_history, folder / "training_loss.png", result.val_history)

    save_model(model, out, overwrite=overwrite, extras=extras)
    remove_all(checkpoints_of(out))
    return result


# --------------------------------------------------------------------------------------------- evaluate
def evaluate(
    model: Any,
    dataset: Any,
    *,
    top_k: int = 100,
    query_max_tokens: int = 128,
    passage_max_tokens: int = 512,
    encode_batch_size: int = 64,
    corpus_embeddings: Any = None,
    show_progress: bool = True,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Dense retrieval on ``dataset``'s split; written to ``out`` (metrics.json) when given.

    Under ``--precision auto`` the evaluation encodes in fp32 (``exact_precision``): bf16 moved test
    nDCG@10 by up to 0.0014 (Cranfield; benchmarks/results/speed.md), more than a metric should move
    for a change of arithmetic, so test numbers stay exact; a precision asked for by name applies."""
    from clpft.evaluation import evaluate_model

    query_max, passage_max = token_limits(model, query_max_tokens, passage_max_tokens)
    with exact_precision():
        result = evaluate_model(
            model, dataset, top_k, query_max, passage_max, encode_batch_size, corpus_embeddings, show_progress
        )
    if out is not None:
        write_json(out, result)
    return result
