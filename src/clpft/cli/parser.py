"""clpft's argument parser: every subcommand's options, with their defaults and help, and the step from
parsed options to the Python API's settings (``TrainConfig``, ``QuerySources``).

Ranges are checked in ``clpft.options`` right after parsing; the CLI (``clpft.cli``) only dispatches.
"""

from __future__ import annotations

import argparse


class _Parser(argparse.ArgumentParser):
    """argparse with clpft's one-line errors (argparse itself prints the usage block first)."""

    def error(self, message: str):
        self.exit(2, f"clpft: error: {self.prog}: {message}\n")


def _add_model(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--model",
        required=required,
        default=None,
        help="local model folder or hub id (e.g. BAAI/bge-m3); default: the packaged all-MiniLM-L6-v2",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a model folder's own Python code to run (never needed for clpft's MoE models)",
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    from clpft.options import MiningOptions, TrainConfig

    group = parser.add_argument_group("lengths and encoding")
    add_options(group, TrainConfig, ("common",))
    add_options(group, MiningOptions, ("common",), shared=False)  # the shared lengths and seed: TrainConfig's
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, warnings and results only")


def _add_mining(parser: argparse.ArgumentParser) -> None:
    from clpft.options import MiningOptions, TrainConfig

    group = parser.add_argument_group("mining (data selection)")
    add_options(group, MiningOptions, ("mining", "sampling"))
    add_options(group, TrainConfig, ("negatives",))


def _add_generation(parser: argparse.ArgumentParser, for_synth: bool = False) -> None:
    from clpft.options import QuerySources

    group = parser.add_argument_group(
        "generated queries (LLM, doc2query, extractive)" if for_synth else "negatives' own queries"
    )
    if not for_synth:
        # the text forms of QuerySources.backends and .cache_path (`clpft synth` has its own: --backends, --cache)
        group.add_argument(
            "--neg-queries",
            default="qrels",
            help="where negatives' queries come from, tried in order: qrels,llm|doc2query|extractive "
            "or none (qrels: the training split only)",
        )
        group.add_argument(
            "--neg-queries-cache", default=None, help="SQLite cache of generated queries (default: beside the output)"
        )
        add_options(group, QuerySources, ("own-queries",))
    add_options(group, QuerySources, ("generation",))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to every option's help, except where the help already says its default
    (the options whose defaults come from --preset)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _preset_default(field: str) -> str:
    """'(default: from --preset: paper 1e-05; clpft 1e-05 (all), 0.0001 (intermediate), 0.0001 (moe))'
    for one TrainConfig field: per --train-only where the preset's value depends on it."""
    from clpft.presets import PRESETS

    parts = []
    for name, preset in PRESETS.items():
        if field in ("learning_rate", "temperature"):
            by_scope = getattr(preset, field)
            if len(set(by_scope.values())) == 1:
                parts.append(f"{name} {by_scope['all']:g}")
            else:
                parts.append(f"{name} " + ", ".join(f"{v:g} ({k})" for k, v in by_scope.items()))
        else:
            value = preset.values()[field]
            parts.append(f"{name} {value}" if isinstance(value, str) else f"{name} {value:g}")
    return f"(default: from --preset: {'; '.join(parts)})"


def add_options(target, cls: type, groups: tuple[str, ...], shared: bool = True) -> None:
    """Add the options ``cls`` declares (``clpft.options.option`` fields of these groups) to ``target``
    (a parser or an argument group): flag, type, choices, default and help all come from the field, so an
    option is declared once. ``shared=False``: without SharedOptions' fields (added with the other class)."""
    from clpft.options import choices_of, cli_fields

    for f in cli_fields(cls, groups, shared):
        meta = f.metadata
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        text = meta["help"] + (" " + _preset_default(f.name) if meta.get("preset") else "")
        if f.type is bool:
            if meta.get("negative"):
                target.add_argument(meta["negative"], dest=f.name, action="store_false", help=text)
            else:
                target.add_argument(flag, dest=f.name, action="store_true", help=text)
            continue
        choices = meta.get("choices") or choices_of(f.type)
        base = next((t for t in (int, float) if f.type in (t, t | None)), None)
        target.add_argument(
            flag,
            dest=f.name,
            type=None if choices else base,
            choices=choices,
            default=None if meta.get("preset") else f.default,
            help=text,
        )


def _add_training(parser: argparse.ArgumentParser) -> None:
    from clpft.options import TrainConfig

    group = parser.add_argument_group(
        "training (defaults: the paper's best row, CLP + MoE on the intermediate layers, with --preset's settings)"
    )
    add_options(group, TrainConfig, ("training",))


def build_parser() -> argparse.ArgumentParser:
    from clpft import __version__
    from clpft.options import MiningOptions, SharedOptions, SplitOptions, TrainConfig

    default_seed = SharedOptions.__dataclass_fields__["seed"].default
    formatter = _HelpFormatter
    parser = _Parser(
        prog="clpft",
        description="Fine-tune text-embedding models for retrieval with the Contrastive Learning Penalty "
        "(Yu 2024, arXiv:2412.17364): ANCE hard negatives, CLP loss, MoE upcycling.",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"clpft {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mine = commands.add_parser(
        "mine",
        formatter_class=formatter,
        help="mine hard negatives -> train.jsonl",
        description="Mine negatives for each training query with the model and attach "
        "each negative's own queries from the training qrels.",
    )
    mine.add_argument("--data", required=True, help="BEIR-layout dataset folder")
    mine.add_argument("--split", default="train", help="qrels split with the training queries")
    mine.add_argument("--out", required=True, help="training-set file to write (train.jsonl)")
    _add_model(mine)
    _add_mining(mine)
    _add_generation(mine)
    _add_common(mine)

    train = commands.add_parser(
        "train",
        formatter_class=formatter,
        help="fine-tune a model on train.jsonl",
        description="Fine-tune with CLP (or InfoNCE), optionally upcycling the FFN to MoE.",
    )
    train.add_argument("--train", required=True, help="training-set file (train.jsonl)")
    train.add_argument("--out", required=True, help="model folder to write")
    _add_model(train)
    train.add_argument(
        "--val-corpus",
        default=None,
        help="with --val-fraction: the held-out queries rank this whole corpus (corpus.jsonl or a BEIR "
        "folder), as the test does, instead of the pool of their positives and mined negatives",
    )
    sampling = train.add_argument_group("training rows")
    add_options(sampling, MiningOptions, ("sampling",))
    add_options(sampling, TrainConfig, ("negatives",))
    _add_training(train)
    _add_common(train)

    evaluate = commands.add_parser(
        "eval",
        formatter_class=formatter,
        help="dense-retrieval metrics on a split",
        description="nDCG@5/@10, recall@100, MRR@10 and MAP (pytrec_eval), per query too.",
    )
    evaluate.add_argument(
        "--data",
        default=None,
        help="BEIR-layout dataset folder (or beir:NAME / miracl:LANG); needed unless --mteb is given",
    )
    evaluate.add_argument(
        "--mteb",
        default=None,
        metavar="TASK[,TASK...]",
        help="also evaluate on these MTEB tasks through the mteb package (pip install mteb; "
        "it downloads the task data)",
    )
    evaluate.add_argument("--split", default="test", help="qrels split to evaluate on")
    _add_model(evaluate)
    evaluate.add_argument("--out", default=None, help="metrics JSON file to write (mean and per-query values)")
    add_options(evaluate, SplitOptions, ("retrieval",))
    _add_common(evaluate)

    run = commands.add_parser(
        "run",
        formatter_class=formatter,
        help="mine + train + evaluate before/after",
        description="The whole method on one dataset: writes RUN_DIR/train.jsonl, "
        "RUN_DIR/model/ and RUN_DIR/metrics.json and prints a before/after table.",
    )
    run.add_argument("--data", required=True, help="BEIR-layout dataset folder")
    run.add_argument("--out", required=True, help="run folder to write")
    _add_model(run)
    add_options(run, SplitOptions, ("splits", "retrieval"))
    _add_mining(run)
    _add_generation(run)
    _add_training(run)
    _add_common(run)

    synth = commands.add_parser(
        "synth",
        formatter_class=formatter,
        help="generate training queries for a corpus",
        description="For a corpus with no (or few) queries: generate queries per document and "
        "write a BEIR folder (train split) that clpft run accepts. Duplicates, verbatim copies of "
        "the document and queries generated for several documents are dropped.",
    )
    synth.add_argument("--data", required=True, help="folder with corpus.jsonl")
    synth.add_argument("--out", required=True, help="BEIR folder to write")
    synth.add_argument("--backends", default="extractive", help="generators tried in order: llm, doc2query, extractive")
    synth.add_argument("--queries-per-doc", type=int, default=3, help="queries per document")
    synth.add_argument("--max-docs", type=int, default=None, help="a seeded sample of documents")
    synth.add_argument("--cache", default=None, help="SQLite cache of generated queries (default: OUT.cache.sqlite)")
    _add_generation(synth, for_synth=True)
    synth.add_argument("--seed", type=int, default=default_seed, help="random seed")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing output")
    synth.add_argument("--quiet", action="store_true", help="warnings and results only")

    from clpft.ablation.ladder import ROWS

    ablation = commands.add_parser(
        "ablation",
        formatter_class=formatter,
        help="the paper's ladder of rows with significance tests",
        description="Train and evaluate every row of the ladder on the same mined data, seeds and budget; writes "
        "RUN_DIR/report.md, report.json and report.png. Finished rows are cached and not recomputed. "
        "Rows: " + "; ".join(f"{name}: {row.description}" for name, row in ROWS.items()) + ".",
    )
    ablation.add_argument("--data", required=True, help="BEIR-layout dataset folder")
    ablation.add_argument("--out", required=True, help="ablation folder (reused: finished rows are skipped)")
    _add_model(ablation)
    ablation.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows to run")
    ablation.add_argument("--seeds", type=int, default=1, help="training seeds per row (mean ± std)")
    ablation.add_argument("--seed", type=int, default=default_seed, help="first seed; seeds are seed, seed+1, ...")
    add_options(ablation, SplitOptions, ("splits",))
    budget = ablation.add_argument_group("budget, the same for every row (unset: each subcommand's default)")
    from clpft.cli.settings import ablation_passthrough

    for flag, kind, where, text, choices, name in ablation_passthrough():
        budget.add_argument(
            flag, dest=name, type=kind, default=None, choices=choices, help=f"{text} (as in clpft {'/'.join(where)})"
        )
    ablation.add_argument("--quiet", action="store_true", help="no progress output, the report only")
    for sub in commands.choices.values():
        sub.add_argument(
            "--config", default=None, help="YAML file of options (keys as the flags' names); flags override it"
        )
    return parser
