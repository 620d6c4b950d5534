"""Upcycle the FFN layers of a dense encoder into mixture-of-experts layers (the paper's step 4).

``upcycle(model)`` replaces ``layer.intermediate.dense`` (or ``layer.output.dense``) of every chosen
transformer layer with ``num_experts`` copies of it plus a learned top-k router, in place. Right
after upcycling the model computes exactly what it computed before; training then lets the copies
drift apart. The layer itself and the classes that saved MoE models load with live in
``modeling_clpft_moe.py``, which is copied into every saved MoE model folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel

from clpft.modeling_clpft_moe import MOE_CLASSES, MOE_PLACES, MoELinear, dense_of, encoder_layers

__all__ = ["MoELinear", "upcycle", "moe_settings", "register_auto_classes", "hf_model_of"]


def register_auto_classes() -> None:
    """Teach transformers' Auto classes our MoE model types, so clpft loads MoE folders without
    ``trust_remote_code`` (the code is ours, not the folder's)."""
    for config_class, model_class in MOE_CLASSES.values():
        try:
            AutoConfig.register(config_class.model_type, config_class)
            AutoModel.register(config_class, model_class)
        except ValueError:
            pass  # already registered
        # save_pretrained copies modeling_clpft_moe.py into the folder and writes auto_map for
        # classes marked like this, also for a model that was loaded rather than upcycled here.
        config_class.register_for_auto_class("AutoConfig")
        model_class.register_for_auto_class("AutoModel")


def hf_model_of(model: nn.Module) -> PreTrainedModel:
    """The transformers model inside a SentenceTransformer (or the model itself)."""
    if isinstance(model, PreTrainedModel):
        return model
    first = model[0] if isinstance(model, nn.Sequential) else None
    inner = getattr(first, "auto_model", None)
    if isinstance(inner, PreTrainedModel):
        return inner
    raise TypeError(f"cannot find a transformers model inside {type(model).__name__}")


def moe_settings(model: nn.Module) -> dict[str, Any] | None:
    """The MoE settings recorded in the model's config, or None for a dense model."""
    return getattr(hf_model_of(model).config, "clpft_moe", None)


def upcycle(
    model: nn.Module,
    where: str = "intermediate",
    num_experts: int = 2,
    experts_per_token: int = 1,
    layers: Iterable[int] | None = None,
) -> nn.Module:
    """Turn the FFN dense layer at ``where`` of each layer in ``layers`` (default: all) into an MoE layer.

    Works in place on a SentenceTransformer or a transformers model of the BERT family (BERT, RoBERTa,
    XLM-RoBERTa, so BGE-M3 too) and returns it. The model's class and config become the matching
    ``*MoEModel``/``*MoEConfig`` so that ``save_pretrained`` writes a folder that reloads as MoE.

    Example::

        model = clpft.load_model()
        clpft.moe.upcycle(model, where="intermediate", num_experts=2, experts_per_token=1)
    """
    hf_model = hf_model_of(model)
    if getattr(hf_model.config, "clpft_moe", None):
        raise ValueError("model is already upcycled to MoE")
    base_class = next((cls for cls in MOE_CLASSES if type(hf_model) is cls), None)
    if base_class is None:
        supported = ", ".join(cls.__name__ for cls in MOE_CLASSES)
        raise ValueError(f"MoE upcycling supports {supported}; got {type(hf_model).__name__}")
    if where not in MOE_PLACES:
        raise ValueError(f"where must be one of {MOE_PLACES}, got {where!r}")
    all_layers = encoder_layers(hf_model)
    chosen = list(range(len(all_layers))) if layers is None else sorted(set(int(i) for i in layers))
    bad = [i for i in chosen if not 0 <= i < len(all_layers)]
    if bad or not chosen:
        raise ValueError(f"layers must be a non-empty subset of 0..{len(all_layers) - 1}, got {chosen}")

    for index in chosen:
        parent, name = dense_of(all_layers[index], where)
        setattr(parent, name, MoELinear.from_dense(getattr(parent, name), num_experts, experts_per_token))

    # Swap class and config in place rather than rebuilding the model: no second copy of the weights
    # in memory (BGE-M3 is 568M parameters), and device, dtype and the SentenceTransformer wrapper stay.
    config_class, model_class = MOE_CLASSES[base_class]
    settings = {"where": where, "num_experts": num_experts, "experts_per_token": experts_per_token, "layers": chosen}
    # The config object is kept (and re-classed) too: it carries runtime state such as the attention
    # implementation, and a fresh config built from its dict silently loses it.
    hf_model.config.__class__ = config_class
    hf_model.config.clpft_moe = settings
    hf_model.config.architectures = [model_class.__name__]
    hf_model.__class__ = model_class
    return model


register_auto_classes()
