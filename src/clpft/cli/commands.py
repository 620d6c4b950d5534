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
    ablation_settings,
    apply_config,
    generator_settings,
    mining_options,
    train_config,
)
from clpft.cli.subcommands import eval_command, mine_command, train_command
from clpft.errors import ClpftError, redact_secrets
from clpft.files import output_lock
from clpft.options import check_ranges


def _cmd_mine(args: argparse.Namespace) -> None:
    mine_command(
        args.data,
        args.split,
        args.out,
        mining_options(args, f"{args.out}.neg_queries.sqlite"),
        model=args.model,
        trust_remote_code=args.trust_remote_code,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )


def _cmd_train(args: argparse.Namespace) -> None:
    train_command(
        args.train,
        args.out,
        train_config(args),
        model=args.model,
        trust_remote_code=args.trust_remote_code,
        max_train_queries=args.max_train_queries,
        val_corpus=args.val_corpus,
        overwrite=args.overwrite,
        resume=args.resume,
        quiet=args.quiet,
    )


def _cmd_eval(args: argparse.Namespace) -> None:
    eval_command(
        args.data,
        args.split,
        args.out,
        model=args.model,
        trust_remote_code=args.trust_remote_code,
        top_k=args.top_k,
        query_max_tokens=args.query_max_tokens,
        passage_max_tokens=args.passage_max_tokens,
        encode_batch_size=args.encode_batch_size,
        mteb=args.mteb,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )


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
            train=train_config(args),
            mining=mining_options(args, os.path.join(args.out, "neg_queries.sqlite")),
        )
    )


def _cmd_ablation(args: argparse.Namespace) -> None:
    from clpft.ablation import AblationOptions, run_ablation

    mining, train = ablation_settings(args)
    run_ablation(
        AblationOptions(
            data=args.data,
            out=args.out,
            rows=[r.strip() for r in args.rows.split(",") if r.strip()],
            seeds=args.seeds,
            model=args.model,
            trust_remote_code=args.trust_remote_code,
            train_split=args.train_split,
            eval_split=args.eval_split,
            mining=mining,
            train=train,
            seed=args.seed,
            quiet=args.quiet,
        )
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
