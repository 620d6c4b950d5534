"""``clpft run``: mine -> train -> evaluate, leaving each stage's output in one run folder.

RUN_DIR/train.jsonl (the mined training set, with train.jsonl.stats.json), RUN_DIR/model/ (the fine-tuned
model, with training.json and training_loss.png) and RUN_DIR/metrics.json (base vs fine-tuned on the
evaluation split, with per-query values). The stages are clpft.cli.stages' (the ones `clpft mine|train|eval`
run); this module composes them, reuses the base model's corpus encoding for mining and resumes.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import clpft
from clpft.cli import stages
from clpft.cli.model_card import add_to_model_card, card_section
from clpft.data import load_dataset
from clpft.data.download import resolve_data
from clpft.errors import ClpftError
from clpft.evaluation import LABELS, METRICS, encode_corpus
from clpft.faults import kill_point
from clpft.files import remove_stale_temporaries, write_json
from clpft.manifest import build_manifest, sha256_of
from clpft.models import load_model
from clpft.moe.preparation import check_preparable
from clpft.options import MiningOptions, SharedOptions, SplitOptions
from clpft.training import TrainConfig, TrainResult
from clpft.training.checkpoints import remove_all
from clpft.training.runtime import peak_rss_mb


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
class RunOptions(SplitOptions):
    data: str
    out: str
    model: str | None = None
    trust_remote_code: bool = False
    overwrite: bool = False
    resume: bool = False
    quiet: bool = False
    mining: MiningOptions = dataclasses.field(default_factory=MiningOptions)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def run(options: RunOptions) -> dict[str, Any]:
    """The whole method on one dataset; returns what it writes to RUN_DIR/metrics.json.

    Every check runs, and the data and the model load, before anything in RUN_DIR is touched. ``--overwrite``
    moves the old run aside (RUN_DIR's sibling ``.NAME.replaced``) and puts it back if the new one fails or is
    interrupted; it is removed only once the new run is complete (a run killed outright leaves it there, and
    the next ``--resume`` or ``--overwrite`` of RUN_DIR removes it when it completes). ``--resume`` continues
    only the same run: the same options and the same data files (checksums), else it refuses."""
    started = time.perf_counter()
    out = Path(options.out)
    if options.train_split == options.eval_split:
        raise ClpftError("--train-split and --eval-split must differ (evaluating on training queries proves nothing)")
    stages.check_output(out, overwrite=options.overwrite, resume=options.resume)
    train_data = load_dataset(options.data, options.train_split)
    eval_data = load_dataset(options.data, options.eval_split)
    model = load_model(options.model, trust_remote_code=options.trust_remote_code)
    check_preparable(model, options.train)
    identity = _identity(options)
    if options.resume and (out / "run.json").is_file():
        before = json.loads((out / "run.json").read_text(encoding="utf-8"))
        changed = sorted(k for k in identity.keys() | before.keys() if identity.get(k) != before.get(k))
        if changed:
            raise ClpftError(
                f"{out} holds a different run (it differs in {', '.join(changed)}); "
                "pass --overwrite to replace it or choose another --out"
            )
    aside = out.with_name(f".{out.name}.replaced")
    replacing = options.overwrite and not options.resume and out.is_dir() and any(out.iterdir())
    if replacing:
        if aside.exists():  # an earlier overwrite was killed: the run set aside then is the last complete one
            shutil.rmtree(out)
        else:
            out.rename(aside)
    try:
        report = _run_stages(options, out, identity, train_data, eval_data, model, started)
    except BaseException:
        if replacing:
            shutil.rmtree(out, ignore_errors=True)
            aside.rename(out)
            print(f"the new run did not finish: {out} holds the run it was to replace, as it was", flush=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return report


def _run_stages(
    options: RunOptions, out: Path, identity: dict, train_data, eval_data, model, started: float
) -> dict[str, Any]:
    """``clpft run`` top to bottom, one call per stage; with --resume each stage whose output is in RUN_DIR is
    read back instead of redone."""
    show = not options.quiet
    _start_folder(options, out, identity)
    _warn_shared_queries(options, train_data, eval_data)
    cfg, mining = _one_seed_and_one_length(options, model)
    if options.resume and (finished := _finished_report(out)) is not None:
        return finished
    base, corpus_emb, encode_seconds = _base_evaluation(options, out, model, eval_data, mining, show)
    examples, stats = _mined(options, out, model, train_data, mining, corpus_emb, show)
    model, result, cfg = _trained(options, out, model, examples, cfg, train_data, show)
    tuned = _test_evaluation(options, model, eval_data, mining, show)
    kill_point("run.evaluated")
    return _report(options, cfg, out, base, tuned, stats, result, started, encode_seconds)


def _test_evaluation(options: RunOptions, model, eval_data, mining: MiningOptions, show: bool, **extra):
    """The run's test evaluation (before or after training): the same split, depth and length limits."""
    return stages.evaluate(
        model,
        eval_data,
        top_k=options.top_k,
        query_max_tokens=mining.query_max_tokens,
        passage_max_tokens=mining.passage_max_tokens,
        encode_batch_size=mining.encode_batch_size,
        show_progress=show,
        **extra,
    )


def _start_folder(options: RunOptions, out: Path, identity: dict) -> None:
    if options.resume:
        for leftover in remove_stale_temporaries(out):
            print(f"removed {leftover}, left by an interrupted write", flush=True)
    write_json(out / "run.json", identity)


def _warn_shared_queries(options: RunOptions, train_data, eval_data) -> None:
    shared = set(train_data.qrels) & set(eval_data.qrels)
    if shared:
        print(
            f"warning: {len(shared)} of the {options.eval_split} split's {len(eval_data.qrels)} queries are also "
            f"{options.train_split} queries: their {options.eval_split} scores measure training, not retrieval",
            flush=True,
        )


def _one_seed_and_one_length(options: RunOptions, model) -> tuple[TrainConfig, MiningOptions]:
    """The training and mining options with one seed and one pair of length limits (the model's, where
    shorter) for every stage."""
    cfg = options.train
    max_q, max_p = stages.token_limits(model, cfg.query_max_tokens, cfg.passage_max_tokens)
    cfg = dataclasses.replace(cfg, query_max_tokens=max_q, passage_max_tokens=max_p)
    mining = dataclasses.replace(
        options.mining, **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(SharedOptions)}
    )
    print(
        f"model: {options.model or clpft.models.DEFAULT_MODEL_NAME}; query/passage max tokens {max_q}/{max_p}",
        flush=True,
    )
    return cfg, mining


def _finished_report(out: Path) -> dict[str, Any] | None:
    """A finished run's report (metrics.json beside its model), shown again; None when the run is unfinished."""
    if not ((out / "metrics.json").is_file() and (out / "model").is_dir()):
        return None
    report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    print(f"{out} is already finished", flush=True)
    print(format_table({"base": report["base"]["metrics"], "fine-tuned": report["finetuned"]["metrics"]}), flush=True)
    return report


def _base_evaluation(options: RunOptions, out: Path, model, eval_data, mining: MiningOptions, show: bool):
    """(the untouched model's test metrics, its corpus embeddings or None when read back, seconds encoding)."""
    base_file = out / "base_metrics.json"
    if options.resume and base_file.is_file() and (out / "train.jsonl.stats.json").is_file():
        base = json.loads(base_file.read_text(encoding="utf-8"))
        print(f"resuming {out}: base metrics read back", flush=True)
        corpus_emb, encode_seconds = None, 0.0
    else:
        # The base model's corpus embeddings serve both mining and the "before" evaluation.
        started = time.perf_counter()
        with stages.exact_precision():  # the base model's test evaluation reads it
            corpus_emb = encode_corpus(model, eval_data, mining.passage_max_tokens, mining.encode_batch_size, show)
        encode_seconds = time.perf_counter() - started
        base = _test_evaluation(options, model, eval_data, mining, show, corpus_embeddings=corpus_emb, out=base_file)
    print(f"base model on {options.eval_split}: nDCG@10 {base['metrics']['ndcg@10']:.4f}", flush=True)
    return base, corpus_emb, encode_seconds


def _mined(options: RunOptions, out: Path, model, train_data, mining: MiningOptions, corpus_emb, show: bool):
    """(training rows, mining statistics): mined with the untouched model, or read back."""
    train_file, stats_file = out / "train.jsonl", out / "train.jsonl.stats.json"
    if options.resume and train_file.is_file() and stats_file.is_file():
        examples, stats = stages.read_mined(train_file)
        print(f"resuming {out}: {len(examples)} mined queries read back", flush=True)
    else:
        examples, stats = stages.mine(
            model, train_data, mining, train_file, corpus_embeddings=corpus_emb, show_progress=show
        )
    print(stats.summary(), flush=True)
    return examples, stats


def _trained(options: RunOptions, out: Path, model, examples, cfg: TrainConfig, train_data, show: bool):
    """(the fine-tuned model, its TrainResult, the config it trained with): trained (continuing from a
    checkpoint with --resume), or read back when it is already saved."""
    model_dir = out / "model"
    checkpoints = stages.checkpoints_of(model_dir)
    identity = stages.training_identity(cfg, out / "train.jsonl", options.model or clpft.models.DEFAULT_MODEL_NAME)
    state = stages.training_state(model_dir, identity, options.resume)
    cfg = dataclasses.replace(cfg, checkpoint_dir=str(checkpoints), resume=state == "checkpoint")
    if state == "finished":
        print(f"resuming {out}: the fine-tuned model is already saved; evaluating it", flush=True)
        saved = json.loads((model_dir / "training.json").read_text(encoding="utf-8"))
        result = TrainResult(**{f.name: saved[f.name] for f in dataclasses.fields(TrainResult) if f.name in saved})
        model = load_model(model_dir)
    else:
        # With a validation split, its queries rank the whole training corpus, as the test will.
        val_corpus = {d: doc.full_text for d, doc in train_data.corpus.items()} if cfg.val_fraction else None
        result = stages.train(
            model,
            examples,
            cfg,
            model_dir,
            base_model=options.model or clpft.models.DEFAULT_MODEL_NAME,
            source=str(options.data),
            val_corpus=val_corpus,
            overwrite=True,
            show_progress=show,
            train_file=out / "train.jsonl",
            card=False,  # the run writes the card once, with the test metrics (_report)
        )
    remove_all(checkpoints)  # the finished model replaces them
    return model, result, cfg


def _data_files(options: RunOptions) -> list[Path]:
    root = resolve_data(options.data)
    return [root / "corpus.jsonl", root / "queries.jsonl"] + [
        root / "qrels" / f"{split}.tsv" for split in (options.train_split, options.eval_split)
    ]


def _identity(options: RunOptions) -> dict[str, Any]:
    """What makes two runs the same run: every option but where it goes and how it is shown, and the data
    files' contents (``data.FILE``: sha256), so that a resume notices edited data."""
    flat = {
        k: v
        for k, v in dataclasses.asdict(options).items()
        if k not in ("out", "overwrite", "resume", "quiet", "train", "mining")
    }
    flat |= {f"mining.{k}": v for k, v in dataclasses.asdict(options.mining).items()}
    flat |= {
        f"train.{k}": v for k, v in dataclasses.asdict(options.train).items() if k not in ("checkpoint_dir", "resume")
    }
    root = resolve_data(options.data)
    flat |= {f"data.{path.relative_to(root)}": sha256_of(path) for path in _data_files(options)}
    return json.loads(json.dumps(flat, default=str))


def _report(
    options: RunOptions, cfg: TrainConfig, out: Path, base, tuned, stats, result, started: float, encode_seconds: float
):
    report = {
        "clpft_version": clpft.__version__,
        "data": str(options.data),
        "model": options.model or clpft.models.DEFAULT_MODEL_NAME,
        "eval_split": options.eval_split,
        "options": {
            **{k: v for k, v in dataclasses.asdict(options).items() if k not in ("train", "mining")},
            **{k: v for k, v in dataclasses.asdict(options.mining).items() if k != "query_sources"},
        },
        "neg_queries": dataclasses.asdict(sources) if (sources := options.mining.query_sources) else None,
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
            # --refit's second training, on every query: not in "training" (the guarded run's own seconds)
            "refit": result.guard.get("refit", {}).get("seconds", 0.0),
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
    write_json(
        out / "manifest.json",
        build_manifest(report["options"] | {"train": report["train_config"]}, _data_files(options), cfg.seed),
    )
    write_json(out / "metrics.json", report)  # last: it marks the run as finished
    print(format_table({"base": base["metrics"], "fine-tuned": tuned["metrics"]}), flush=True)
    print(
        f"wall time {report['seconds']['total']:.0f} s, peak memory {report['peak_rss_mb']:.0f} MB; wrote {out}/",
        flush=True,
    )
    return report
