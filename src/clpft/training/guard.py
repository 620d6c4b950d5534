"""Guarded training: the saved model is the best state the validation split has seen, never one worse than
the start, optionally merged with the start in weight space.

With a validation split (``--val-fraction``), the untouched model is scored at step 0 and the training
model again during training, at steps fixed before training starts (``plan_evaluations``) so that *all* of
the guard's evaluations cost at most a share of the training's work (``--eval-budget``, 15% by default). The
work is counted, not timed: an evaluation's cost relative to an optimizer step is the ratio of the tokens they
process (clpft.training counts them), so the same command with the same seed evaluates the same steps, and
saves the same model, on a busy machine or an idle one. The evaluations that always run (step 0, the last
step and one per merge) are reserved first; the rest are spread evenly over the run. When the reserved
evaluations alone exceed the share, none runs in between.
Each new best state is copied (only the weights that train, so for MoE-only training a third of MiniLM).
At the end the candidates are the start, the best step and, with ``--merge auto``, the weight-space
merges

    θ(α) = (1 - α) · θ_start + α · θ_best,   α ∈ {0.25, 0.5, 0.75}

(WiSE-FT: Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022, arXiv:2109.01903;
LM-Cocktail: Xiao et al. 2023, arXiv:2311.13534), α on ``--merge-grid``. A merge usually keeps most of the
in-domain gain and gives back out-of-domain quality the tuning cost. With ``--ema DECAY`` an exponential
moving average of the weights is kept beside the training (Polyak averaging: a free average of the
trajectory's last ~1/(1 - DECAY) steps) and scored at the end; the tuned state that the merges start from is
then the best step or the average, whichever the validation split prefers. Of the candidates, ``--select``
keeps either the one closest to the start whose validation nDCG@10 is within one standard error of the best
(``one-se``: a difference the validation split cannot tell from noise does not earn a move away from the
start) or the best (``best``); when that is the start itself, the start is saved and one line says so. Every
candidate's per-query validation scores are recorded (``GuardResult.candidates``), so that a rule can be
judged afterwards on queries it did not choose on (benchmarks/studies/selection_rules.py). For an upcycled
model the start is the upcycled model before training (experts as copies of the dense layer): it computes
what the dense model computed, so α = 0 is the untouched model. ``--merge ALPHA`` applies one α without
choosing (no validation split needed).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

logger = logging.getLogger(__name__)

MERGE_GRID = (0.25, 0.5, 0.75)
SCORE = "ndcg@10"  # the metric that chooses
RULES = ("one-se", "best", "clear-best")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights that train (requires_grad): the only ones training changes."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    parameters = dict(model.named_parameters())
    for name, value in state.items():
        parameters[name].copy_(value)


def blend(start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """θ = (1 - α) · start + α · tuned, weight by weight."""
    return {name: torch.lerp(start[name], tuned[name], alpha) for name in tuned}


@dataclass
class GuardResult:
    chosen: str  # "start", "step N", "merge alpha=A with step N", "last step" (no validation)
    start_score: float | None = None
    best_step: int | None = None
    best_score: float | None = None
    merge_alpha: float | None = None
    merge_scores: dict[str, float] = field(default_factory=dict)  # α -> validation nDCG@10
    final_score: float | None = None  # the saved model's validation nDCG@10
    eval_seconds: float = 0.0
    eval_share: float = 0.0  # evaluation time / training time
    early_stopped_at: int | None = None
    best_candidate: str | None = None  # the highest validation score (chosen differs: within one standard error)
    # how the evaluated steps were fixed before training (clpft.training.evaluation_plan): token counts, an
    # evaluation's cost in optimizer steps, the planned steps; empty with --eval-steps
    plan: dict = field(default_factory=dict)
    # every candidate scored at the end: {"label", "alpha", "score", "per_query"} (per-query validation nDCG@10)
    candidates: list[dict] = field(default_factory=list)
    rule: str = "one-se"
    refit: dict = field(default_factory=dict)  # --refit: rows, steps, seconds of the second training


@dataclass
class Candidate:
    score: float  # validation nDCG@10
    alpha: float  # 0: the start, 1: the best step, between: a merge
    label: str
    per_query: dict[str, float] | None = None


def choose(candidates: list[Candidate], rule: str = "one-se") -> Candidate:
    """``rule`` "best": the highest validation score (the start wins ties, then the larger α). "clear-best":
    the best one if it leads the start by more than one standard error, else the start (move only on a clear
    gain, then all the way to the best).

    ``rule`` "one-se": the candidate closest to the start (smallest α) whose validation score is within one
    standard error of the best one's: the one-standard-error rule (Breiman et al. 1984; Hastie, Tibshirani and
    Friedman, *The Elements of Statistical Learning*, 7.10), which picks the simplest model the
    validation data cannot tell from the best.

    Here "simplest" is "least moved from the start": a small validation split (a few dozen to a few
    hundred queries) measures nDCG@10 with a standard error of 0.01-0.03, and merges that score within
    it of the best in-domain usually keep what the start knew out of domain (WiSE-FT). The standard
    error is that of the mean per-query difference to the best candidate (paired, as the queries are
    the same). Without per-query values the best score wins and the start wins ties."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    best = max(candidates, key=lambda c: (c.score, c.alpha == 0.0, c.alpha))
    if rule == "best" or best.per_query is None or any(c.per_query is None for c in candidates):
        return best
    if rule == "clear-best":
        start = next((c for c in candidates if c.alpha == 0.0), None)
        clear = start is None or not _within_one_standard_error(best, start)
        return best if clear else start
    for candidate in sorted(candidates, key=lambda c: c.alpha):
        if _within_one_standard_error(best, candidate):
            return candidate
    return best


def _within_one_standard_error(best: Candidate, other: Candidate) -> bool:
    """Whether ``best`` leads ``other`` by at most one standard error of their mean per-query difference."""
    queries = sorted(best.per_query)
    gaps = [best.per_query[q] - other.per_query.get(q, 0.0) for q in queries]
    mean = sum(gaps) / len(gaps)
    spread = (sum((g - mean) ** 2 for g in gaps) / max(1, len(gaps) - 1)) ** 0.5
    return mean <= spread / len(gaps) ** 0.5


def merge_alphas(merge: str | float | None, grid: tuple[float, ...] = MERGE_GRID) -> tuple[float, ...]:
    """The merges ``Guard.finish`` scores for this ``--merge``: the grid for auto, the one α given, or none."""
    if merge == "auto":
        return tuple(grid)
    return (merge,) if isinstance(merge, float) else ()


def closing_merges(
    merge: str | float | None, select: bool = True, grid: tuple[float, ...] = MERGE_GRID, ema: bool = False
) -> int:
    """How many evaluations ``Guard.finish`` adds for this ``--merge`` (with the guard choosing: ``select``):
    one per merge, and one for the weights' moving average."""
    return (len(merge_alphas(merge, grid)) + int(ema)) if select else 0


def plan_evaluations(
    total_steps: int, evaluation_cost_in_steps: float, budget_share: float, closing_evaluations: int
) -> list[int]:
    """The optimizer steps to evaluate between step 0 and the last step: as many as the budget leaves once
    step 0 and the ``closing_evaluations`` are reserved, spread evenly. ``evaluation_cost_in_steps``: what one
    evaluation costs in optimizer steps (counted work), so the plan depends on the data and the options only."""
    if total_steps <= 1 or evaluation_cost_in_steps <= 0:
        return []
    affordable = budget_share * total_steps / evaluation_cost_in_steps - 1 - closing_evaluations
    count = min(total_steps - 1, max(0, math.floor(affordable)))
    return sorted({round(total_steps * i / (count + 1)) for i in range(1, count + 1)} - {0, total_steps})


class Guard:
    """Scores the model on the validation split during training and keeps the best state (see the module)."""

    def __init__(
        self,
        model: nn.Module,
        evaluate: Callable[[], dict[str, float]] | None,
        planned_steps: list[int] = (),
        eval_steps: int = 0,
        patience: int = 0,
        precision: Callable[[], AbstractContextManager] = nullcontext,
        ema_decay: float = 0.0,
        merge_grid: tuple[float, ...] = MERGE_GRID,
        rule: str = "one-se",
        stop_at_step: int = 0,
    ) -> None:
        """``planned_steps``: the steps to evaluate (``plan_evaluations``); ``eval_steps`` > 0: every that many
        steps instead. ``ema_decay`` > 0: keep a moving average of the weights, a candidate at the end.
        ``stop_at_step`` > 0: stop the training there (--refit's second training)."""
        self.model, self.evaluate, self.precision = model, evaluate, precision
        self.ema_decay, self.merge_grid, self.rule = ema_decay, tuple(merge_grid), rule
        self.stop_at_step = stop_at_step
        self.planned_steps, self.eval_steps, self.patience = set(planned_steps), eval_steps, patience
        self.start = trainable_state(model)
        self.history: list[dict[str, float]] = []
        self.best_step, self.best_score, self.best_state = 0, float("-inf"), None
        self.eval_seconds, self.last_cost = 0.0, 0.0
        self.evaluations_since_best, self.early_stopped_at = 0, None
        self.start_score, self.step_zero_seconds = None, 0.0
        self.last_per_query = self.start_per_query = self.best_per_query = None
        self.ema_state = trainable_state(model) if ema_decay > 0 else None

    def score(self, step: int) -> float:
        started = time.perf_counter()
        with self.precision():  # the trainer's autocast does not reach its callbacks
            metrics = dict(self.evaluate())
        self.last_cost = time.perf_counter() - started
        self.eval_seconds += self.last_cost
        self.last_per_query = metrics.pop("per_query", None)  # kept for the candidates only, not the curve
        self.history.append({"step": step, **metrics})
        return metrics[SCORE]

    def score_start(self) -> None:
        """Step 0: the untouched model, the line every later state has to beat."""
        if self.evaluate is not None:
            self.start_score = self.score(0)
            self.start_per_query = self.last_per_query
            self.step_zero_seconds = self.last_cost
            self.best_score, self.best_state = self.start_score, None  # None: the start itself

    def after_step(self, step: int) -> bool:
        """Called after every optimizer step; evaluates when the plan says so.
        Returns True to stop early."""
        if self.ema_state is not None:
            self._update_average()
        if self.stop_at_step and step >= self.stop_at_step:
            return True
        if self.evaluate is None:
            return False
        due = step % self.eval_steps == 0 if self.eval_steps else step in self.planned_steps
        if not due:
            return False
        self._consider(step, self.score(step))
        if self.patience and self.evaluations_since_best >= self.patience:
            self.early_stopped_at = step
            return True
        return False

    @torch.no_grad()
    def _update_average(self) -> None:
        """ema ← decay · ema + (1 - decay) · θ, for every weight that trains."""
        for name, parameter in self.model.named_parameters():
            if name in self.ema_state:
                self.ema_state[name].lerp_(parameter.detach(), 1.0 - self.ema_decay)

    def _consider(self, step: int, score: float) -> None:
        if score > self.best_score:
            self.best_step, self.best_score, self.best_state = step, score, trainable_state(self.model)
            self.best_per_query = self.last_per_query
            self.evaluations_since_best = 0
        else:
            self.evaluations_since_best += 1

    def finish(self, final_step: int, merge: str | float, training_seconds: float, select: bool = True) -> GuardResult:
        """Put the chosen weights into the model and say what was chosen. ``select=False`` (``--no-guard``)
        keeps the last step (merged with the start when ``merge`` is a number)."""
        if self.evaluate is not None and (not self.history or self.history[-1]["step"] != final_step):
            self._consider(final_step, self.score(final_step))  # the curve's last point
        result = GuardResult(chosen="last step", start_score=self.start_score)
        if not select or self.evaluate is None:
            if isinstance(merge, float):
                load_state(self.model, blend(self.start, trainable_state(self.model), merge))
                result.chosen, result.merge_alpha = f"merge alpha={merge:g} with the last step", merge
            elif self.history:
                result.final_score = self.history[-1][SCORE]
            return self._timed(result, training_seconds)
        tuned, tuned_label = self.best_state, f"step {self.best_step}"
        if tuned is not None:
            result.best_step, result.best_score = self.best_step, self.best_score
        candidates: list[Candidate] = [Candidate(self.start_score, 0.0, "start", self.start_per_query)]
        if tuned is not None:
            candidates.append(Candidate(self.best_score, 1.0, tuned_label, self.best_per_query))
        if self.ema_state is not None and select and isinstance(merge, str):
            load_state(self.model, self.ema_state)
            average = Candidate(self._score_candidate(final_step), 1.0, f"average to step {final_step}")
            average.per_query = self.last_per_query
            candidates.append(average)
            if tuned is None or average.score > self.best_score:  # merges then start from the average
                tuned, tuned_label = self.ema_state, average.label
        if tuned is not None:
            for alpha in merge_alphas(merge, self.merge_grid):
                load_state(self.model, blend(self.start, tuned, alpha))
                merged = self._score_candidate(final_step)
                result.merge_scores[f"{alpha:g}"] = merged
                candidates.append(
                    Candidate(merged, alpha, f"merge alpha={alpha:g} with {tuned_label}", self.last_per_query)
                )
            if isinstance(merge, float):  # a fixed α is applied, not chosen
                candidates = [c for c in candidates if c.alpha == merge]
        result.rule = self.rule
        result.candidates = [
            {"label": c.label, "alpha": c.alpha, "score": c.score, "per_query": c.per_query} for c in candidates
        ]
        pick = choose(candidates, self.rule)
        score, alpha, chosen = pick.score, pick.alpha, pick.label
        result.best_candidate = max(candidates, key=lambda c: (c.score, -c.alpha)).label
        result.chosen, result.final_score = chosen, score
        result.merge_alpha = alpha if chosen.startswith("merge") else None
        if chosen == "start":
            load_state(self.model, self.start)
        elif chosen.startswith("step"):
            load_state(self.model, self.best_state)
        elif chosen.startswith("average"):
            load_state(self.model, self.ema_state)
        else:
            load_state(self.model, blend(self.start, tuned, alpha))
        return self._timed(result, training_seconds)

    def _score_candidate(self, step: int) -> float:
        """A closing candidate's score: not a point of the training curve."""
        score = self.score(step)
        self.history.pop()
        return score

    def _timed(self, result: GuardResult, training_seconds: float) -> GuardResult:
        result.eval_seconds = round(self.eval_seconds, 2)
        result.eval_share = round(self.eval_seconds / training_seconds, 4) if training_seconds > 0 else 0.0
        result.early_stopped_at = self.early_stopped_at
        return result

    def message(self, result: GuardResult) -> str | None:
        """The one line for a run whose saved model is the untouched one."""
        if result.chosen != "start" or result.start_score is None:
            return None
        later = [h[SCORE] for h in self.history if h["step"] > 0]
        if not later:
            return None
        if max(later) <= result.start_score:
            return (
                f"no trained state beat the untouched model on the validation split (nDCG@10 "
                f"{result.start_score:.4f} at step 0, at best {max(later):.4f} later): saved the untouched model"
            )
        return (
            f"no trained state beat the untouched model on the validation split by more than its noise (nDCG@10 "
            f"{result.start_score:.4f} at step 0, at best {max(later):.4f} later, within one standard error): "
            "saved the untouched model"
        )
