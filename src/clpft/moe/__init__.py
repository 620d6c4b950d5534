"""Upcycle the FFN layers of a dense embedder into mixture-of-experts layers (the paper's step 4).

``upcycle(model)`` replaces the FFN's input projections ("intermediate": BERT's ``intermediate.dense``,
DistilBERT's ``ffn.lin1``, ModernBERT's ``mlp.Wi``, the gate and up projections of Qwen3 and Gemma3) or its
output projection ("output") in every chosen transformer layer with ``num_experts`` copies of it plus a
learned top-k router, in place. The projections are found from the model's structure
(``modeling_clpft_moe.ffn_projections``), not from a list of classes. Right after upcycling the model
computes exactly what it computed before; training then lets the copies drift apart. The layer itself and
the classes that saved MoE models load with live in ``modeling_clpft_moe.py``, which is copied into every
saved MoE model folder. ``preparation`` upcycles and freezes in the one step training calls.

May import: the shared modules (errors, options) only; ``modeling_clpft_moe`` imports torch and transformers
and nothing else, as it travels with saved models.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel

from clpft.moe.modeling_clpft_moe import (
    MOE_PLACES,
    MoELinear,
    _replace,
    ffn_projections,
    moe_classes,
    transformer_layers,
)

__all__ = ["MoELinear", "upcycle", "moe_settings", "register_moe_type", "hf_model_of", "check_upcyclable"]
MOE_TYPE_PREFIX = "clpft-moe-"


def register_auto_classes(base_model_class: type) -> tuple[type, type]:
    """Teach transformers' Auto classes the MoE type of ``base_model_class``, so clpft loads such MoE folders
    without ``trust_remote_code`` (the code is ours, not the folder's). Returns (config class, model class)."""
    config_class, model_class = moe_classes(base_model_class)
    try:
        AutoConfig.register(config_class.model_type, config_class)
        AutoModel.register(config_class, model_class)
    except ValueError:
        pass  # already registered
    # save_pretrained copies modeling_clpft_moe.py into the folder and writes auto_map for classes marked
    # like this, also for a model that was loaded rather than upcycled here.
    config_class.register_for_auto_class("AutoConfig")
    model_class.register_for_auto_class("AutoModel")
    return config_class, model_class


def register_moe_type(model_type: str) -> bool:
    """Register the MoE type a saved folder's config.json names (``clpft-moe-mpnet``: MPNet's); False for
    any other type, or a base type transformers does not know."""
    if not model_type.startswith(MOE_TYPE_PREFIX):
        return False
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    base_type = model_type.removeprefix(MOE_TYPE_PREFIX)
    if base_type not in CONFIG_MAPPING:
        return False
    base_config_class = CONFIG_MAPPING[base_type]
    try:
        base_model_class = MODEL_MAPPING[base_config_class]
    except KeyError:
        return False
    register_auto_classes(base_model_class)
    return True


def check_upcyclable(model: nn.Module, where: str = "intermediate") -> None:
    """Raise ValueError, naming what is missing, when ``upcycle`` cannot find the FFN projections (before
    anything is changed or encoded)."""
    hf_model = hf_model_of(model)
    _, layers = transformer_layers(hf_model)
    for layer in layers:
        ffn_projections(layer, where)


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

    Works in place on a SentenceTransformer or a transformers model whose layers hold their FFN as linear
    projections (BERT, RoBERTa, XLM-R and so BGE-M3, MPNet, DistilBERT, ModernBERT, ELECTRA, DeBERTa-v2,
    Qwen3, Gemma3, ...) and returns it. The model's class and config become the matching
    ``*MoEModel``/``*MoEConfig`` (``modeling_clpft_moe.moe_classes``) so that ``save_pretrained`` writes a
    folder that reloads as MoE.

    Example::

        model = clpft.load_model()
        clpft.moe.upcycle(model, where="intermediate", num_experts=2, experts_per_token=1)
    """
    hf_model = hf_model_of(model)
    if getattr(hf_model.config, "clpft_moe", None):
        raise ValueError("model is already upcycled to MoE")
    if where not in MOE_PLACES:
        raise ValueError(f"where must be one of {MOE_PLACES}, got {where!r}")
    layer_list, all_layers = transformer_layers(hf_model)
    chosen = list(range(len(all_layers))) if layers is None else sorted(set(int(i) for i in layers))
    bad = [i for i in chosen if not 0 <= i < len(all_layers)]
    if bad or not chosen:
        raise ValueError(f"layers must be a non-empty subset of 0..{len(all_layers) - 1}, got {chosen}")
    projections = ffn_projections(all_layers[chosen[0]], where)
    for index in chosen:  # every layer of one model has the same projections, but say so if one does not
        if ffn_projections(all_layers[index], where) != projections:
            raise ValueError(f"layer {index} has other FFN projections than layer {chosen[0]}")
    config_class, model_class = register_auto_classes(type(hf_model))

    for index in chosen:
        for path in projections:
            dense = all_layers[index].get_submodule(path)
            _replace(all_layers[index], path, MoELinear.from_dense(dense, num_experts, experts_per_token))

    # Swap class and config in place rather than rebuilding the model: no second copy of the weights
    # in memory (BGE-M3 is 568M parameters), and device, dtype and the SentenceTransformer wrapper stay.
    settings = {
        "where": where,
        "num_experts": num_experts,
        "experts_per_token": experts_per_token,
        "layers": chosen,
        "layer_list": layer_list,
        "projections": projections,
    }
    # The config object is kept (and re-classed) too: it carries runtime state such as the attention
    # implementation, and a fresh config built from its dict silently loses it.
    hf_model.config.__class__ = config_class
    hf_model.config.clpft_moe = settings
    hf_model.config.architectures = [model_class.__name__]
    hf_model.__class__ = model_class
    return model
