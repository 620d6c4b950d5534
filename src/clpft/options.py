"""The range of every numeric option, in one place, checked as soon as the options are known.

The command line checks them right after parsing (before any data or model is loaded, so a bad value
costs milliseconds, not a corpus encoding), and ``TrainConfig`` checks its own fields when it is
built, so the Python API refuses the same values with the same one-line message. A range is keyed by
the option's destination name (``--penalty-weight`` -> ``penalty_weight``); where the Python field has
another name than the flag (``--lr`` -> ``learning_rate``), ``FIELD_OF_FLAG`` says so.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from clpft.errors import ClpftError
from clpft.presets import DEFAULT_PRESET, PRESETS, preset_values


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself not allowed
    high_open: bool = False
    integer: bool = False
    also: tuple[float, ...] = ()  # single values allowed outside [low, high], each with its meaning
    meaning: str = ""  # what the values in ``also`` mean, for the message

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else what is wrong with it."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {value!r}"
        if self.integer and value != int(value):
            return f"must be a whole number, got {value}"
        if value in self.also:
            return None
        if value != value or value in (float("inf"), float("-inf")):
            return f"must be a finite number, got {value}"
        too_low = self.low is not None and (value < self.low or (self.low_open and value == self.low))
        too_high = self.high is not None and (value > self.high or (self.high_open and value == self.high))
        if value != value or too_low or too_high:  # value != value: NaN
            return f"must be {self.describe()}, got {value}"
        return None

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'above' if self.low_open else 'at least'} {self.low:g}"
        else:
            text = f"{'below' if self.high_open else 'at most'} {self.high:g}"
        if self.also:
            text = " or ".join(f"{v:g}" for v in self.also) + f" ({self.meaning}) or {text}"
        return text


COUNT = Range(1, integer=True)
NON_NEGATIVE_COUNT = Range(0, integer=True)
POSITIVE = Range(0, low_open=True)
SHARE = Range(0, 1, high_open=True)
SEED = Range(0, 2**32 - 1, integer=True)  # numpy's seed range

# The ranges of the options declared by hand in clpft.cli.parser; the dataclasses' options carry their own
# (``option(..., range=...)``), and ``ranges()`` holds both.
RANGES: dict[str, Range] = {
    # lengths, encoding, retrieval
    "seeds": COUNT,
    # `clpft synth`
    "queries_per_doc": COUNT,
    "max_docs": COUNT,
    # TrainConfig's Python-only fields
    "logging_steps": NON_NEGATIVE_COUNT,
}

# Flags whose Python field has another name.
FIELD_OF_FLAG = {"lr": "learning_rate", "moe_lr": "moe_learning_rate"}
FLAG_OF_FIELD = {field: flag for flag, field in FIELD_OF_FLAG.items()}


def ranges() -> dict[str, Range]:
    """Every option's range, by field name: ``RANGES`` and the ones declared with the options."""
    declared = {
        f.name: f.metadata["range"]
        for cls in (TrainConfig, MiningOptions, QuerySources, SplitOptions)
        for f in dataclasses.fields(cls)
        if f.metadata.get("range") is not None  # MiningOptions' seed and lengths are TrainConfig's options
    }
    return RANGES | declared


def check_ranges(values: Mapping[str, Any]) -> None:
    """Raise a one-line ClpftError for the first value out of its range (None means "not set": fine).

    ``values`` maps option names (argparse destinations or TrainConfig fields) to values; names
    without a range are ignored. Also checks the pairs that limit each other."""
    every = ranges()
    for name, value in values.items():
        field = FIELD_OF_FLAG.get(name, name)
        rule = every.get(field)
        if rule is None or value is None:
            continue
        problem = rule.problem(value)
        if problem:
            raise ClpftError(f"--{FLAG_OF_FIELD.get(field, field).replace('_', '-')} {problem}")
    rank_from, rank_to = values.get("rank_from"), values.get("rank_to")
    if rank_from is not None and rank_to is not None and rank_from >= rank_to:
        raise ClpftError(f"--rank-from must be below --rank-to, got {rank_from} and {rank_to}")
    experts, per_token = values.get("num_experts"), values.get("experts_per_token")
    if experts is not None and per_token is not None and per_token > experts:
        raise ClpftError(f"--experts-per-token must be at most --num-experts, got {per_token} of {experts}")


def parse_grid(text: str) -> tuple[float, ...]:
    """``--merge-grid``: comma-separated α strictly between 0 and 1 (0 and 1 are always candidates)."""
    try:
        alphas = tuple(sorted({float(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise ValueError(f"--merge-grid must be numbers separated by commas, got {text!r}") from None
    if not alphas or any(not 0 < a < 1 for a in alphas):
        raise ValueError(f"--merge-grid must list numbers strictly between 0 and 1, got {text!r}")
    return alphas


def parse_merge(value: str | float | None) -> str | float:
    """ "none", "auto" or a number in [0, 1]; anything else raises ValueError with the message to show."""
    if value is None or value == "none":
        return "none"
    if value == "auto":
        return "auto"
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"--merge must be auto, none or a number in [0, 1], got {value!r}") from None
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--merge must be auto, none or a number in [0, 1], got {value!r}")
    return alpha


def option(
    default: Any,
    help: str,
    *,
    group: str = "training",
    flag: str | None = None,
    range: Range | None = None,  # noqa: A002 (the word the option's readers expect)
    **extra: Any,
) -> Any:
    """A dataclass field that is also a command-line option: its flag (default ``--field-name``), help and
    argparse group live here, with the field; ``clpft.cli.parser`` builds the option from it, ``--config``
    YAML keys and ``clpft ablation``'s pass-through follow from the parser, and ``range`` is checked at
    parse time and when the dataclass is built (``check_ranges``). ``extra``: ``preset=True`` (the default
    comes from ``--preset``), ``negative="--no-x"`` (a boolean that defaults to True and is turned off by
    that flag), ``ablation=False`` (a ladder row sets it, so `clpft ablation` does not pass it on),
    ``choices`` (when the type is not a ``Literal``)."""
    return field(default=default, metadata={"help": help, "group": group, "flag": flag, "range": range, **extra})


@dataclass(kw_only=True)
class SharedOptions:
    """The options mining and training both read (one flag each, one field each): TrainConfig and
    MiningOptions extend this, and `clpft run` gives both the same values."""

    num_negatives: int = option(4, "negatives per query", group="negatives", range=COUNT)
    query_max_tokens: int = option(
        128, "query length limit in tokens (capped by the model's max_seq_length)", group="common", range=COUNT
    )
    passage_max_tokens: int = option(
        512, "passage length limit in tokens (capped by the model's max_seq_length)", group="common", range=COUNT
    )
    seed: int = option(42, "random seed (sampling, shuffling, init)", group="common", range=SEED)

    def __post_init__(self) -> None:
        check_choices(self)


@dataclass
class TrainConfig(SharedOptions):
    """Training settings. Fields left at None come from ``preset`` (clpft.presets): ``"clpft"`` (tuned
    defaults) or ``"paper"`` (Yu 2024); the learning rate and temperature also depend on ``train_only``.

    Every field with ``option(...)`` is a command-line flag of `clpft train` and `clpft run` (group
    "training"; "common" ones are also `clpft mine`'s and `clpft eval`'s): declared here once."""

    preset: str = option(
        DEFAULT_PRESET, "defaults for the fields marked 'from --preset' (flags you give win)", choices=tuple(PRESETS)
    )
    loss: Literal["clp", "infonce", "mnrl"] = option(
        "clp", "training loss (mnrl: sentence-transformers' MultipleNegativesRankingLoss, its defaults)", ablation=False
    )
    moe: Literal["none", "intermediate", "output"] = option(
        "intermediate", "upcycle this FFN dense layer of every transformer layer into experts", ablation=False
    )
    num_experts: int = option(2, "experts per MoE layer", range=COUNT)
    experts_per_token: int = option(1, "top-k routing: experts each token is sent to", range=COUNT)
    train_only: Literal["all", "intermediate", "moe"] | None = option(
        None, "parameters that train; the rest stay frozen", preset=True, ablation=False
    )
    learning_rate: float | None = option(
        None, "learning rate, by what --train-only trains", flag="--lr", preset=True, range=Range(0)
    )
    moe_learning_rate: float | None = option(
        None,
        "with --train-only all and --moe: the MoE layers' own learning rate (default: --lr)",
        flag="--moe-lr",
        range=Range(0),
    )
    epochs: float | None = option(None, "training epochs", preset=True, range=POSITIVE)
    batch_size: int | None = option(None, "queries per batch", preset=True, range=COUNT)
    grad_accum: int | None = option(None, "gradient accumulation steps", preset=True, range=COUNT)
    penalty_weight: float | None = option(None, "CLP's lambda", preset=True, range=Range(0, 1))
    temperature: float | None = option(
        None, "tau of InfoNCE and CLP, by what --train-only trains", preset=True, range=POSITIVE
    )
    hardness_strength: float = option(
        0.0,
        "clp/infonce: add this times each own hard negative's cosine (gradient stopped) to its logit, "
        "weighting the harder ones (EmbeddingGemma: 5); 0: off",
        range=Range(0),
    )
    warmup_ratio: float | None = option(None, "share of steps with linear warm-up", preset=True, range=SHARE)
    max_queries_per_negative: int = option(8, "own queries of one negative used by the penalty", range=COUNT)
    weight_decay: float = option(0.0, "AdamW's decoupled weight decay", range=Range(0))
    max_steps: int = option(
        -1,
        "stop after this many optimizer steps (-1: run all epochs)",
        range=Range(1, integer=True, also=(-1,), meaning="all epochs"),
    )
    logging_steps: int = 0  # 0: about 20 log lines per run
    gradcache_mini_batch: int | None = option(
        None,
        "> 0: GradCache (CachedCLPLoss), embedding this many texts of a column at a time: large batches in "
        "small memory, same gradients; 0: off",
        preset=True,
        range=NON_NEGATIVE_COUNT,
    )
    save_steps: int = option(
        0,
        "checkpoint every N optimizer steps (0: none); checkpoints are removed once the model is saved",
        range=NON_NEGATIVE_COUNT,
    )
    checkpoint_dir: str | None = None  # where checkpoints go (default: a temporary folder)
    resume: bool = option(
        False,
        "continue an interrupted run from its last checkpoint (run: also reuse finished stages)",
        ablation=False,
    )
    val_fraction: float | None = option(
        None,
        "hold out this share of the training queries (0: none) for the guard: nDCG@10 on them is tracked from "
        "step 0 (the untouched model) on, drawn in training_loss.png, and chooses the saved state and merge; "
        "tune on this, never on the test split",
        preset=True,
        range=SHARE,
    )
    eval_steps: int = option(
        0,
        "with --val-fraction: evaluate every N optimizer steps (0: steps planned before training within --eval-budget)",
        range=NON_NEGATIVE_COUNT,
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto",
        "auto: bf16 autocast where the hardware computes bf16 natively (CPUs with AVX-512 BF16 or AMX, recent "
        "GPUs), else fp32; used by encoding and training (fp16 needs a CUDA GPU)",
        group="common",
    )
    gradient_checkpointing: bool = option(
        False, "recompute activations during the backward pass: less memory for long passages, slower"
    )
    guard: bool = option(
        True,
        "with --val-fraction: save the last state, not the best one seen (by default the best, and the untouched "
        "model when nothing beats it)",
        negative="--no-guard",
    )
    merge: str | None = option(
        None,
        "weight-space merge of the start and the tuned model, (1 - a) * start + a * tuned: auto (a chosen on the "
        "validation split among 0.25, 0.5, 0.75, the tuned and the start), none, or a",
        preset=True,
    )
    merge_grid: str | None = option(
        None,
        "with --merge auto: the merges scored, α between 0 and 1 separated by commas (each costs one evaluation)",
        preset=True,
    )
    select: Literal["one-se", "best", "clear-best"] | None = option(
        None,
        "with the guard: which candidate is saved: one-se (the one nearest the start within one standard error of "
        "the best validation score), best (the best score) or clear-best (the best, if it leads the start by more "
        "than one standard error, else the start)",
        preset=True,
    )
    ema: float | None = option(
        None,
        "with the guard: also keep an exponential moving average of the weights with this decay (0: off), a "
        "candidate beside the best step (merges start from whichever scores higher)",
        preset=True,
        range=Range(0, 1, high_open=True),
    )
    refit: bool = option(
        False,
        "with the guard: once it has chosen the schedule's stopping point and the merge, train again from the start "
        "on every training query (the held-out ones too) to that point and apply the same merge",
    )
    eval_budget: float = option(
        0.15,
        "with --val-fraction and --eval-steps 0: keep validation under this share of the training's work "
        "(counted in tokens, so the evaluated steps do not depend on the machine's speed or load)",
        range=Range(0, 1, low_open=True),
    )
    patience: int = option(
        0,
        "with --val-fraction: stop after this many evaluations without a new best (0: never)",
        range=NON_NEGATIVE_COUNT,
    )

    def __post_init__(self) -> None:
        merge_given = self.merge is not None
        # what the preset filled in is remembered (an attribute, not a field: it is no setting of its own), so
        # that ``replace`` can fill it again for the new values
        preset = preset_values(self.preset, self.train_only)
        self._from_preset = tuple(name for name in preset if getattr(self, name) is None)
        for name in self._from_preset:
            setattr(self, name, preset[name])
        super().__post_init__()
        if not merge_given and self.merge == "auto" and not (self.guard and self.val_fraction > 0):
            self.merge = "none"  # the preset's auto needs the validation split the run turned off
        check_ranges(self.__dict__)
        try:
            self.merge = parse_merge(self.merge)
            self.merge_grid = ",".join(f"{a:g}" for a in parse_grid(self.merge_grid))
        except ValueError as error:
            raise ClpftError(str(error)) from None
        if self.merge == "auto" and not (self.guard and self.val_fraction > 0):
            raise ClpftError(
                "--merge auto chooses α on the validation split: it needs --val-fraction above 0 (and the guard)"
            )

    def replace(self, **changes: Any) -> TrainConfig:
        """``dataclasses.replace`` whose preset fills the fields it filled here again, for the new values: a
        ladder row that trains only the MoE layers gets the preset's learning rate for that, where the flags
        gave none."""
        return dataclasses.replace(self, **{name: None for name in self._from_preset} | changes)

    def given(self) -> dict[str, Any]:
        """The fields set to something other than their declared default or their preset's value."""
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        return {
            f.name: getattr(self, f.name)
            for f in cli_fields(TrainConfig)
            if f.name not in self._from_preset and getattr(self, f.name) != defaults[f.name]
        }


@dataclass(kw_only=True)
class MiningOptions(SharedOptions):
    """How `clpft mine` (and the first stage of `clpft run`) builds the training set: the fields declared
    with ``option`` are command-line flags, and the shared ones (SharedOptions) are TrainConfig's flags too."""

    strategy: Literal["ance", "random"] = option(
        "ance",
        "ance: top-ranked unlabelled documents by the base model; random: uniform (baseline)",
        group="mining",
        ablation=False,  # a ladder row says which negatives it trains on
    )
    rank_from: int = option(
        0, "first rank (0-based) a negative may come from", group="mining", range=NON_NEGATIVE_COUNT
    )
    rank_to: int = option(50, "ranks searched for negatives: rank-from..rank-to-1", group="mining", range=COUNT)
    max_score_ratio: float | None = option(
        None,
        "false-negative control: drop candidates scoring above R x the query's best positive (off by default, "
        "as in the paper)",
        group="mining",
        range=POSITIVE,
    )
    max_train_queries: int | None = option(
        None, "use a seeded sample of this many training queries (quick runs)", group="sampling", range=COUNT
    )
    encode_batch_size: int = option(64, "batch size when encoding", group="common", range=COUNT)
    query_sources: Any = None  # clpft.ownqueries.QuerySources; None: the qrels only


def check_choices(options: Any) -> None:
    """Every field declared with ``Literal[...]`` holds one of its values (None allowed where the type says
    so): the one place choices are checked, for the command line and the Python API alike."""
    for name, kind in typing.get_type_hints(type(options)).items():
        choices = choices_of(kind)
        value = getattr(options, name, None)
        if choices and value is not None and value not in choices:
            flag = FLAG_OF_FIELD.get(name, name).replace("_", "-")
            raise ClpftError(f"--{flag} must be one of {', '.join(map(str, choices))}, got {value!r}")


@dataclass(kw_only=True)
class SplitOptions:
    """Which qrels splits a run trains and is tested on, and how deep it retrieves: the fields `clpft run`
    and `clpft ablation` share (RunOptions and AblationOptions extend this), ``top_k`` `clpft eval`'s too."""

    train_split: str = option("train", "qrels split to mine and train on", group="splits")
    eval_split: str = option("test", "qrels split to evaluate on", group="splits")
    # the metrics go down to recall@100, which a shorter ranking would report under a wrong name
    top_k: int = option(
        100,
        "documents retrieved per query (at least 100: recall@100)",
        group="retrieval",
        range=Range(100, integer=True),
    )


@dataclass
class QuerySources:
    """Where the negatives' own queries come from (clpft.ownqueries): the backends tried in order, and the
    generators' settings. The fields declared with ``option`` are `clpft mine` / `run` / `synth` flags (the
    generators' in the group "generation", the negatives' own in "own-queries"); ``backends`` and
    ``cache_path`` come from ``--neg-queries`` / ``--neg-queries-cache`` (``--backends`` / ``--cache`` for
    `clpft synth`), which are text forms of them."""

    backends: list[str] = field(default_factory=lambda: ["qrels"])
    queries_per_negative: int = option(
        1, "later backends are tried for negatives with fewer queries than this", group="own-queries", range=COUNT
    )
    cache_path: str | None = None
    llm_base_url: str | None = option(
        None,
        "OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 (key from CLPFT_API_KEY or OPENAI_API_KEY)",
        group="generation",
    )
    llm_model: str | None = option(None, "model name sent to the endpoint", group="generation")
    llm_prompt: str | None = option(
        None, "prompt template file with {document} and {n} (default: built in)", group="generation"
    )
    llm_concurrency: int = option(4, "requests in flight at once", group="generation", range=COUNT)
    llm_timeout: float = option(60.0, "seconds per request", group="generation", range=POSITIVE)
    llm_max_retries: int = 4
    max_llm_calls: int | None = option(
        None, "hard cap on HTTP calls, retries included", group="generation", range=NON_NEGATIVE_COUNT
    )
    doc2query_model: str | None = option(None, "local seq2seq (T5 doc2query) model folder", group="generation")
    seed: int = 42


def cli_fields(cls: type, groups: tuple[str, ...] | None = None, shared: bool = True) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are command-line options (declared with ``option``), in order, each with
    its resolved type in ``field.type``; ``shared=False`` leaves out SharedOptions' (declare a flag once when
    both TrainConfig's and MiningOptions' options are added)."""
    hints = typing.get_type_hints(cls)
    skip = {f.name for f in dataclasses.fields(SharedOptions)} if not shared and cls is not SharedOptions else set()
    chosen = [
        f
        for f in dataclasses.fields(cls)
        if "help" in f.metadata and (groups is None or f.metadata["group"] in groups) and f.name not in skip
    ]
    for f in chosen:
        f.type = hints[f.name]
    return chosen


def as_flags(values: Mapping[str, Any], cls: type) -> list[str]:
    """``values`` (field name -> value) as the command-line flags of ``cls``'s options that set them."""
    flags = {f.name: f.metadata["flag"] or "--" + f.name.replace("_", "-") for f in cli_fields(cls)}
    return [text for name, value in values.items() for text in (flags[name], str(value))]


def choices_of(kind: Any) -> tuple | None:
    """The values of a ``Literal[...]`` type (or of ``Literal[...] | None``), else None."""
    if typing.get_origin(kind) is Literal:
        return typing.get_args(kind)
    inner = [a for a in typing.get_args(kind) if a is not type(None)]
    return choices_of(inner[0]) if len(inner) == 1 and inner[0] is not kind else None


PRECISIONS = choices_of(typing.get_type_hints(TrainConfig)["precision"])  # clpft.precision says what each means
