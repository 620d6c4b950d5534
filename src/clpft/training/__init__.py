"""Training: the loop (sentence-transformers' trainer, ``trainer``), the batches it trains on (``collator``),
the guard that scores held-out training queries and keeps the best state (``guard``, ``validation``),
checkpoints that resume exactly (``checkpoints``), memory housekeeping (``runtime``) and the loss curve's
plot (``plots``). ``train`` ties them together in ``train_model``.

May import: clpft.data, clpft.mining (encoding for the validation ranking), clpft.losses, clpft.moe and the
shared modules (options, presets, precision, files, errors, faults). Not clpft.cli or clpft.ablation.
"""

__all__ = [
    "TrainConfig",
    "TrainResult",
    "evaluation_plan",
    "make_loss",
    "resume_checkpoint",
    "train_model",
    "validation_regression",
]


def __getattr__(name: str):
    # Imported when first used: ``train`` imports torch, transformers and sentence-transformers (seconds, and
    # hundreds of MB), which a light module of this package (runtime, checkpoints) must not pull in.
    if name == "TrainConfig":
        from clpft.options import TrainConfig

        return TrainConfig
    if name in __all__:
        from clpft.training import train

        return getattr(train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
