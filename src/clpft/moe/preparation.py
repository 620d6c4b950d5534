"""Model preparation before training, in one step the training stage calls: upcycle the FFN layers to MoE
(or reuse the experts of a model that already has them) and freeze everything that does not train.
"""

from __future__ import annotations

from typing import Any

from sentence_transformers import SentenceTransformer

from clpft.errors import ClpftError
from clpft.moe import check_upcyclable, hf_model_of, moe_settings, upcycle
from clpft.moe.modeling_clpft_moe import MoELinear, ffn_projections, moe_paths, transformer_layers
from clpft.options import TrainConfig


def check_preparable(model: SentenceTransformer, config: TrainConfig) -> None:
    """Refuse, before any encoding, a model that ``prepare_model`` could not upcycle as ``config`` asks: a
    run that encodes a corpus twice (base evaluation, mining) and only then finds the model's class
    unsupported has wasted hours on a real corpus."""
    if config.moe == "none" or moe_settings(model):
        return
    try:
        check_upcyclable(model, config.moe)
    except ValueError as error:
        raise ClpftError(
            f"cannot upcycle {type(hf_model_of(model)).__name__} to MoE (--moe {config.moe}): {error}; "
            "pass --moe none to fine-tune it without MoE"
        ) from None


def prepare_model(model: SentenceTransformer, config: TrainConfig) -> tuple[int, int]:
    """Upcycle ``model`` in place as ``config.moe`` says (a model that is MoE already keeps its experts, with
    one line saying so) and leave only ``config.train_only`` trainable. Returns (trainable, total) parameters."""
    if config.moe == "none" and config.train_only == "moe" and not moe_settings(model):
        raise ClpftError("--train-only moe needs --moe intermediate or output (or use --train-only all/intermediate)")
    existing = moe_settings(model)
    if existing:
        print(reuse_moe_message(existing, config), flush=True)
    elif config.moe != "none":
        try:
            upcycle(model, where=config.moe, num_experts=config.num_experts, experts_per_token=config.experts_per_token)
        except ValueError as error:
            raise ClpftError(f"cannot upcycle this model to MoE: {error}") from error
    return set_trainable(model, config.train_only)


def set_trainable(model: SentenceTransformer, train_only: str) -> tuple[int, int]:
    """Freeze everything except what ``train_only`` names: "all", "intermediate" (the FFN intermediate
    dense layers, MoE or not) or "moe" (the MoE layers: experts and routers). Returns (trainable, total)."""
    hf_model = hf_model_of(model)
    if train_only not in ("all", "intermediate", "moe"):
        raise ClpftError(f"--train-only must be all, intermediate or moe, got {train_only!r}")
    if train_only == "all":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        if train_only == "moe":
            modules = [m for m in hf_model.modules() if isinstance(m, MoELinear)]
            if not modules:
                raise ClpftError("--train-only moe needs an MoE model (--moe intermediate or output)")
        else:
            modules = intermediate_projections(hf_model)
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def intermediate_projections(hf_model) -> list:
    """Every layer's FFN input projections (MoE or dense): what ``--train-only intermediate`` trains."""
    settings = moe_settings(hf_model)
    if settings and settings["where"] == "intermediate":
        layers, paths = moe_paths(hf_model, settings)
    else:
        _, layers = transformer_layers(hf_model)
        paths = ffn_projections(layers[0], "intermediate")
    return [layer.get_submodule(path) for layer in layers for path in paths]


def reuse_moe_message(existing: dict[str, Any], config: TrainConfig) -> str:
    """The line that says a model already MoE is trained with its own experts; a ClpftError when the
    options ask for other MoE settings (upcycling twice is not possible, and silently ignoring the
    options would train another model than the one asked for)."""
    own = (existing["where"], existing["num_experts"], existing["experts_per_token"])
    described = f"--moe {own[0]} --num-experts {own[1]} --experts-per-token {own[2]}"
    asked = (config.moe, config.num_experts, config.experts_per_token)
    if config.moe != "none" and asked != own:
        raise ClpftError(
            f"the model is already MoE ({described}) but the options ask for --moe {asked[0]} --num-experts "
            f"{asked[1]} --experts-per-token {asked[2]}: pass the model's own settings, --moe none to train it as it "
            "is, or start from a dense model"
        )
    return f"the model is already MoE ({described}): its experts and routers are trained as they are"
