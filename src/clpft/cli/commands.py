"""Command line: dispatch only (the options are declared in clpft.cli.parser). Every subcommand calls the Python API.

clpft mine  --data DIR --out train.jsonl
clpft train --train train.jsonl --out MODEL_DIR
clpft eval  --data DIR --model M --out metrics.json
clpft run   --data DIR --out RUN_DIR
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from clpft.cli.console import setup_logging
from clpft.cli.parser import build_parser
from clpft.cli.settings import (
    ablation_passthrough,
    apply_config,
    generator_settings,
    mining_options,
    train_config,
)
from clpft.errors import ClpftError, redact_secrets
from clpft.files import output_lock
from clpft.options import check_ranges


def _cmd_mine(args: argparse.Namespace) -> None:
    from clpft.cli import stages
    from clpft.data import load_dataset
    from clpft.models import load_model

    stages.check_output(args.out, overwrite=args.overwrite)
    dataset = load_dataset(args.data, args.split)
    model = load_model(args.model, trust_remote_code=args.trust_remote_code) if args.strategy == "ance" else None
    options = mining_options(args, f"{args.out}.neg_queries.sqlite")
    examples, stats = stages.mine(model, dataset, options, args.out, show_progress=not args.quiet)
    print(stats.summary())
    print(f"wrote {args.out} ({len(examples)} queries)")


def _cmd_train(args: argparse.Namespace) -> None:
    from clpft.cli import stages
    from clpft.data import read_train_jsonl
    from clpft.files import remove_stale_temporaries
    from clpft.models import DEFAULT_MODEL_NAME, load_model
    from clpft.moe.preparation import check_preparable
    from clpft.training.checkpoints import remove_all

    out = Path(args.out)
    checkpoints = stages.checkpoints_of(out)
    config = train_config(args)
    config.checkpoint_dir = str(checkpoints) if (args.save_steps or args.resume) else None
    if not Path(args.train).is_file():
        raise ClpftError(f"{args.train}: file not found")
    identity = stages.training_identity(config, args.train, args.model or DEFAULT_MODEL_NAME)
    if args.resume:
        for leftover in remove_stale_temporaries(out.parent, name=out.name):
            print(f"removed {leftover}, left by an interrupted write", flush=True)
        if stages.training_state(out, identity, resume=True) == "finished":
            remove_all(checkpoints)
            print(f"{args.out} is already finished", flush=True)
            return
    stages.check_output(out, overwrite=args.overwrite)
    if checkpoints.is_dir() and not args.resume and args.save_steps:
        raise ClpftError(f"{checkpoints} holds checkpoints of an earlier run (pass --resume to continue it)")
    model = load_model(args.model, trust_remote_code=args.trust_remote_code)
    check_preparable(model, config)  # before the training file is read and the validation corpus encoded
    examples = stages.sample_examples(read_train_jsonl(args.train), args.max_train_queries, args.seed)
    val_corpus = None
    if args.val_corpus:
        from clpft.data.beir import load_corpus

        path = Path(args.val_corpus)
        val_corpus = {
            d: doc.full_text for d, doc in load_corpus(path / "corpus.jsonl" if path.is_dir() else path).items()
        }
    result = stages.train(
        model,
        examples,
        config,
        out,
        base_model=args.model or DEFAULT_MODEL_NAME,
        source=args.train,
        val_corpus=val_corpus,
        overwrite=args.overwrite,
        show_progress=not args.quiet,
        train_file=args.train,
    )
    last = result.loss_history[-1]["loss"] if result.loss_history else float("nan")
    print(
        f"trained {result.optimizer_steps} steps in {result.seconds:.0f} s (last logged loss {last:.4f}); "
        f"wrote {args.out}"
    )


def _cmd_eval(args: argparse.Namespace) -> None:
    from clpft.cli import stages
    from clpft.cli.pipeline import format_table
    from clpft.data import load_dataset
    from clpft.files import write_json
    from clpft.models import DEFAULT_MODEL_NAME, load_model

    if args.out:
        stages.check_output(args.out, overwrite=args.overwrite)
    if not args.data and not args.mteb:
        raise ClpftError("clpft eval needs --data, --mteb or both")
    dataset = load_dataset(args.data, args.split) if args.data else None
    model = load_model(args.model, trust_remote_code=args.trust_remote_code)
    result: dict = {"model": args.model or DEFAULT_MODEL_NAME, "data": args.data}
    if dataset is not None:
        result |= stages.evaluate(
            model,
            dataset,
            top_k=args.top_k,
            query_max_tokens=args.query_max_tokens,
            passage_max_tokens=args.passage_max_tokens,
            encode_batch_size=args.encode_batch_size,
            show_progress=not args.quiet,
        )
    if args.mteb:
        from clpft.evaluation.mteb_bridge import run_mteb

        result["mteb"] = run_mteb(model, [t.strip() for t in args.mteb.split(",") if t.strip()])
    if args.out:
        write_json(args.out, result)
    if dataset is not None:
        print(format_table({args.split: result["metrics"]}))
    for task, scores in result.get("mteb", {}).items():
        print(f"MTEB {task}: main score {scores['main_score']:.4f}")


def _cmd_run(args: argparse.Namespace) -> None:
    from clpft.cli.pipeline import RunOptions, run

    run(
        RunOptions(
            data=args.data,
            out=args.out,
            model=args.model,
            trust_remote_code=args.trust_remote_code,
            train_split=args.train_split,
            eval_split=args.eval_split,
            top_k=args.top_k,
            overwrite=args.overwrite,
            resume=args.resume,
            quiet=args.quiet,
            mining=mining_options(args, os.path.join(args.out, "neg_queries.sqlite")),
            train=train_config(args),
        )
    )


def _cmd_ablation(args: argparse.Namespace) -> None:
    from clpft.ablation import AblationOptions, run_ablation

    passed: dict[str, list[str]] = {
        k: (["--trust-remote-code"] if args.trust_remote_code else []) for k in ("mine", "train", "eval")
    }
    for flag, _, where, _, _ in ablation_passthrough():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            for command in where:
                passed[command] += [flag, str(value)]
    run_ablation(
        AblationOptions(
            data=args.data,
            out=args.out,
            rows=[r.strip() for r in args.rows.split(",") if r.strip()],
            seeds=args.seeds,
            model=args.model,
            train_split=args.train_split,
            eval_split=args.eval_split,
            mine_args=passed["mine"],
            train_args=passed["train"],
            eval_args=passed["eval"],
            seed=args.seed,
            quiet=args.quiet,
        ),
        main,
    )


def _cmd_synth(args: argparse.Namespace) -> None:
    from clpft.ownqueries import parse_backends
    from clpft.ownqueries.synth import synthesize

    settings = generator_settings(
        args,
        parse_backends(args.backends, "--backends"),
        args.cache or f"{args.out.rstrip('/')}.cache.sqlite",
        args.queries_per_doc,
    )
    summary = synthesize(args.data, args.out, settings, args.queries_per_doc, args.max_docs, args.overwrite)
    for line in summary["backends"]:
        print(line)
    print(
        f"wrote {args.out}: {summary['queries']} queries for {summary['documents']} documents "
        f"({summary['documents_without_queries']} without any, {summary['dropped_ambiguous']} ambiguous dropped)"
    )


FILE_OUTPUTS = ("mine", "eval")  # the others write a folder


def check_output_kind(out: Path, folder: bool) -> None:
    """An --out of the wrong kind (a file where a folder goes, or the reverse) is refused before any work."""
    if folder and out.is_file():
        raise ClpftError(f"{out} is a file; this command writes a folder there")
    if not folder and out.is_dir():
        raise ClpftError(f"{out} is a folder; this command writes a file there")


COMMANDS = {
    "synth": _cmd_synth,
    "mine": _cmd_mine,
    "train": _cmd_train,
    "eval": _cmd_eval,
    "run": _cmd_run,
    "ablation": _cmd_ablation,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        apply_config(parser, argv)
    except ClpftError as error:
        print(f"clpft: error: {redact_secrets(str(error))}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        check_ranges(vars(args))  # before any data or model is loaded
    except ClpftError as error:
        print(f"clpft: error: {error}", file=sys.stderr)
        return 2
    setup_logging(args.quiet)
    from clpft.training.runtime import bound_malloc

    try:
        bound_malloc()  # before any tensor: CLPFT_MALLOC's allocator settings (clpft.training.runtime)
    except ClpftError as error:
        print(f"clpft: error: {error}", file=sys.stderr)
        return 2
    from clpft import precision

    try:
        out = getattr(args, "out", None)
        if out:
            check_output_kind(Path(out), folder=args.command not in FILE_OUTPUTS)
        lock = output_lock(out) if out else contextlib.nullcontext()
        with lock, precision.use(getattr(args, "precision", None) or "auto"):  # every encoding under the command
            COMMANDS[args.command](args)
    except ClpftError as error:
        print(f"clpft: error: {redact_secrets(str(error))}", file=sys.stderr)
        return 2
    except OSError as error:
        # Disk full, read-only or missing folders, permissions: the user's environment, not a bug.
        where = f"{error.filename}: " if error.filename else ""
        print(f"clpft: error: {redact_secrets(where + (error.strerror or str(error)))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clpft: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
