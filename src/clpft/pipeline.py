"""``clpft run``: mine -> train -> evaluate, leaving each stage's output in one run folder.

RUN_DIR/train.jsonl (the mined training set), RUN_DIR/model/ (the fine-tuned model) and
RUN_DIR/metrics.json (base vs fine-tuned on the evaluation split, with per-query values).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import clpft
from clpft.checkpoints import remove_all
from clpft.data import load_dataset, read_train_jsonl, write_train_jsonl
from clpft.data.download import resolve_data
from clpft.errors import ClpftError
from clpft.evaluation import LABELS, METRICS, encode_corpus, evaluate_model
from clpft.faults import kill_point
from clpft.files import remove_stale_temporaries, write_json
from clpft.manifest import build_manifest
from clpft.mining import MiningStats, mine_negatives
from clpft.model_card import add_to_model_card, card_section
from clpft.models import load_model, save_model
from clpft.negqueries.chain import GeneratorSettings
from clpft.plots import plot_loss
from clpft.training import TrainConfig, TrainResult, resume_checkpoint, train_model


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def format_table(columns: dict[str, dict[str, float]]) -> str:
    """A before/after table; with two columns a delta column is added."""
    names = list(columns)
    header = f"{'metric':<12}" + "".join(f"{n:>12}" for n in names) + (f"{'delta':>10}" if len(names) == 2 else "")
    lines = [header, "-" * len(header)]
    for metric in METRICS:
        row = f"{LABELS[metric]:<12}" + "".join(f"{columns[n][metric]:>12.4f}" for n in names)
        if len(names) == 2:
            row += f"{columns[names[1]][metric] - columns[names[0]][metric]:>+10.4f}"
        lines.append(row)
    return "\n".join(lines)


@dataclasses.dataclass
class RunOptions:
    data: str
    out: str
    model: str | None = None
    trust_remote_code: bool = False
    train_split: str = "train"
    eval_split: str = "test"
    strategy: str = "ance"
    num_negatives: int = 4
    rank_from: int = 0
    rank_to: int = 50
    max_score_ratio: float | None = None
    max_train_queries: int | None = None
    top_k: int = 100
    encode_batch_size: int = 64
    overwrite: bool = False
    resume: bool = False
    quiet: bool = False
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    neg_queries: GeneratorSettings | None = None


def run(options: RunOptions) -> dict[str, Any]:
    """The whole method on one dataset; returns what it writes to RUN_DIR/metrics.json."""
    out = Path(options.out)
    if out.exists() and any(out.iterdir()) and not (options.overwrite or options.resume):
        raise ClpftError(
            f"{out} already exists and is not empty (pass --resume to continue it, --overwrite to replace it)"
        )
    identity = _identity(options)
    if options.resume and (out / "run.json").is_file():
        before = json.loads((out / "run.json").read_text(encoding="utf-8"))
        changed = sorted(k for k in identity.keys() | before.keys() if identity.get(k) != before.get(k))
        if changed:
            raise ClpftError(
                f"{out} holds a different run (it differs in {', '.join(changed)}); "
                "pass --overwrite to replace it or choose another --out"
            )
    if options.overwrite and not options.resume:
        # metrics.json first: it is what marks a run folder as finished.
        for stale in (
            "metrics.json",
            "run.json",
            "base_metrics.json",
            "train.jsonl",
            "train.jsonl.stats.json",
            "checkpoints",
        ):
            path = out / stale
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    if options.train_split == options.eval_split:
        raise ClpftError("--train-split and --eval-split must differ (evaluating on training queries proves nothing)")
    cfg = options.train
    show = not options.quiet
    started = time.perf_counter()
    if options.resume:
        for leftover in remove_stale_temporaries(out):
            print(f"removed {leftover}, left by an interrupted write", flush=True)
    write_json(out / "run.json", identity)
    train_data = load_dataset(options.data, options.train_split)
    eval_data = load_dataset(options.data, options.eval_split)
    model = load_model(options.model, trust_remote_code=options.trust_remote_code)
    max_q = min(cfg.query_max_tokens, model.max_seq_length or cfg.query_max_tokens)
    max_p = min(cfg.passage_max_tokens, model.max_seq_length or cfg.passage_max_tokens)
    print(
        f"model: {options.model or clpft.models.DEFAULT_MODEL_NAME}; query/passage max tokens {max_q}/{max_p}",
        flush=True,
    )

    # With --resume every stage whose output is already in RUN_DIR is read back instead of redone.
    if options.resume and (out / "metrics.json").is_file() and (out / "model").is_dir():
        report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        print(f"{out} is already finished", flush=True)
        print(
            format_table({"base": report["base"]["metrics"], "fine-tuned": report["finetuned"]["metrics"]}), flush=True
        )
        return report
    base_file, train_file, stats_file = out / "base_metrics.json", out / "train.jsonl", out / "train.jsonl.stats.json"
    resumed = options.resume and base_file.is_file() and train_file.is_file() and stats_file.is_file()
    corpus_emb = None
    encode_seconds = 0.0
    if resumed:
        base = json.loads(base_file.read_text(encoding="utf-8"))
        stats = MiningStats(**json.loads(stats_file.read_text(encoding="utf-8")))
        examples = read_train_jsonl(train_file)
        print(f"resuming {out}: base metrics and {len(examples)} mined queries read back", flush=True)
    else:
        # The base model's corpus embeddings serve both mining and the "before" evaluation.
        t = time.perf_counter()
        corpus_emb = encode_corpus(model, eval_data, max_p, options.encode_batch_size, show)
        encode_seconds = time.perf_counter() - t
        base = evaluate_model(
            model, eval_data, options.top_k, max_q, max_p, options.encode_batch_size, corpus_emb, show
        )
        write_json(base_file, base)
    print(f"base model on {options.eval_split}: nDCG@10 {base['metrics']['ndcg@10']:.4f}", flush=True)
    if not resumed:
        examples, stats = _mine(options, model, train_data, corpus_emb, max_q, max_p, show)
        write_train_jsonl(train_file, examples)
        write_json(stats_file, dataclasses.asdict(stats))
    print(stats.summary(), flush=True)

    checkpoints = out / "checkpoints"
    # resume_checkpoint names (and removes) checkpoints a crash left half-written.
    has_checkpoint = options.resume and checkpoints.is_dir() and resume_checkpoint(checkpoints) is not None
    cfg = dataclasses.replace(cfg, checkpoint_dir=str(checkpoints), resume=options.resume and has_checkpoint)
    trained = out / "model" / "training.json"  # saved with the model, in the same atomic step
    if options.resume and trained.is_file():
        print(f"resuming {out}: the fine-tuned model is already saved; evaluating it", flush=True)
        model = load_model(out / "model")
        saved = json.loads(trained.read_text(encoding="utf-8"))
        result = TrainResult(**{f.name: saved[f.name] for f in dataclasses.fields(TrainResult) if f.name in saved})
    else:
        # With a validation split, its queries rank the whole training corpus, as the test will.
        val_corpus = {d: doc.full_text for d, doc in train_data.corpus.items()} if cfg.val_fraction else None
        result = train_model(model, examples, cfg, show_progress=show, val_corpus=val_corpus)
        save_model(
            model,
            out / "model",
            overwrite=True,
            extras=lambda folder: write_json(
                folder / "training.json", {**result.to_json(), "config": dataclasses.asdict(cfg)}
            ),
        )
    remove_all(checkpoints)  # the finished model replaces them
    tuned = evaluate_model(model, eval_data, options.top_k, max_q, max_p, options.encode_batch_size, None, show)
    kill_point("run.evaluated")
    return _report(options, cfg, out, base, tuned, stats, result, started, encode_seconds)


def _identity(options: RunOptions) -> dict[str, Any]:
    """What makes two runs the same run: every option but where it goes and how it is shown."""
    flat = {
        k: v
        for k, v in dataclasses.asdict(options).items()
        if k not in ("out", "overwrite", "resume", "quiet", "train")
    }
    flat |= {
        f"train.{k}": v for k, v in dataclasses.asdict(options.train).items() if k not in ("checkpoint_dir", "resume")
    }
    return json.loads(json.dumps(flat, default=str))


def _mine(options: RunOptions, model, train_data, corpus_emb, max_q: int, max_p: int, show: bool):
    cfg = options.train
    return mine_negatives(
        model,
        train_data,
        num_negatives=options.num_negatives,
        rank_from=options.rank_from,
        rank_to=options.rank_to,
        max_score_ratio=options.max_score_ratio,
        strategy=options.strategy,
        max_train_queries=options.max_train_queries,
        seed=cfg.seed,
        query_max_tokens=max_q,
        passage_max_tokens=max_p,
        batch_size=options.encode_batch_size,
        show_progress=show,
        corpus_embeddings=corpus_emb if options.strategy == "ance" else None,
        neg_queries=options.neg_queries,
    )


def _report(
    options: RunOptions, cfg: TrainConfig, out: Path, base, tuned, stats, result, started: float, encode_seconds: float
):
    report = {
        "clpft_version": clpft.__version__,
        "data": str(options.data),
        "model": options.model or clpft.models.DEFAULT_MODEL_NAME,
        "eval_split": options.eval_split,
        "options": {k: v for k, v in dataclasses.asdict(options).items() if k not in ("train", "neg_queries")},
        "neg_queries": dataclasses.asdict(options.neg_queries) if options.neg_queries else None,
        "train_config": dataclasses.asdict(cfg),
        "base": base,
        "finetuned": tuned,
        "mining": stats.to_json(),
        "training": result.to_json(),
        "seconds": {
            "total": round(time.perf_counter() - started, 1),
            "corpus_encoding": round(encode_seconds, 1),
            "mining": stats.seconds,
            "training": result.seconds,
            "evaluation_finetuned": tuned["seconds"],
        },
        "peak_rss_mb": peak_rss_mb(),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    add_to_model_card(
        out / "model",
        card_section(
            report["model"],
            report["train_config"],
            report["data"],
            (base["metrics"], tuned["metrics"]),
            options.eval_split,
        ),
    )
    plot_loss(result.loss_history, out / "training_loss.png", result.val_history)
    root = resolve_data(options.data)
    data_files = [root / name for name in ("corpus.jsonl", "queries.jsonl")]
    data_files += [root / "qrels" / f"{split}.tsv" for split in (options.train_split, options.eval_split)]
    write_json(
        out / "manifest.json",
        build_manifest(report["options"] | {"train": report["train_config"]}, data_files, cfg.seed),
    )
    write_json(out / "metrics.json", report)  # last: it marks the run as finished
    print(format_table({"base": base["metrics"], "fine-tuned": tuned["metrics"]}), flush=True)
    print(
        f"wall time {report['seconds']['total']:.0f} s, peak memory {report['peak_rss_mb']:.0f} MB; wrote {out}/",
        flush=True,
    )
    return report
