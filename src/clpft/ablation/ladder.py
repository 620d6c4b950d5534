"""The rows of `clpft ablation`'s ladder (the paper's ablation, plus the references every row is tested against)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Row:
    description: str
    negatives: str | None = None  # "ance" | "random"; None: no training
    loss: str = "clp"
    moe: str = "none"
    train_only: str = "all"


ROWS: dict[str, Row] = {
    "base": Row("the model as given, no training"),
    "random-infonce": Row("random negatives, InfoNCE, all parameters", "random", "infonce", "none", "all"),
    "ance-infonce": Row("mined hard negatives, InfoNCE, all parameters", "ance", "infonce", "none", "all"),
    "ance-clp": Row("mined hard negatives, CLP, all parameters", "ance", "clp", "none", "all"),
    "ance-clp-intermediate": Row(
        "CLP, only the FFN intermediate layers trained", "ance", "clp", "none", "intermediate"
    ),
    "ance-clp-moe": Row(
        "CLP, MoE on the intermediate layers, only MoE trained (the paper's best)", "ance", "clp", "intermediate", "moe"
    ),
    "ance-infonce-moe": Row("InfoNCE with the same MoE setup", "ance", "infonce", "intermediate", "moe"),
    "st-mnrl": Row(
        "sentence-transformers' MultipleNegativesRankingLoss on the same mined data", "ance", "mnrl", "none", "all"
    ),
}
# Every row is tested against these (where they ran): the untrained model, the plain contrastive row, and
# the standard a user would otherwise run.
REFERENCES = ("base", "ance-infonce", "st-mnrl")
