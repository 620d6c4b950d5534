"""The range of every numeric option, in one place, checked as soon as the options are known.

The command line checks them right after parsing (before any data or model is loaded, so a bad value
costs milliseconds, not a corpus encoding), and ``TrainConfig`` checks its own fields when it is
built, so the Python API refuses the same values with the same one-line message. A range is keyed by
the option's destination name (``--penalty-weight`` -> ``penalty_weight``); where the Python field has
another name than the flag (``--lr`` -> ``learning_rate``), ``FIELD_OF_FLAG`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clpft.errors import ClpftError
from clpft.presets import DEFAULT_PRESET, preset_values


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

RANGES: dict[str, Range] = {
    # lengths, encoding, retrieval
    "query_max_tokens": COUNT,
    "passage_max_tokens": COUNT,
    "encode_batch_size": COUNT,
    "top_k": COUNT,
    "seed": Range(0, 2**32 - 1, integer=True),  # numpy's seed range
    "seeds": COUNT,
    # mining and the negatives' own queries
    "num_negatives": COUNT,
    "rank_from": NON_NEGATIVE_COUNT,
    "rank_to": COUNT,
    "max_score_ratio": POSITIVE,
    "max_train_queries": COUNT,
    "queries_per_negative": COUNT,
    "queries_per_doc": COUNT,
    "max_docs": COUNT,
    "llm_concurrency": COUNT,
    "llm_timeout": POSITIVE,
    "max_llm_calls": NON_NEGATIVE_COUNT,
    # training
    "penalty_weight": Range(0, 1),
    "temperature": POSITIVE,
    "num_experts": COUNT,
    "experts_per_token": COUNT,
    "learning_rate": Range(0),
    "moe_learning_rate": Range(0),
    "epochs": POSITIVE,
    "batch_size": COUNT,
    "grad_accum": COUNT,
    "warmup_ratio": SHARE,
    "max_steps": Range(1, integer=True, also=(-1,), meaning="all epochs"),
    "max_queries_per_negative": COUNT,
    "gradcache_mini_batch": NON_NEGATIVE_COUNT,
    "save_steps": NON_NEGATIVE_COUNT,
    "logging_steps": NON_NEGATIVE_COUNT,
    "val_fraction": SHARE,
    "eval_steps": NON_NEGATIVE_COUNT,
    "eval_budget": Range(0, 1, low_open=True),
    "patience": NON_NEGATIVE_COUNT,
}

# Flags whose Python field has another name.
FIELD_OF_FLAG = {"lr": "learning_rate", "moe_lr": "moe_learning_rate"}
FLAG_OF_FIELD = {field: flag for flag, field in FIELD_OF_FLAG.items()}


def check_ranges(values: Mapping[str, Any]) -> None:
    """Raise a one-line ClpftError for the first value out of its range (None means "not set": fine).

    ``values`` maps option names (argparse destinations or TrainConfig fields) to values; names
    without a range are ignored. Also checks the pairs that limit each other."""
    for name, value in values.items():
        field = FIELD_OF_FLAG.get(name, name)
        rule = RANGES.get(field)
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


@dataclass
class TrainConfig:
    """Training settings. Fields left at None come from ``preset`` (clpft.presets): ``"clpft"`` (tuned
    defaults) or ``"paper"`` (Yu 2024); the learning rate also depends on ``train_only``."""

    loss: str = "clp"
    moe: str = "intermediate"
    num_experts: int = 2
    experts_per_token: int = 1
    train_only: str = "moe"
    preset: str = DEFAULT_PRESET
    learning_rate: float | None = None
    moe_learning_rate: float | None = None  # train_only "all" with MoE: the MoE layers' own learning rate
    epochs: float | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    num_negatives: int = 4
    query_max_tokens: int = 128
    passage_max_tokens: int = 512
    penalty_weight: float | None = None
    temperature: float | None = None
    warmup_ratio: float | None = None
    max_queries_per_negative: int = 8
    seed: int = 42
    max_steps: int = -1
    logging_steps: int = 0  # 0: about 20 log lines per run
    gradcache_mini_batch: int = 0  # > 0: CachedCLPLoss embedding this many texts at a time
    save_steps: int = 0  # 0: no checkpoints
    checkpoint_dir: str | None = None  # where checkpoints go (default: a temporary folder)
    resume: bool = False  # continue from the last checkpoint in checkpoint_dir
    val_fraction: float = 0.0  # > 0: hold out this share of the training queries as a validation split
    eval_steps: int = 0  # with a validation split: evaluate every N optimizer steps (0: about 5 times a run)
    precision: str = "fp32"  # "bf16" / "fp16": mixed-precision autocast (GPUs; bf16 also runs on CPUs)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, ~30% slower
    guard: bool = True  # with a validation split: save the best state seen, never one worse than the start
    merge: str | float = "none"  # "auto" (α chosen on validation), "none", or α: (1 - α)·start + α·tuned
    eval_budget: float = 0.15  # validation time kept under this share of the training time (eval_steps 0)
    patience: int = 0  # stop after this many evaluations without a new best (0: never)

    def __post_init__(self) -> None:
        for name, value in preset_values(self.preset, self.train_only).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        check_ranges(self.__dict__)
        try:
            self.merge = parse_merge(self.merge)
        except ValueError as error:
            raise ClpftError(str(error)) from None
        if self.merge == "auto" and not (self.guard and self.val_fraction > 0):
            raise ClpftError(
                "--merge auto chooses α on the validation split: it needs --val-fraction above 0 (and the guard)"
            )
