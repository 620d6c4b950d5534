"""Training plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from clpft.files import atomic_file


def plot_loss(
    history: list[dict[str, float]], path: str | Path, val_history: list[dict[str, float]] | None = None
) -> None:
    """The logged training loss against the optimizer step and, with a validation split, its nDCG@10
    on a second axis; nothing is written without history."""
    points = [(h["step"], h["loss"]) for h in history if "step" in h and "loss" in h]
    if not points:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label="training loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    curve = [(v["step"], v["ndcg@10"]) for v in val_history or [] if "ndcg@10" in v]
    if curve:
        right = ax.twinx()
        right.plot(
            [c[0] for c in curve],
            [c[1] for c in curve],
            color="tab:orange",
            marker="s",
            markersize=4,
            label="validation nDCG@10",
        )
        right.set_ylabel("validation nDCG@10")
        fig.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
