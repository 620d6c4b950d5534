"""Training plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from clpft.files import atomic_file


def plot_loss(history: list[dict[str, float]], path: str | Path) -> None:
    """The logged training loss against the optimizer step; nothing is written without history."""
    points = [(h["step"], h["loss"]) for h in history if "step" in h and "loss" in h]
    if not points:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
