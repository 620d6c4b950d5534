"""Mixture-of-experts FFN layers for BERT-family encoders, upcycled from a dense checkpoint.

This file is self-contained on purpose (it imports only torch and transformers): when clpft saves
an MoE model, transformers copies this file into the model folder and records it in the config's
``auto_map``. That lets ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` and
``SentenceTransformer(folder, trust_remote_code=True)`` load the model on a machine without clpft,
the convention MoE embedders such as Nomic Embed v2 follow.

Layout: ``MoELinear`` is the layer; ``apply_moe_structure`` swaps a model's dense FFN layers for
empty ``MoELinear`` layers of the same shape (used when loading a saved MoE model); the config and
model classes at the bottom add that step to BERT, RoBERTa and XLM-RoBERTa.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel, XLMRobertaConfig, XLMRobertaModel


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


# Where the FFN dense layers live in a BERT-style layer: ``layer.intermediate.dense`` (hidden -> 4h,
# before the activation) and ``layer.output.dense`` (4h -> hidden).
MOE_PLACES = ("intermediate", "output")


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT-style encoder (BERT, RoBERTa, XLM-R, ELECTRA, ...)."""
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"{type(model).__name__} has no encoder.layer list; MoE upcycling supports BERT-style encoders "
            "(BERT, RoBERTa, XLM-RoBERTa)"
        )
    return layers


def dense_of(layer: nn.Module, where: str) -> tuple[nn.Module, str]:
    """(parent module, attribute name) of the dense FFN layer at ``where`` in one transformer layer."""
    if where not in MOE_PLACES:
        raise ValueError(f"where must be one of {MOE_PLACES}, got {where!r}")
    parent = getattr(layer, where, None)
    if parent is None or not hasattr(parent, "dense"):
        raise ValueError(f"{type(layer).__name__} has no {where}.dense layer")
    return parent, "dense"


def apply_moe_structure(model: nn.Module, moe: dict[str, Any]) -> None:
    """Replace the dense layers that ``moe`` (a config's ``clpft_moe`` entry) names with empty MoELinear
    layers, so that a state dict saved from an upcycled model loads into ``model``."""
    layers = encoder_layers(model)
    for index in moe["layers"]:
        parent, name = dense_of(layers[index], moe["where"])
        dense = getattr(parent, name)
        if isinstance(dense, MoELinear):
            continue
        setattr(
            parent,
            name,
            MoELinear(
                dense.in_features,
                dense.out_features,
                moe["num_experts"],
                moe["experts_per_token"],
                bias=dense.bias is not None,
            ),
        )


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


class BertMoEConfig(BertConfig):
    model_type = "clpft-moe-bert"


class RobertaMoEConfig(RobertaConfig):
    model_type = "clpft-moe-roberta"


class XLMRobertaMoEConfig(XLMRobertaConfig):
    model_type = "clpft-moe-xlm-roberta"


class BertMoEModel(_MoEModelMixin, BertModel):
    config_class = BertMoEConfig


class RobertaMoEModel(_MoEModelMixin, RobertaModel):
    config_class = RobertaMoEConfig


class XLMRobertaMoEModel(_MoEModelMixin, XLMRobertaModel):
    config_class = XLMRobertaMoEConfig


# Dense base model class -> (MoE config class, MoE model class).
MOE_CLASSES = {
    BertModel: (BertMoEConfig, BertMoEModel),
    RobertaModel: (RobertaMoEConfig, RobertaMoEModel),
    XLMRobertaModel: (XLMRobertaMoEConfig, XLMRobertaMoEModel),
}
