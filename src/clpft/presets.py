"""Named sets of training defaults.

``paper``: Yu (2024)'s settings for BGE-M3 (lr 1e-5, batch 1 x accumulation 4, tau 0.02, lambda 0.1,
2 epochs, CLP with 2 experts top-1 on the intermediate layers, only the MoE layers trained, no
validation split). It stays exactly that.

``clpft`` (the default): the same method (CLP with the negatives' own queries, MoE-upcycled intermediate
layers), set up to beat sentence-transformers' documented recipe without ever handing back a model
worse than the start, chosen on validation splits carved from training queries only
(benchmarks/results/tuning.md says how):

- every weight trains beside the upcycled MoE layers, at 2e-5 with tau 0.05 (the scale 20 MiniLM was
  trained with): at batch 8 for one epoch on SciFact's validation split the fully tuned state scored 0.6908
  nDCG@10 where only the MoE layers at 1e-4 reached 0.6820 (both from 0.6596; after the merge both scored
  0.692; benchmarks/results/tuning_guarded.md);
- batch 8 with in-batch negatives (clpft.data.batching keeps a row's positive out of every other row's
  candidates) and no accumulation: the paper's batch 1 was BGE-M3's GPU memory, not a choice;
- a 10% validation split guards the run (clpft.training.guard): the start is scored at step 0; at the end the
  candidates are the start, the best state seen and its weight-space merges with the start at α 0.25, 0.5 and
  0.75, and the one saved is the best candidate *if* it leads the start by more than one standard error of the
  paired per-query difference on the validation split, else the start (``select="clear-best"``). Judged on the
  half of the validation queries a rule did not choose on (benchmarks/studies/selection_rules.py,
  benchmarks/results/selection_rules.md), this rule kept more than the one-standard-error rule, which stops
  short of a clear gain, and more than the best score alone, which follows the noise of a small split
  (Cranfield's 14 queries). A moving average of the weights (``--ema``) and merges at every tenth of α
  (``--merge-grid``) gained nothing on those halves and cost 9 more evaluations: they stay options. 10% of the
  queries, not the 20% of the first guarded runs: sentence-transformers' recipe trains on all of them;
- 3 epochs: at 2 epochs SciFact's validation curve still rose at its last step; at 3 its best state is the
  last (benchmarks/results/quality/quality.md has the default's rows; the previous default, ``--epochs 2
  --select one-se``, kept the untouched model's zero-shot quality on Cranfield and gave up most of SciFact's
  in-domain gain: the row previous-default);
- GradCache (``CachedCLPLoss``, 8 texts of a column embedded at a time): the same loss and gradients in
  exact arithmetic, and on a CPU the same step time in about half the peak memory: the batch's 40 passages
  are embedded twice, once without a graph, but never all at once (benchmarks/results/speed.md).

λ stays at the paper's 0.1 (a sweep found no λ or own-query source that helped beyond noise; at 0.1 the
penalty's gradient is a few percent of InfoNCE's, benchmarks/studies/clp_gradients.py). When only the MoE or
intermediate layers train (``--train-only moe|intermediate``) the learning rate is 1e-4 and tau 0.02, as
chosen in the first tuning round.

A flag given on the command line (or a ``TrainConfig`` field set in Python) always wins over the preset.
"""

from __future__ import annotations

from dataclasses import dataclass

from clpft.errors import ClpftError


@dataclass(frozen=True)
class Preset:
    description: str
    learning_rate: dict[str, float]  # by train_only: "all" | "intermediate" | "moe"
    temperature: dict[str, float]  # by train_only, too
    train_only: str = "moe"  # what trains when --train-only is not given
    penalty_weight: float = 0.1
    epochs: float = 2.0
    batch_size: int = 1
    grad_accum: int = 4
    warmup_ratio: float = 0.1
    val_fraction: float = 0.0  # > 0: the guard's validation split (clpft.training.guard)
    merge: str = "none"  # "auto": α chosen on the validation split
    gradcache_mini_batch: int = 0  # > 0: CachedCLPLoss, this many texts of a column embedded at a time
    merge_grid: str = "0.25,0.5,0.75"  # the α the guard scores with merge "auto"
    select: str = "one-se"  # the guard's choice rule (clpft.training.guard.choose)
    ema: float = 0.0  # > 0: a moving average of the weights, a candidate at the end

    def values(self, train_only: str | None = None) -> dict[str, float | str]:
        """The TrainConfig fields this preset sets, for a run that trains ``train_only`` (default: its own)."""
        train_only = train_only or self.train_only
        return {
            "train_only": train_only,
            "learning_rate": self.learning_rate[train_only],
            "temperature": self.temperature[train_only],
            "penalty_weight": self.penalty_weight,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "warmup_ratio": self.warmup_ratio,
            "val_fraction": self.val_fraction,
            "merge": self.merge,
            "gradcache_mini_batch": self.gradcache_mini_batch,
            "merge_grid": self.merge_grid,
            "select": self.select,
            "ema": self.ema,
        }


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        "Yu (2024): lr 1e-5, batch 1 x accumulation 4, tau 0.02, lambda 0.1, 2 epochs",
        learning_rate={"all": 1e-5, "intermediate": 1e-5, "moe": 1e-5},
        temperature={"all": 0.02, "intermediate": 0.02, "moe": 0.02},
    ),
    "clpft": Preset(
        "every weight trains beside the MoE layers (lr 2e-5, tau 0.05), batch 8 with in-batch negatives, 3 epochs, "
        "a 10% validation split guarding the run: the best of the start, the best state and its merges with the "
        "start at the quarters, if it clearly beats the start (benchmarks/results/selection_rules.md); "
        "lr 1e-4 when only MoE / intermediate layers train",
        learning_rate={"all": 2e-5, "intermediate": 1e-4, "moe": 1e-4},
        temperature={"all": 0.05, "intermediate": 0.02, "moe": 0.02},
        train_only="all",
        epochs=3.0,
        batch_size=8,
        grad_accum=1,
        val_fraction=0.1,
        merge="auto",
        gradcache_mini_batch=8,
        select="clear-best",
    ),
}
DEFAULT_PRESET = "clpft"


def preset_values(name: str, train_only: str | None = None) -> dict[str, float | str]:
    if name not in PRESETS:
        raise ClpftError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    if train_only is not None and train_only not in PRESETS[name].learning_rate:
        raise ClpftError(f"--train-only must be one of {', '.join(PRESETS[name].learning_rate)}, got {train_only!r}")
    return PRESETS[name].values(train_only)
