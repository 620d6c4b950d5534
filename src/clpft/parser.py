"""clpft's argument parser: every subcommand's options, with their defaults and help, and the step from
parsed options to the Python API's settings (``TrainConfig``, ``GeneratorSettings``).

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


def _add_common(parser: argparse.ArgumentParser, defaults) -> None:
    group = parser.add_argument_group("lengths and encoding")
    group.add_argument(
        "--query-max-tokens",
        type=int,
        default=defaults.query_max_tokens,
        help="query length limit in tokens (capped by the model's max_seq_length)",
    )
    group.add_argument(
        "--passage-max-tokens",
        type=int,
        default=defaults.passage_max_tokens,
        help="passage length limit in tokens (capped by the model's max_seq_length)",
    )
    group.add_argument("--encode-batch-size", type=int, default=64, help="batch size when encoding")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (sampling, shuffling, init)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, warnings and results only")


def _add_mining(parser: argparse.ArgumentParser, defaults) -> None:
    group = parser.add_argument_group("mining (data selection)")
    group.add_argument(
        "--strategy",
        choices=("ance", "random"),
        default="ance",
        help="ance: top-ranked unlabelled documents by the base model; random: uniform (baseline)",
    )
    group.add_argument("--num-negatives", type=int, default=defaults.num_negatives, help="negatives per query")
    group.add_argument("--rank-from", type=int, default=0, help="first rank (0-based) a negative may come from")
    group.add_argument("--rank-to", type=int, default=50, help="ranks searched for negatives: rank-from..rank-to-1")
    group.add_argument(
        "--max-score-ratio",
        type=float,
        default=None,
        help="false-negative control: drop candidates scoring above R x the query's best positive "
        "(off by default, as in the paper)",
    )
    group.add_argument(
        "--max-train-queries",
        type=int,
        default=None,
        help="use a seeded sample of this many training queries (quick runs)",
    )


def _add_generation(parser: argparse.ArgumentParser, for_synth: bool = False) -> None:
    group = parser.add_argument_group(
        "generated queries (LLM, doc2query, extractive)" if for_synth else "negatives' own queries"
    )
    if not for_synth:
        group.add_argument(
            "--neg-queries",
            default="qrels",
            help="where negatives' queries come from, tried in order: qrels,llm|doc2query|extractive "
            "or none (qrels: the training split only)",
        )
        group.add_argument(
            "--queries-per-negative",
            type=int,
            default=1,
            help="later backends are tried for negatives with fewer queries than this",
        )
        group.add_argument(
            "--neg-queries-cache", default=None, help="SQLite cache of generated queries (default: beside the output)"
        )
    group.add_argument(
        "--llm-base-url",
        default=None,
        help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 (key from CLPFT_API_KEY or OPENAI_API_KEY)",
    )
    group.add_argument("--llm-model", default=None, help="model name sent to the endpoint")
    group.add_argument(
        "--llm-prompt", default=None, help="prompt template file with {document} and {n} (default: built in)"
    )
    group.add_argument("--llm-concurrency", type=int, default=4, help="requests in flight at once")
    group.add_argument("--llm-timeout", type=float, default=60.0, help="seconds per request")
    group.add_argument("--max-llm-calls", type=int, default=None, help="hard cap on HTTP calls, retries included")
    group.add_argument("--doc2query-model", default=None, help="local seq2seq (T5 doc2query) model folder")


def generator_settings(args: argparse.Namespace, backends: list[str], cache: str | None, per_doc: int):
    from clpft.negqueries import GeneratorSettings

    return GeneratorSettings(
        backends=backends,
        queries_per_negative=per_doc,
        cache_path=cache,
        llm_base_url=args.llm_base_url,
        llm_model=args.llm_model,
        llm_prompt=args.llm_prompt,
        llm_concurrency=args.llm_concurrency,
        llm_timeout=args.llm_timeout,
        max_llm_calls=args.max_llm_calls,
        doc2query_model=args.doc2query_model,
        seed=args.seed,
    )


def own_query_settings(args: argparse.Namespace, default_cache: str):
    from clpft.negqueries import parse_backends

    return generator_settings(
        args, parse_backends(args.neg_queries), args.neg_queries_cache or default_cache, args.queries_per_negative
    )


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
            parts.append(f"{name} {preset.values('all')[field]:g}")
    return f"(default: from --preset: {'; '.join(parts)})"


def _add_training(parser: argparse.ArgumentParser, defaults) -> None:
    from clpft.presets import DEFAULT_PRESET, PRESETS

    group = parser.add_argument_group(
        "training (defaults: the paper's best row, CLP + MoE on the intermediate layers, with --preset's settings)"
    )
    group.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=DEFAULT_PRESET,
        help="defaults for lr, epochs, batch size, accumulation, warm-up, tau and lambda: "
        + "; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items())
        + " (flags you give win)",
    )
    group.add_argument(
        "--loss",
        choices=("clp", "infonce", "mnrl"),
        default=defaults.loss,
        help="training loss (mnrl: sentence-transformers' MultipleNegativesRankingLoss, its defaults)",
    )
    group.add_argument(
        "--penalty-weight", type=float, default=None, help="CLP's lambda " + _preset_default("penalty_weight")
    )
    group.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="tau of InfoNCE and CLP, by what --train-only trains " + _preset_default("temperature"),
    )
    group.add_argument(
        "--moe",
        choices=("none", "intermediate", "output"),
        default=defaults.moe,
        help="upcycle this FFN dense layer of every transformer layer into experts",
    )
    group.add_argument("--num-experts", type=int, default=defaults.num_experts, help="experts per MoE layer")
    group.add_argument(
        "--experts-per-token",
        type=int,
        default=defaults.experts_per_token,
        help="top-k routing: experts each token is sent to",
    )
    group.add_argument(
        "--train-only",
        choices=("all", "intermediate", "moe"),
        default=defaults.train_only,
        help="parameters that train; the rest stay frozen",
    )
    group.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate, by what --train-only trains " + _preset_default("learning_rate"),
    )
    group.add_argument(
        "--moe-lr",
        type=float,
        default=None,
        help="with --train-only all and --moe: the MoE layers' own learning rate (default: --lr)",
    )
    group.add_argument("--epochs", type=float, default=None, help="training epochs " + _preset_default("epochs"))
    group.add_argument(
        "--batch-size", type=int, default=None, help="queries per batch " + _preset_default("batch_size")
    )
    group.add_argument(
        "--grad-accum", type=int, default=None, help="gradient accumulation steps " + _preset_default("grad_accum")
    )
    group.add_argument(
        "--warmup-ratio",
        type=float,
        default=None,
        help="share of steps with linear warm-up " + _preset_default("warmup_ratio"),
    )
    group.add_argument(
        "--max-steps",
        type=int,
        default=defaults.max_steps,
        help="stop after this many optimizer steps (-1: run all epochs)",
    )
    group.add_argument(
        "--max-queries-per-negative",
        type=int,
        default=defaults.max_queries_per_negative,
        help="own queries of one negative used by the penalty",
    )
    group.add_argument(
        "--gradcache-mini-batch",
        type=int,
        default=defaults.gradcache_mini_batch,
        help="> 0: GradCache (CachedCLPLoss), embedding this many texts at a time: large batches in "
        "small memory, same gradients",
    )
    group.add_argument(
        "--save-steps",
        type=int,
        default=0,
        help="checkpoint every N optimizer steps (0: none); checkpoints are removed once the model is saved",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its last checkpoint (run: also reuse finished stages)",
    )
    group.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default=defaults.precision,
        help="mixed-precision training (bf16/fp16 autocast; fp16 needs a CUDA GPU)",
    )
    group.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations during the backward pass: less memory for long passages, slower",
    )
    group.add_argument(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help="hold out this share of the training queries; nDCG@10 on them (ranking their positives and "
        "mined negatives) is tracked from step 0 (the untouched model) on and drawn in training_loss.png, "
        "with a warning if the run ends below step 0: tune on this, never on the test split",
    )
    group.add_argument(
        "--eval-steps",
        type=int,
        default=defaults.eval_steps,
        help="with --val-fraction: evaluate every N optimizer steps (0: as often as --eval-budget allows)",
    )
    group.add_argument(
        "--eval-budget",
        type=float,
        default=defaults.eval_budget,
        help="with --val-fraction and --eval-steps 0: keep validation under this share of the training time",
    )
    group.add_argument(
        "--no-guard",
        dest="guard",
        action="store_false",
        help="with --val-fraction: save the last state, not the best one seen (by default the best, and "
        "the untouched model when nothing beats it)",
    )
    group.add_argument(
        "--merge",
        default=defaults.merge,
        help="weight-space merge of the start and the tuned model, (1 - a) * start + a * tuned: auto (a "
        "chosen on the validation split among 0.25, 0.5, 0.75, the tuned and the start), none, or a",
    )
    group.add_argument(
        "--patience",
        type=int,
        default=defaults.patience,
        help="with --val-fraction: stop after this many evaluations without a new best (0: never)",
    )


def train_config(args: argparse.Namespace):
    from clpft.options import TrainConfig

    return TrainConfig(
        loss=args.loss,
        moe=args.moe,
        num_experts=args.num_experts,
        experts_per_token=args.experts_per_token,
        train_only=args.train_only,
        preset=args.preset,
        learning_rate=args.lr,
        moe_learning_rate=args.moe_lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        num_negatives=args.num_negatives,
        query_max_tokens=args.query_max_tokens,
        passage_max_tokens=args.passage_max_tokens,
        penalty_weight=args.penalty_weight,
        temperature=args.temperature,
        warmup_ratio=args.warmup_ratio,
        max_queries_per_negative=args.max_queries_per_negative,
        seed=args.seed,
        max_steps=args.max_steps,
        save_steps=args.save_steps,
        resume=args.resume,
        gradcache_mini_batch=args.gradcache_mini_batch,
        precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
        val_fraction=args.val_fraction,
        eval_steps=args.eval_steps,
        eval_budget=args.eval_budget,
        guard=args.guard,
        merge=args.merge,
        patience=args.patience,
    )


def build_parser() -> argparse.ArgumentParser:
    from clpft import __version__
    from clpft.options import TrainConfig

    defaults = TrainConfig()
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
    _add_mining(mine, defaults)
    _add_generation(mine)
    _add_common(mine, defaults)

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
    train.add_argument(
        "--max-train-queries",
        type=int,
        default=None,
        help="use a seeded sample of this many training queries (quick runs)",
    )
    train.add_argument(
        "--num-negatives", type=int, default=defaults.num_negatives, help="negatives per query used in training"
    )
    _add_training(train, defaults)
    _add_common(train, defaults)

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
    evaluate.add_argument("--top-k", type=int, default=100, help="documents retrieved per query")
    _add_common(evaluate, defaults)

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
    run.add_argument("--train-split", default="train", help="qrels split to mine and train on")
    run.add_argument("--eval-split", default="test", help="qrels split to evaluate on")
    run.add_argument("--top-k", type=int, default=100, help="documents retrieved per query")
    _add_mining(run, defaults)
    _add_generation(run)
    _add_training(run, defaults)
    _add_common(run, defaults)

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
    synth.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing output")
    synth.add_argument("--quiet", action="store_true", help="warnings and results only")

    from clpft.ladder import ROWS
    from clpft.presets import PRESETS

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
    ablation.add_argument("--seed", type=int, default=defaults.seed, help="first seed; seeds are seed, seed+1, ...")
    ablation.add_argument("--train-split", default="train", help="qrels split to mine and train on")
    ablation.add_argument("--eval-split", default="test", help="qrels split to evaluate on")
    budget = ablation.add_argument_group("budget, the same for every row (unset: each subcommand's default)")
    for flag, kind, where, text in ABLATION_PASSTHROUGH:
        budget.add_argument(
            flag,
            type=kind,
            default=None,
            help=f"{text} (passed to clpft {'/'.join(where)})",
            choices=tuple(PRESETS) if flag == "--preset" else None,
        )
    ablation.add_argument("--quiet", action="store_true", help="no progress output, the report only")
    for sub in commands.choices.values():
        sub.add_argument(
            "--config", default=None, help="YAML file of options (keys as the flags' names); flags override it"
        )
    return parser


# Options `clpft ablation` passes on unchanged: (flag, type, subcommands, help).
ABLATION_PASSTHROUGH = [
    ("--max-train-queries", int, ("mine",), "seeded sample of training queries"),
    ("--num-negatives", int, ("mine", "train"), "negatives per query"),
    ("--rank-from", int, ("mine",), "first rank of negatives"),
    ("--rank-to", int, ("mine",), "ranks searched for negatives"),
    ("--max-score-ratio", float, ("mine",), "false-negative control"),
    ("--neg-queries", str, ("mine",), "where negatives' queries come from"),
    ("--queries-per-negative", int, ("mine",), "queries wanted per negative"),
    ("--llm-base-url", str, ("mine",), "OpenAI-compatible endpoint"),
    ("--llm-model", str, ("mine",), "LLM model name"),
    ("--max-llm-calls", int, ("mine",), "cap on LLM calls"),
    ("--doc2query-model", str, ("mine",), "doc2query model folder"),
    ("--preset", str, ("train",), "training defaults: clpft or paper"),
    ("--epochs", float, ("train",), "training epochs"),
    ("--max-steps", int, ("train",), "optimizer steps cap"),
    ("--lr", float, ("train",), "learning rate"),
    ("--batch-size", int, ("train",), "queries per batch"),
    ("--grad-accum", int, ("train",), "gradient accumulation"),
    ("--warmup-ratio", float, ("train",), "warm-up share"),
    ("--temperature", float, ("train",), "tau"),
    ("--penalty-weight", float, ("train",), "CLP's lambda"),
    ("--query-max-tokens", int, ("mine", "train", "eval"), "query length limit"),
    ("--passage-max-tokens", int, ("mine", "train", "eval"), "passage length limit"),
    ("--encode-batch-size", int, ("mine", "train", "eval"), "encoding batch size"),
]
