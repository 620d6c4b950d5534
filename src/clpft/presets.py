"""Named sets of training defaults.

``paper``: Yu (2024)'s settings for BGE-M3 (lr 1e-5, batch 1 x accumulation 4, tau 0.02, lambda 0.1,
2 epochs, CLP with 2 experts top-1 on the intermediate layers, only the MoE layers trained).

``clpft`` (the default): the same method with the learning rate and temperature chosen on validation
splits carved from the training queries of SciFact and XQuAD-hi with the packaged all-MiniLM-L6-v2
(benchmarks/results/tuning.md says how): the layers that train when only the MoE / intermediate layers train
(about a third of the weights) need ten times the paper's learning rate to move within a small budget,
and full fine-tuning did better at the temperature MiniLM was pre-trained with (0.05, scale 20) than at
0.02. So the learning rate and the temperature depend on ``train_only``. λ stays at the paper's 0.1:
a second round (the same file) found no λ (0.1 and 0.3 with the qrels' own queries; 0.1 to 0.99 with
every negative given one, qrels + extractive), and no source of the negatives' own queries, that helped
beyond the runs' own noise; at 0.1 the penalty's gradient is a few percent of
InfoNCE's (benchmarks/clp_gradients.py), and from about 0.97 on, where it dominates, validation fell.
Checked afterwards on the test split at the main job's budget (406 steps on SciFact), lr 1e-4 for the MoE
layers still came out ahead of 1e-5 and of st-mnrl (benchmarks/results/main_job_scifact.md). It is not safe
everywhere: on Cranfield (140 training queries, noisy pairs) the same pipeline falls from 0.458 to 0.332
nDCG@10 where ``paper`` keeps 0.461 (benchmarks/results/main_job_cranfield.md); a validation split at the
run's own budget shows it, so compare the two presets on one before a long run.

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
    penalty_weight: float = 0.1
    epochs: float = 2.0
    batch_size: int = 1
    grad_accum: int = 4
    warmup_ratio: float = 0.1

    def values(self, train_only: str) -> dict[str, float]:
        """The TrainConfig fields this preset sets, for a run that trains ``train_only``."""
        return {
            "learning_rate": self.learning_rate[train_only],
            "temperature": self.temperature[train_only],
            "penalty_weight": self.penalty_weight,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "warmup_ratio": self.warmup_ratio,
        }


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        "Yu (2024): lr 1e-5, batch 1 x accumulation 4, tau 0.02, lambda 0.1, 2 epochs",
        learning_rate={"all": 1e-5, "intermediate": 1e-5, "moe": 1e-5},
        temperature={"all": 0.02, "intermediate": 0.02, "moe": 0.02},
    ),
    "clpft": Preset(
        "the paper's, but lr 1e-4 when only MoE / intermediate layers train and tau 0.05 when all weights train: "
        "chosen on validation splits for small embedders like all-MiniLM-L6-v2 (benchmarks/results/tuning.md)",
        learning_rate={"all": 1e-5, "intermediate": 1e-4, "moe": 1e-4},
        temperature={"all": 0.05, "intermediate": 0.02, "moe": 0.02},
    ),
}
DEFAULT_PRESET = "clpft"


def preset_values(name: str, train_only: str) -> dict[str, float]:
    if name not in PRESETS:
        raise ClpftError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    if train_only not in PRESETS[name].learning_rate:
        raise ClpftError(f"--train-only must be one of {', '.join(PRESETS[name].learning_rate)}, got {train_only!r}")
    return PRESETS[name].values(train_only)
