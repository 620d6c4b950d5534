"""Mixture-of-experts FFN layers for transformer embedders, upcycled from a dense checkpoint.

This file is self-contained on purpose (it imports only torch and transformers): when clpft saves
an MoE model, transformers copies this file into the model folder and records it in the config's
``auto_map``. That lets ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` and
``SentenceTransformer(folder, trust_remote_code=True)`` load the model on a machine without clpft,
the convention MoE embedders such as Nomic Embed v2 follow.

Layout: ``MoELinear`` is the layer; ``transformer_layers`` and ``ffn_projections`` find a model's FFN
projections from its structure (any encoder or decoder whose layers hold ``nn.Linear`` projections);
``apply_moe_structure`` swaps the recorded projections for empty ``MoELinear`` layers of the same shape (used
when loading a saved MoE model); ``moe_classes`` makes the MoE config and model class of any transformers
model class, which the module's ``__getattr__`` also hands to a folder's ``auto_map``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _SlotsToTokens(torch.autograd.Function):
    """Write each expert's output rows to their tokens' places: ``out[index_e] = y_e`` (or ``+=`` when a
    token has several experts). Backward is the gather ``grad_out[index_e]``. Written as a Function
    because ``index_copy`` into a buffer makes autograd also clone the whole output's gradient for the
    buffer, which nothing needs (one full activation copy per expert per layer)."""

    @staticmethod
    def forward(ctx, like, width, accumulate, indices, *outputs):
        # ``like``: the layer's input; the output takes its dtype and device, as the dense layer's would.
        make = like.new_zeros if accumulate else like.new_empty
        out = make(like.shape[0], width)
        dtype = out.dtype
        for index, y in zip(indices, outputs):
            if accumulate:
                out.index_add_(0, index, y.to(dtype))
            else:
                out.index_copy_(0, index, y.to(dtype))
        ctx.indices = indices
        ctx.output_dtypes = [y.dtype for y in outputs]
        return out

    @staticmethod
    def backward(ctx, grad_out):
        grads = [grad_out.index_select(0, index).to(dt) for index, dt in zip(ctx.indices, ctx.output_dtypes)]
        return (None, None, None, None, *grads)


class MoELinear(nn.Module):
    """A linear layer split into ``num_experts`` experts with a learned top-k token router.

    For each token x the router scores the experts, ``logits = W_r x``; the top ``experts_per_token``
    experts are kept and their outputs are mixed with a softmax over the kept logits:
    ``y = sum_{e in topk} softmax(logits_topk)_e * (W_e x + b_e)``.

    With one expert per token the softmax over a single logit is the constant 1, so the router would
    never receive a gradient. We multiply by ``p_e / stop_grad(p_e)`` (``p`` = softmax over all logits):
    the value stays exactly 1, so an upcycled model still equals its dense parent, while the router
    learns which expert lowers the loss (a straight-through estimator).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_experts: int = 2,
        experts_per_token: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if not 1 <= experts_per_token <= num_experts:
            raise ValueError(f"experts_per_token must be in 1..{num_experts}, got {experts_per_token}")
        self.in_features = in_features
        self.out_features = out_features
        self.num_experts = num_experts
        self.experts_per_token = experts_per_token
        self.weight = nn.Parameter(torch.empty(num_experts, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(num_experts, out_features)) if bias else None
        self.router = nn.Linear(in_features, num_experts, bias=False)

    @classmethod
    def from_dense(cls, dense: nn.Linear, num_experts: int = 2, experts_per_token: int = 1) -> MoELinear:
        """Upcycle: every expert starts as a copy of ``dense``; the router starts small and random."""
        moe = cls(dense.in_features, dense.out_features, num_experts, experts_per_token, bias=dense.bias is not None)
        moe = moe.to(device=dense.weight.device, dtype=dense.weight.dtype)
        with torch.no_grad():
            moe.weight.copy_(dense.weight.unsqueeze(0).expand_as(moe.weight))
            if dense.bias is not None:
                moe.bias.copy_(dense.bias.unsqueeze(0).expand_as(moe.bias))
            nn.init.normal_(moe.router.weight, std=0.02)
        moe.weight.requires_grad_(dense.weight.requires_grad)
        if moe.bias is not None:
            moe.bias.requires_grad_(dense.weight.requires_grad)
        return moe

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (expert index, gate) per token and slot, each of shape (tokens, experts_per_token)."""
        logits = self.router(x)
        top_logits, top_experts = logits.topk(self.experts_per_token, dim=-1)
        gates = top_logits.softmax(dim=-1)
        if self.experts_per_token == 1:
            chosen = logits.softmax(dim=-1).gather(-1, top_experts)
            gates = gates * (chosen / chosen.detach())
        return top_experts, gates

    # "grouped": tokens sorted by expert, one matmul per expert on its own tokens (the FLOPs of one dense
    # layer). "masked": every expert on every token, unchosen outputs weighted 0 (num_experts x the FLOPs,
    # but no gather/scatter: can win on accelerators for 2 experts). Same outputs either way.
    dispatch: str = "grouped"

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        shape = hidden.shape
        x = hidden.reshape(-1, self.in_features)
        experts, gates = self.route(x)
        if self.dispatch == "masked":
            weights = torch.zeros(x.shape[0], self.num_experts, dtype=gates.dtype, device=x.device)
            weights = weights.scatter_add(1, experts, gates)  # (tokens, experts): the gate, or 0
            all_out = torch.einsum("ti,eoi->teo", x, self.weight)
            if self.bias is not None:
                all_out = all_out + self.bias
            out = (all_out * weights.unsqueeze(-1).to(all_out.dtype)).sum(1)
            return out.reshape(*shape[:-1], self.out_features)

        # Group token slots by expert with one sort, then run one matmul per expert on its rows.
        # The loop is over experts (2-8), never over tokens. The gate scales each expert's *input* rows
        # (g * (W x + b) = W (g x) + g b): in_features wide instead of out_features (4x less for the
        # intermediate layer).
        flat_experts = experts.reshape(-1)
        order = flat_experts.argsort(stable=True)
        token_of_slot = torch.arange(x.shape[0], device=x.device).repeat_interleave(self.experts_per_token)[order]
        counts = torch.bincount(flat_experts, minlength=self.num_experts).tolist()
        slot_gates = gates.reshape(-1, 1)[order].to(x.dtype)
        rows = x.index_select(0, token_of_slot)
        # With one expert per token every gate is exactly 1 (a softmax over one logit, times p / p), so
        # where no gradient is wanted the two multiplications by it are skipped: same bits, two fewer
        # passes over the activations (evaluation and encoding).
        gates_are_one = self.experts_per_token == 1 and not torch.is_grad_enabled()
        if not gates_are_one:
            rows = rows * slot_gates
        outputs, indices = [], []
        start = 0
        for expert, count in enumerate(counts):
            if count:
                part = slice(start, start + count)
                y = F.linear(rows[part], self.weight[expert])
                if self.bias is not None:
                    y = y + (self.bias[expert] if gates_are_one else slot_gates[part] * self.bias[expert])
                outputs.append(y)
                indices.append(token_of_slot[part])
            start += count
        out = _SlotsToTokens.apply(x.detach(), self.out_features, self.experts_per_token > 1, indices, *outputs)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"num_experts={self.num_experts}, experts_per_token={self.experts_per_token}"
        )


# What "intermediate" and "output" mean in any transformer layer: the FFN's input projections (hidden -> the
# FFN's width: BERT's ``intermediate.dense``, DistilBERT's ``ffn.lin1``, ModernBERT's fused ``mlp.Wi``, Qwen3's
# and Gemma3's ``mlp.gate_proj`` and ``mlp.up_proj``) and its output projection (width -> hidden: BERT's
# ``output.dense``, ``ffn.lin2``, ``mlp.Wo``, ``mlp.down_proj``).
MOE_PLACES = ("intermediate", "output")
# Before the projections' paths were recorded in the config, MoE models were BERT-style: these paths.
LEGACY_LAYERS, LEGACY_PROJECTION = "encoder.layer", "{where}.dense"


def transformer_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(path, list) of the model's transformer layers, found by structure: the longest ``nn.ModuleList`` whose
    items are all of one class (``encoder.layer`` in BERT, ``transformer.layer`` in DistilBERT, ``layers`` in
    ModernBERT, Qwen3 and Gemma3)."""
    lists = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(item) for item in module}) == 1
    ]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no list of transformer layers")
    return max(lists, key=lambda item: (len(item[1]), -item[0].count(".")))


def _common_depth(a: str, b: str) -> int:
    depth = 0
    for x, y in zip(a.split("."), b.split(".")):
        if x != y:
            break
        depth += 1
    return depth


def ffn_projections(layer: nn.Module, where: str) -> list[str]:
    """The paths, inside one transformer layer, of its FFN projections at ``where``, found by their shapes.

    The FFN's output projection is the layer's linear map with the widest input (the FFN's width is wider
    than the attention's), and it maps back to the hidden size. Its input projections map the hidden size to
    that width (or twice it: a fused gate and input, as ModernBERT's ``Wi``); of those, the ones nearest the
    output projection in the module tree (an attention projection of the same shape lives elsewhere).

    For a gated FFN, ``act(gate(x)) * up(x)``, "intermediate" upcycles both input projections, each with its
    own router (a fused one is one layer, so one router for both halves). Every expert starts as a copy, so
    the model computes what it computed; a router per projection keeps the layer a drop-in for the dense one
    without changing the model's forward code, at the price that a token's gate and value experts are chosen
    separately."""
    if where not in MOE_PLACES:
        raise ValueError(f"where must be one of {MOE_PLACES}, got {where!r}")
    linears = {name: m for name, m in layer.named_modules() if isinstance(m, (nn.Linear, MoELinear))}
    if not linears:
        raise ValueError(f"{type(layer).__name__} has no linear layers to upcycle")
    widest = max(m.in_features for m in linears.values())
    outputs = [name for name, m in linears.items() if m.in_features == widest]
    if len(outputs) != 1:
        raise ValueError(f"{type(layer).__name__}: cannot tell its FFN output projection among {outputs}")
    output = outputs[0]
    hidden = linears[output].out_features
    if where == "output":
        return [output]
    inputs = [
        name
        for name, m in linears.items()
        if name != output and m.in_features == hidden and m.out_features in (widest, 2 * widest)
    ]
    if not inputs:
        raise ValueError(f"{type(layer).__name__}: no FFN input projection ({hidden} -> {widest}) found")
    nearest = max(_common_depth(name, output) for name in inputs)
    return [name for name in inputs if _common_depth(name, output) == nearest]


def _replace(layer: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, attribute = path.rpartition(".")
    setattr(layer.get_submodule(parent_path) if parent_path else layer, attribute, module)


def moe_paths(model: nn.Module, moe: dict[str, Any]) -> tuple[nn.ModuleList, list[str]]:
    """The layer list and the projections' paths that ``moe`` (a config's ``clpft_moe`` entry) names."""
    layers = model.get_submodule(moe.get("layer_list", LEGACY_LAYERS))
    projections = moe.get("projections") or [LEGACY_PROJECTION.format(where=moe["where"])]
    return layers, projections


def apply_moe_structure(model: nn.Module, moe: dict[str, Any]) -> None:
    """Replace the dense layers that ``moe`` names with empty MoELinear layers, so that a state dict saved
    from an upcycled model loads into ``model``."""
    layers, projections = moe_paths(model, moe)
    for index in moe["layers"]:
        for path in projections:
            dense = layers[index].get_submodule(path)
            if isinstance(dense, MoELinear):
                continue
            replacement = MoELinear(
                dense.in_features,
                dense.out_features,
                moe["num_experts"],
                moe["experts_per_token"],
                bias=dense.bias is not None,
            )
            _replace(layers[index], path, replacement)


class _MoEModelMixin:
    """Adds the MoE layers named by ``config.clpft_moe`` right after the base model is built."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        apply_moe_structure(self, config.clpft_moe)
        # Weights are loaded (or copied by upcycling) afterwards; init the new routers like the rest.
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, MoELinear):
            # Only reached for weights missing from a checkpoint: start experts like a dense layer.
            std = getattr(self.config, "initializer_range", 0.02)
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            return
        super()._init_weights(module)


def moe_classes(base_model_class: type) -> tuple[type, type]:
    """(config class, model class) of the MoE version of a transformers model class: ``MPNetModel`` gives
    ``MPNetMoEConfig`` (model type ``clpft-moe-mpnet``) and ``MPNetMoEModel``. Made once per class, on first
    use, and kept as attributes of this module, where a saved folder's ``auto_map`` finds them."""
    prefix = base_model_class.__name__.removesuffix("Model")
    config_name, model_name = f"{prefix}MoEConfig", f"{prefix}MoEModel"
    if model_name not in globals():
        base_config_class = base_model_class.config_class
        config_class = type(
            config_name,
            (base_config_class,),
            {"model_type": f"clpft-moe-{base_config_class.model_type}", "__module__": __name__},
        )
        model_class = type(
            model_name, (_MoEModelMixin, base_model_class), {"config_class": config_class, "__module__": __name__}
        )
        globals()[config_name], globals()[model_name] = config_class, model_class
    return globals()[config_name], globals()[model_name]


def __getattr__(name: str) -> type:
    """``modeling_clpft_moe.MPNetMoEModel`` (a saved folder's ``auto_map``) on a machine without clpft: the MoE
    class of the transformers class the name is made from (module ``__getattr__``, PEP 562)."""
    for suffix in ("MoEModel", "MoEConfig"):
        if name.endswith(suffix) and not name.startswith("_"):
            import transformers

            base = getattr(transformers, name.removesuffix(suffix) + "Model", None)
            if isinstance(base, type):
                config_class, model_class = moe_classes(base)
                return model_class if suffix == "MoEModel" else config_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
